"""The KEMI script Kamailio's app_python3 loads (``modparam("app_python3", "load", ...)``).

Theory of operation
-------------------
Kamailio calls :func:`mod_init` once in its main process; the returned
:class:`kamailio` object is inherited by every forked worker, which builds its
own :class:`~plugin.edge.Edge` (Redis connection, Iq socket) on first use.
Which side a message comes from is the socket it arrived on (``$pr``,
``$Ri:$Rp`` against every ``[edge]`` socket), and which socket a request
leaves on is the other side's socket for its next hop's transport: both
decided by :mod:`plugin.routing`, which also says how REGISTER gets its Path
and how requests from the core find the client's flow.

* ``ksr_request_route``: initial requests from access go to ``[edge]
  core_next_hop`` through the core socket; initial requests from the core go
  to their Request-URI through the access socket; in-dialog requests follow
  their Route set, out of the other socket.  SDP offers/answers are rewritten
  by the edge before Record-Route is added; errors are answered statefully
  (488 + Warning, 503 + Retry-After).  BYE releases the dialog; CANCEL does
  not (a 200 may cross it): its 487 reaches ``ksr_failure_edge``.  Every
  in-dialog request but ACK and BYE refreshes the dialog's record in Redis
  (:meth:`~plugin.edge.Edge.refresh` says why not the ACK, and how often).
* ``ksr_onreply_edge``: rewrites the SDP of 18x/2xx replies (armed for INVITE,
  UPDATE and PRACK only: no other reply is rewritten or noted).  A 2xx (or an
  ACK) whose answer cannot be converted goes on unchanged, with a Warning; the
  call is released at once and ended about a second later (dialog timeout: a
  BYE to each side).
* ``ksr_failure_edge``: a final error to the initial INVITE (a CANCEL's 487
  included) releases the dialog; a 488 to an AVPF offer is first retried as
  RTP/AVP under ``[policy] core_rtp_profile = auto`` (:mod:`plugin.profile`).
* ``ksr_dialog_event``: the dialog module's end of a dialog (its timeout)
  releases what is left.
* ``ksr_rtimer_events``: drains mediad's events; a DTLS failure ends the call
  with a BYE to both sides (dialog module) and releases it.
* ``ksr_xhttp_event``: serves ``GET /metrics`` on ``[plugin] metrics``.
"""

import glob
import os
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _site in sorted(glob.glob(os.path.join(_ROOT, ".venv", "lib", "python3*", "site-packages"))):
    if _site not in sys.path:
        sys.path.insert(0, _site)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# prometheus_client must see its multiprocess directory before it is imported.
_METRICS_DIR = os.environ.get("E2AE_METRICS_DIR") or os.path.join(
    tempfile.gettempdir(), "e2ae-plugin-metrics-%d" % os.getpid())
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR

import json  # noqa: E402
import logging  # noqa: E402

import KSR  # noqa: E402

from iq import Side  # noqa: E402
from mediad.config import load_config  # noqa: E402
from plugin import metrics as metrics_module  # noqa: E402
from plugin.edge import REPLY_SDP_METHODS, Edge, Message, other  # noqa: E402
from plugin import profile, routing  # noqa: E402

EVENTS_CHANNEL = "e2ae:events"
EVENTS_PER_TICK = 100
# A call whose answer could not be converted is ended this long after its ACK (or
# the failure, when there is no ACK to wait for); the dialog module's timer ticks
# once a second, so the BYEs leave up to that long after it.
END_AFTER_S = 1
# On a dialog being ended after a failed answer: "ack" when its ACK is to set the
# timeout (an INVITE's 2xx failed), "set" once it is set.
END_AT_ACK = "$dlg_var(e2ae_end)"
# Replies whose dialog the dialog module has not confirmed yet (a PRACK's comes before
# its INVITE's 2xx): their call is ended from the INVITE's ACK.
DEFERRED_TO_ACK = frozenset({"INVITE", "PRACK"})
# Requests from access whose Contact names the client (a dialog's remote target):
# it gets the client's flow as an alias (plugin.routing).
CONTACT_ALIAS_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Offers from access whose RTP profile [policy] core_rtp_profile sets (plugin.profile).
AVP_OFFER_METHODS = frozenset({"INVITE", "UPDATE"})
# Set once the INVITE transaction's offer went again as RTP/AVP after a 488.
AVP_RETRIED = "$avp(e2ae_avp_retried)"


class _KsrHandler(logging.Handler):
    """Python logging into Kamailio's log."""

    def emit(self, record):
        try:
            text = "e2ae: " + self.format(record).replace("\n", " | ") + "\n"
            if record.levelno >= logging.ERROR:
                KSR.err(text)
            elif record.levelno >= logging.WARNING:
                KSR.warn(text)
            elif record.levelno >= logging.INFO:
                KSR.info(text)
            else:
                KSR.dbg(text)
        except Exception:
            pass


def _pv(name, default=""):
    value = KSR.pv.get(name)
    return default if value is None else value


class kamailio:
    def __init__(self):
        self.config = load_config()
        self.routes = routing.SocketMap.from_config(self.config)
        self.next_hop = routing.core_next_hop(self.config, self.routes)
        self.core_profile = profile.CoreRtpProfile(self.config.policy_core_rtp_profile)
        self.metrics_dir = _METRICS_DIR
        self._edge = None
        self._pubsub = None
        # The Call-ID whose dialog the dialog module's "dialog:end" released while the
        # current BYE was loose-routed (its event runs inside loose_route()).
        self._released_by_dialog = None

    # -- lifecycle ------------------------------------------------------------------
    def child_init(self, rank):
        return 0

    @property
    def edge(self):
        if self._edge is None:
            self._edge = Edge.from_config(self.config, metrics_module.Metrics(None))
        return self._edge

    # -- helpers --------------------------------------------------------------------
    def _side(self):
        return self.routes.side_of(_pv("$pr"), _pv("$Ri"), _pv("$Rp", 0))

    def _toward(self, side, flow_transport=None):
        """Where the current request leaves toward ``side`` (plugin.routing.toward)."""
        du = _pv("$du")
        if side is Side.ACCESS:
            alias = routing.alias_transport(_pv("$ru"))
            if alias is not None and KSR.nathelper.handle_ruri_alias() > 0:
                du, flow_transport = _pv("$du"), alias  # toward a client in a dialog: its flow
        decision = routing.toward(self.routes, side, _pv("$nh(P)"), du or _pv("$ru"), flow=bool(du),
                                  flow_transport=flow_transport)
        if decision.action is routing.Action.RELAY:
            if decision.no_connect:
                KSR.set_forward_no_connect()
            if decision.socket is not None:
                KSR.corex.set_send_socket(decision.socket)
        return decision

    def _refuse(self, status, reason, warning, stateful=True):
        KSR.hdr.append_to_reply('Warning: 399 %s "%s"\r\n' % (self.edge.agent, warning))
        if stateful:
            KSR.tm.t_reply(status, reason)
        else:
            KSR.sl.sl_send_reply(status, reason)

    def _message(self, side, request, body):
        cseq = _pv("$cs", 0)
        return Message(
            request=request,
            method=_pv("$rm"),
            call_id=_pv("$ci"),
            from_tag=_pv("$ft"),
            to_tag=_pv("$tt"),
            cseq=int(cseq or 0),
            side=side,
            body=body,
            content_type=_pv("$cT"),
            status=0 if request else int(_pv("$rs", 0) or 0),
        )

    def _reply_error(self, outcome):
        if outcome.warning:
            KSR.hdr.append_to_reply("Warning: %s\r\n" % outcome.warning)
        if outcome.retry_after:
            KSR.hdr.append_to_reply("Retry-After: %d\r\n" % outcome.retry_after)
        KSR.tm.t_reply(outcome.status, outcome.reason)

    def _apply(self, side, request=True):
        """Rewrite the body of the current message; False when an error was answered."""
        body = _pv("$rb")
        if not body and not Edge.needs_bodyless(
                request, _pv("$rm"), _pv("$tt"), 0 if request else int(_pv("$rs", 0) or 0)):
            return True  # nothing to rewrite nor to note (an ACK, an 18x without SDP)
        msg = self._message(side, request, body)
        outcome = self.edge.handle(msg)
        if outcome.failed:
            if request and msg.method != "ACK":
                self._reply_error(outcome)
                return False
            # A reply or an ACK cannot be refused: it goes on unchanged, and the error is logged.
            KSR.err("e2ae: Call-ID %s: %s from %s forwarded unchanged: %s\n"
                    % (msg.call_id, msg.method if request else msg.status, side.value, outcome.warning))
            if msg.method == "ACK" or 200 <= msg.status < 300:
                self._end_call(msg, outcome)
            return True
        if outcome.body is not None and request and side is Side.ACCESS and msg.method in AVP_OFFER_METHODS:
            outcome.body = profile.offer_now(self.core_profile, outcome.body) or outcome.body
        if outcome.body is not None and outcome.body != msg.body:
            KSR.textops.set_body(outcome.body, outcome.content_type)
        return True

    def _end_call(self, msg, outcome):
        """A final answer that could not be converted: the call has no media.  Its media
        and record are released now (counted as ``answer_failed``: not left to the
        dialog's end event), and the dialog module's timeout ends it with a BYE to each
        side; a 2xx carries the Warning saying why.  A proxy cannot refuse a 2xx: the
        caller must still ACK it, and an INVITE's dialog is ended from that ACK (the
        dialog module sends no BYE on a dialog its 2xx has not confirmed yet), as is
        one whose PRACK's 2xx failed."""
        if not _pv(END_AT_ACK):  # else being ended already: a retransmission
            self.edge.answer_failed(msg.call_id, (msg.from_tag, msg.to_tag))
            if not msg.request and msg.method in DEFERRED_TO_ACK:
                KSR.pv.sets(END_AT_ACK, "ack")
            else:
                self._end_dialog(msg.call_id)
        if not msg.request and outcome.warning:
            KSR.hdr.append("Warning: %s\r\n" % outcome.warning)

    def _end_dialog(self, call_id):
        # Once only: the dialog module must not see its timer set again while it ends
        # the dialog (a retransmitted 2xx and its ACK).
        KSR.pv.sets(END_AT_ACK, "set")
        if KSR.dialog.dlg_set_timeout(END_AFTER_S) < 0:
            KSR.err("e2ae: Call-ID %s: no dialog to end after a failed answer\n" % call_id)

    def _relay(self, side, method, flow_transport=None):
        decision = self._toward(other(side), flow_transport)
        if decision.action is routing.Action.REPLY:
            self._refuse(decision.status, decision.reason, decision.warning)
            return False
        if method in REPLY_SDP_METHODS:  # no other reply is rewritten or noted (a BYE's 200)
            KSR.tm.t_on_reply("ksr_onreply_edge")
        if KSR.tm.t_relay() < 0:
            status, reason, warning = routing.relay_failed(other(side), decision)
            self._refuse(status, reason, warning)
            return False
        return True

    def _register(self, side):
        """REGISTER from access: to the core next hop with a Path naming the client's flow
        (RFC 3327, RFC 5626; plugin.routing).  The edge keeps no binding of its own."""
        if side is not Side.ACCESS:
            KSR.sl.sl_send_reply(403, "Forbidden")
            return 1
        if KSR.tm.t_newtran() <= 0:
            return 1
        KSR.path.add_path_received_user(routing.path_user(_pv("$pr")))
        KSR.setdsturi(self.next_hop)
        self._relay(side, "REGISTER")
        return 1

    # -- routes ---------------------------------------------------------------------
    def ksr_request_route(self, msg):
        self._released_by_dialog = None
        side = self._side()
        if side is None:
            KSR.sl.sl_send_reply(403, "Forbidden")
            return 1
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        method = _pv("$rm")
        if side is Side.ACCESS:
            KSR.force_rport()  # RFC 3581: replies go to the client's source, not its Via
            if method in CONTACT_ALIAS_METHODS:
                KSR.nathelper.add_contact_alias()  # in-dialog requests follow its flow
        if method == "REGISTER":
            return self._register(side)
        if method == "CANCEL":
            # No release here: a 200 may cross the CANCEL and the call go on.  The
            # INVITE's 487 (or any final error) runs ksr_failure_edge, which releases.
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        if KSR.siputils.has_totag() > 0:
            return self._in_dialog(side, method)
        if method == "ACK":
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        if KSR.tm.t_newtran() <= 0:
            return 1  # a retransmission, absorbed
        if not self._apply(side):
            return 1
        KSR.rr.record_route()
        if method == "INVITE":
            KSR.dialog.dlg_manage()
            KSR.tm.t_on_failure("ksr_failure_edge")
        flow_transport = None
        if side is Side.ACCESS:
            KSR.setdsturi(self.next_hop)
        else:
            # Through the Path of a registered client: its flow becomes $du, and our
            # Path URI's user names the flow's transport.
            flow_transport = routing.path_transport(_pv("$hdr(Route)"))
            KSR.rr.loose_route()
        if not self._relay(side, method, flow_transport) and method == "INVITE":
            self.edge.release(_pv("$ci"), (_pv("$ft"),), "failure")
        return 1

    def _in_dialog(self, side, method):
        routed = KSR.rr.loose_route() > 0
        if method == "ACK":
            if not routed and KSR.tm.t_check_trans() <= 0:
                return 1
            self._apply(side)
            if routed and _pv(END_AT_ACK) == "ack":  # the ACK of a 2xx whose answer failed
                self._end_dialog(_pv("$ci"))
            if self._toward(other(side)).action is routing.Action.RELAY:
                KSR.tm.t_relay()
            return 1  # no refresh: Edge.refresh says why an ACK needs none
        if not routed:
            KSR.sl.sl_send_reply(404, "Not Here")
            return 1
        if KSR.tm.t_newtran() <= 0:
            return 1
        if method == "BYE":
            call_id = _pv("$ci")
            if self._released_by_dialog != call_id:  # else a second claim would find nothing
                self.edge.release(call_id, (_pv("$ft"), _pv("$tt")), "bye")
        elif not self._apply(side):
            return 1
        self._relay(side, method)
        if method != "BYE":
            # The dialog module reset its timeout for this request: so does the record.
            self.edge.refresh(_pv("$ci"), (_pv("$ft"), _pv("$tt")), method)
        return 1

    def ksr_onreply_edge(self, msg):
        side = self._side()
        status = int(_pv("$rs", 0) or 0)
        if side is None or status >= 300 or status < 101:
            return 1
        if side is Side.ACCESS and status > 100:
            KSR.nathelper.add_contact_alias()  # the client's Contact: its flow (plugin.routing)
        self._apply(side, request=False)
        return 1

    def ksr_failure_edge(self, msg):
        if self._retry_as_avp():
            return 1
        self.edge.release(_pv("$ci"), (_pv("$ft"),), "failure")
        return 1

    def _retry_as_avp(self):
        """``core_rtp_profile = auto``: a 488 from the core to our AVPF offer gets the same
        offer as RTP/AVP in a new branch of this INVITE transaction, once (plugin.profile)."""
        retried = _pv(AVP_RETRIED) == "1"
        if not profile.retry_as_avp(self.core_profile, int(_pv("$T_reply_code", 0) or 0), retried):
            return False
        if self._side() is not Side.ACCESS or _pv("$rm") != "INVITE":
            return False
        outcome = self.edge.handle(self._message(Side.ACCESS, True, _pv("$rb")))  # the AVPF offer, cached
        try:
            body = profile.as_avp(outcome.body) if outcome.body is not None and not outcome.failed else None
        except ValueError:  # a multipart body: not retried
            body = None
        if body is None:
            return False
        KSR.pv.sets(AVP_RETRIED, "1")
        KSR.info("e2ae: Call-ID %s: the core refused RTP/AVPF (488): offering RTP/AVP\n" % _pv("$ci"))
        KSR.textops.set_body(body, outcome.content_type)
        KSR.pv.sets("$ru", _pv("$ru"))  # a new branch to the same Request-URI
        KSR.setdsturi(self.next_hop)
        KSR.tm.t_on_failure("ksr_failure_edge")
        return self._relay(Side.ACCESS, "INVITE")

    # -- events -------------------------------------------------------------------
    def ksr_dialog_event(self, *args):
        evname = args[-1] if args and isinstance(args[-1], str) else None
        if evname in ("dialog:end", "dialog:failed"):
            call_id = _pv("$dlg(callid)")
            tags = (_pv("$dlg(from_tag)"), _pv("$dlg(to_tag)"))
            if call_id:
                if evname == "dialog:failed":
                    reason = "failure"
                else:  # a BYE ends the dialog while its request is routed; else a timeout
                    reason = "bye" if _pv("$rm") == "BYE" else "timeout"
                if self.edge.release(call_id, tags, reason) and reason == "bye":
                    self._released_by_dialog = call_id
        return 1

    def ksr_rtimer_events(self, *args):
        try:
            pubsub = self._subscription()
            for _ in range(EVENTS_PER_TICK):
                item = pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
                if item is None:
                    break
                try:
                    event = json.loads(item["data"])
                except (ValueError, TypeError):
                    continue
                self._on_event(event)
        except Exception as exc:  # Redis down: try again on the next tick
            KSR.warn("e2ae: events: %s\n" % exc.__class__.__name__)
            self._pubsub = None
        return 1

    def _subscription(self):
        if self._pubsub is None:
            pubsub = self.edge.store.redis.pubsub()
            pubsub.subscribe(EVENTS_CHANNEL)
            self._pubsub = pubsub
        return self._pubsub

    def _on_event(self, event):
        record = self.edge.on_event(event)
        if record is None:
            return
        # BYE first (the dialog module needs the callee's tag: the last 2xx's), then release.
        if record.callee_tag and KSR.dialog.dlg_get(record.call_id, record.caller_tag, record.callee_tag) > 0:
            KSR.dialog.dlg_bye("all")
        else:
            KSR.warn("e2ae: Call-ID %s: no confirmed dialog to end with BYE\n" % record.call_id)
        try:
            self.edge.release_record(record, "dtls_failed")
        except Exception as exc:
            KSR.warn("e2ae: Call-ID %s: release after DTLS failure: %s\n" % (record.call_id, exc))

    def ksr_xhttp_event(self, *args):
        if self.routes.has_websocket() and "websocket" in _pv("$hdr(Upgrade)").lower():
            KSR.websocket.handle_handshake()  # SIP over WebSocket (RFC 7118)
            return 1
        if _pv("$hu").split("?", 1)[0] != "/metrics":
            KSR.xhttp.xhttp_reply(404, "Not Found", "text/plain", "not found\n")
            return 1
        body = metrics_module.exposition(self.metrics_dir).decode("utf-8")
        KSR.xhttp.xhttp_reply(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body)
        return 1


def mod_init():
    handler = _KsrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger("e2ae")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    metrics_module.reset_directory(_METRICS_DIR)
    return kamailio()
