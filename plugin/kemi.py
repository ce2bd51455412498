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
and how requests from the core find the client's flow.  A request over 1300
bytes toward a UDP peer goes over TCP when the core has a TCP socket (RFC
3261 18.1.1; ``deploy/kamailio.cfg``).

* ``ksr_request_route``: every request first passes Kamailio's ``sanity``
  checks (RFC 3261 16.3, 18.3: a Content-Length that does not match the body,
  missing headers, ...): 400 with a Warning naming the check.  A request from
  access gets ``rport`` (RFC 3581) and, when it names the client's Contact, an
  ``alias`` with its flow.  REGISTER from access goes to ``[edge]
  core_next_hop`` with a Path naming the client's flow (RFC 3327, RFC 5626).
  Initial requests from access go to ``[edge] core_next_hop`` through a core
  socket; initial requests from the core go through the Path of a registered
  client to its flow (else to their Request-URI) through an access socket;
  in-dialog requests follow their Route set, out of the other side.  SDP
  offers/answers are rewritten by the edge before Record-Route is added; the
  body is read as bytes when it is not UTF-8 (:mod:`plugin.limits` refuses
  it); errors are answered statefully (4xx + Warning, 503 + Retry-After).  A
  message the edge rewrote that cannot go on (its new body cannot be set, the
  relay fails, or it has no way out: 430 for a client's flow that is gone, 480
  for a ``*.invalid`` client with no flow, 503 otherwise, each with a Warning)
  is undone: the dialog is released (``refused``).  BYE releases
  the dialog; CANCEL does not (a 200 may cross it): its 487 reaches
  ``ksr_failure_edge``.  Every in-dialog request but ACK and BYE refreshes the
  dialog's record in Redis (:meth:`~plugin.edge.Edge.refresh` says why not the
  ACK, and how often).
* ``ksr_onreply_edge``: rewrites the SDP of 18x/2xx replies (armed for INVITE,
  UPDATE and PRACK only: no other reply is rewritten or noted).  A 2xx (or an
  ACK) whose answer cannot be converted goes on unchanged with a Warning; the
  call is released at once and its BYEs queued (:mod:`plugin.lifecycle`).
* ``ksr_reply_route`` (every reply Kamailio receives): holds the reply to a BYE
  back while the BYEs of its dialog are being sent (:mod:`plugin.lifecycle`
  says why); discards an 18x or 2xx whose Content-Length does not frame its
  body (RFC 3261 18.3), which Kamailio would relay without reading its SDP,
  and a 2xx to an INVITE without a To tag (RFC 3261 12.1.1).
* ``ksr_failure_edge``: a final error to the initial INVITE (a CANCEL's 487
  included) releases the dialog; a 488 to an AVPF offer is first retried as
  RTP/AVP under ``[policy] core_rtp_profile = auto`` (:mod:`plugin.profile`),
  which neither releases nor counts an outcome: only the final error does.
* ``ksr_dialog_event``: the dialog module's end of a dialog (its timeout)
  releases what is left; its timeout event marks the BYEs it is about to send.
* ``ksr_rtimer_events`` (one process, every second): drains mediad's events
  (a DTLS failure ends the call), sends the queued BYEs of calls being ended
  (``dlg_get`` + ``dlg_bye("all")``), and retries the queued releases.  Both
  queues live in Kamailio's shared memory (``htable``), so they survive the
  worker that filled them moving on.
* ``ksr_xhttp_event``: WebSocket handshakes of SIP over WebSocket (RFC 7118)
  and ``GET /metrics`` on ``[plugin] metrics``.
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
# The rules compiled with mypyc (deploy/compiled.py) go before the sources when the build is
# fresh; else the sources run and mod_init logs why.
from deploy import compiled as _compiled  # noqa: E402

_NOT_COMPILED = _compiled.use()

# prometheus_client must see its multiprocess directory before it is imported.
_METRICS_DIR = os.environ.get("E2AE_METRICS_DIR") or os.path.join(
    tempfile.gettempdir(), "e2ae-plugin-metrics-%d" % os.getpid())
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR

import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402

import KSR  # noqa: E402

from iq import Side  # noqa: E402
import sdp_rules  # noqa: E402
from sdp_rules.errors import UnavailableError  # noqa: E402

from mediad.config import load_config  # noqa: E402
from mediad.logs import formatter  # noqa: E402
from mediad import redis_keys  # noqa: E402
from mediad.takeover import EVENT_MEDIA_MOVED  # noqa: E402
from plugin import limits, profile, routing, sipreply  # noqa: E402
from plugin import metrics as metrics_module  # noqa: E402
from plugin.body import SDP_TYPE, media_type  # noqa: E402
from plugin.edge import REPLY_SDP_METHODS, SDP_METHODS, Edge, Message, Outcome, other  # noqa: E402
from plugin.lifecycle import (BYE_HOLD_S, BYE_TABLE, OPERATOR_TABLE, CallEvent, CallState, EndRequest,  # noqa: E402
                              EndStep, LifecycleError, PendingRelease, end_step)
from plugin.state import dialog_id  # noqa: E402

EVENTS_CHANNEL = redis_keys.EVENTS_CHANNEL
EVENTS_PER_TICK = 100
# Kamailio htables (deploy/kamailio.cfg): calls to end, releases to retry, Call-IDs whose
# BYEs are being sent, and the retry queue's size as the rtimer process last counted it.
END_TABLE = "e2ae_end"
RELEASE_TABLE = "e2ae_release"
META_TABLE = "e2ae_meta"
# The records of dialogs being set up (plugin.edge.RecordCache), by dialog id.
DIALOG_TABLE = "e2ae_dialog"
RELEASES_PER_TICK = 200
RELEASE_QUEUE_MAX = 10000
# Marks a dialog for the dialog module's "dialog:timeout" event (its name does not matter).
TIMEOUT_ROUTE = "e2ae"
# The sanity module's checks run on every request (sanity README): name for the Warning.
SANITY_CHECKS = {  # in the order a failure is looked for
    128: "the Content-Length does not match the body (RFC 3261 18.3)",
    1: "the Request-URI's SIP version is not 2.0",
    2: "the Request-URI's scheme is not sip, sips, tel or tels",
    4: "a required header (To, From, CSeq, Call-ID, Via) is missing",
    32: "the CSeq method is not the request's",
    64: "the CSeq number is not an unsigned 32-bit integer",
    256: "the Expires value is not an unsigned integer",
    1024: "the Request-URI, From or To URI does not parse",
    4096: "a duplicated From or To tag",
    16384: "the first Via does not parse",
}
SANITY_URIS = 7  # Request-URI, From, To
# Requests from access whose Contact names the client (a dialog's remote target):
# it gets the client's flow as an alias (plugin.routing).
CONTACT_ALIAS_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
# Offers from access whose RTP profile [policy] core_rtp_profile sets (plugin.profile).
AVP_OFFER_METHODS = frozenset({"INVITE", "UPDATE"})
# Set once the INVITE transaction's offer went again as RTP/AVP after a 488.
AVP_RETRIED = "$avp(e2ae_avp_retried)"


class _KsrHandler(logging.Handler):
    """Python logging into Kamailio's log.

    ``[plugin] log_level`` decides which of the plugin's lines are written: the DEBUG
    ones go out at Kamailio's INFO level, so that they need no Kamailio debug=3 (at
    which app_python3 logs the parameters of every KEMI call, SIP bodies included:
    their ice-pwd values with them).
    """

    def emit(self, record):
        try:
            text = "e2ae: " + self.format(record).replace("\n", " | ") + "\n"
            if record.levelno >= logging.ERROR:
                KSR.err(text)
            elif record.levelno >= logging.WARNING:
                KSR.warn(text)
            else:
                KSR.info(text)
        except Exception:
            pass


class _HtableCache:
    """The :class:`~plugin.edge.RecordCache` in Kamailio's shared memory (an htable every worker sees; its
    entries expire by themselves, deploy/kamailio.cfg)."""

    def get(self, ident):
        value = KSR.htable.sht_get(DIALOG_TABLE, ident)
        return value if isinstance(value, str) else None

    def put(self, ident, raw):
        KSR.htable.sht_sets(DIALOG_TABLE, ident, raw)

    def drop(self, ident):
        KSR.htable.sht_rm(DIALOG_TABLE, ident)


def _pv(name, default=""):
    value = KSR.pv.get(name)
    return default if value is None else value


def _cseq_number(value):
    """The number of a CSeq (RFC 3261 20.16: ``1*DIGIT``), None when it is not one."""
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() else None


class kamailio:
    def __init__(self, config=None):
        self.config = config or load_config()
        self.routes = routing.SocketMap.from_config(self.config)
        self.next_hop = routing.core_next_hop(self.config, self.routes)
        self.core_profile = profile.CoreRtpProfile(self.config.policy_core_rtp_profile)
        self.reinvites = self.config.pool_takeover == "reinvite"
        self.metrics_dir = _METRICS_DIR
        self._edge = None
        self._pubsub = None
        self._reinviter = None
        self._aliased = False  # the current request's Contact got nathelper's alias
        # The Call-ID whose dialog the dialog module's "dialog:end" released while the
        # current BYE was loose-routed (its event runs inside loose_route()).
        self._released_by_dialog = None
        # The message whose rewritten body was set (to undo if its relay fails).
        self._applied = None

    # -- lifecycle ------------------------------------------------------------------
    def child_init(self, rank):
        return 0

    @property
    def edge(self):
        if self._edge is None:
            self._edge = Edge.from_config(self.config, metrics_module.Metrics(None), cache=_HtableCache())
        return self._edge

    @property
    def reinviter(self):
        """The edge's own re-INVITEs ([pool] takeover = reinvite; plugin.reinvite_kemi)."""
        if self._reinviter is None:
            from plugin.reinvite_kemi import Reinviter
            self._reinviter = Reinviter(self.edge)
        return self._reinviter

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

    def _message(self, side, request, body):
        cseq = _cseq_number(_pv("$cs", 0)) or 0  # a reply without a number is discarded (ksr_reply_route)
        if self.reinvites and not request:
            cseq = self.reinviter.callee_cseq(_pv("$ci"), cseq)
        return Message(
            request=request,
            method=_pv("$rm"),
            call_id=_pv("$ci"),
            from_tag=_pv("$ft"),
            to_tag=_pv("$tt"),
            cseq=cseq,
            side=side,
            body=body,
            content_type=_pv("$cT"),
            status=0 if request else int(_pv("$rs", 0) or 0),
        )

    def _reply_error(self, outcome, initial=False, stateless=False):
        if initial:  # the final status of an initial INVITE
            self.edge.metrics.call_outcomes.labels(str(outcome.status)).inc()
        for name, value in (("Warning", outcome.warning), ("Retry-After", outcome.retry_after),
                            ("Accept", outcome.accept)):
            if value:
                try:
                    KSR.hdr.append_to_reply("%s: %s\r\n" % (name, value))
                except (ValueError, TypeError):  # a header Kamailio cannot take: the reply still goes
                    KSR.err("e2ae: the %s header could not be added to a %d\n" % (name, outcome.status))
        if stateless:
            KSR.sl.sl_send_reply(outcome.status, outcome.reason)
        else:
            KSR.tm.t_reply(outcome.status, outcome.reason)

    @staticmethod
    def _read_body():
        """The body: ``str`` when it is UTF-8 text, else ``bytes`` (Kamailio's ``$rb`` is
        decoded strictly; the hexadecimal form is read instead), None when it is too
        large to read that way (over limits.HEX_READ_LIMIT, refused anyway)."""
        try:
            return _pv("$rb")
        except UnicodeDecodeError:
            hexa = KSR.pv.get("$(rb{s.encode.hexa})")
            return bytes.fromhex(hexa) if hexa else None

    def _apply(self, side, request=True):
        """Rewrite the body of the current message; False when an error was answered."""
        self._applied = None
        body = self._read_body()
        if body is not None and not body and not Edge.needs_bodyless(
                request, _pv("$rm"), _pv("$tt"), 0 if request else int(_pv("$rs", 0) or 0)):
            return True  # nothing to rewrite nor to note (an ACK, an 18x without SDP)
        if body is None and _pv("$rm") not in SDP_METHODS:
            body = b""  # no offer or answer in it: the edge needs none of it
        if body is None:
            msg = self._message(side, request, b"")
            outcome = self.edge.refuse(msg, limits.BodyError(
                "body of %s bytes, over the edge's limit of %d" % (_pv("$bs", "?"), limits.MAX_BODY_BYTES), 413))
        else:
            msg = self._message(side, request, body)
            outcome = self.edge.handle(msg)
        self._flush()
        if outcome.failed:
            if request and msg.method != "ACK":
                self._reply_error(outcome, initial=msg.method == "INVITE" and not msg.to_tag)
                return False
            # A reply or an ACK cannot be refused: it goes on unchanged, and the error is logged.
            KSR.err("e2ae: Call-ID %s: %s from %s forwarded unchanged: %s\n"
                    % (msg.call_id, msg.method if request else msg.status, side.value, outcome.warning))
            if msg.method == "ACK" or 200 <= msg.status < 300:
                self._end_call(msg, outcome)
            elif not request and outcome.warning:  # a provisional answer: the caller is told why
                KSR.hdr.append("Warning: %s\r\n" % outcome.warning)
            return True
        if (outcome.body is not None and request and side is Side.ACCESS and msg.method in AVP_OFFER_METHODS
                and media_type(outcome.content_type) == SDP_TYPE):  # a multipart offer keeps its profile
            outcome.body = profile.offer_now(self.core_profile, outcome.body) or outcome.body
        if outcome.body is not None and outcome.body != msg.body:
            if not self._set_body(outcome):
                return self._undo(msg, "the rewritten body could not be set")
            self._applied = msg
        return True

    @staticmethod
    def _set_body(outcome):
        try:
            return KSR.textops.set_body(outcome.body, outcome.content_type) > 0
        except (ValueError, TypeError):  # a body Kamailio cannot take (an embedded NUL)
            return False

    def _undo(self, msg, why):
        """The edge applied ``msg`` (mediad, Redis) but it cannot go on: release the dialog
        (a call already up is ended), answer a request 500 and a reply's call as failed."""
        KSR.err("e2ae: Call-ID %s: %s: the dialog is released\n" % (msg.call_id, why))
        self.edge.release(msg.call_id, (msg.from_tag, msg.to_tag), CallEvent.REFUSED)
        self._flush()
        if msg.request and msg.method != "ACK":
            self._reply_error(Outcome(status=500, reason="Server Internal Error", warning=self.edge.warning(why)))
            return False
        self._end_call(msg, Outcome(status=500, warning=self.edge.warning(why)))
        return True

    def _end_call(self, msg, outcome):
        """A final answer that could not be converted: the call has no media.  Its media
        and record are released now (counted as ``answer_failed``) and its BYEs queued
        for the rtimer process, which sends them once the dialog module has confirmed
        the dialog (plugin.lifecycle); a 2xx carries the Warning saying why.  A proxy
        cannot refuse a 2xx: the caller must still ACK it."""
        self.edge.answer_failed(msg.call_id, (msg.from_tag, msg.to_tag))
        self._flush()
        if not msg.request and outcome.warning:
            KSR.hdr.append("Warning: %s\r\n" % outcome.warning)

    def _flush(self):
        """Queue in shared memory what the edge left to do: calls to end, releases to retry."""
        for item in self.edge.take_outbox():
            if isinstance(item, EndRequest):
                KSR.htable.sht_sets(END_TABLE, item.key, item.to_value())
                continue
            queued = KSR.htable.sht_get(META_TABLE, "releases")
            if isinstance(queued, int) and queued >= RELEASE_QUEUE_MAX:
                self.edge.metrics.release_retries.labels("dropped").inc()
                KSR.err("e2ae: Call-ID %s: release queue full: release (%s) dropped\n"
                        % (item.call_id, item.event.value))
                continue
            self.edge.metrics.release_retries.labels("queued").inc()
            KSR.htable.sht_sets(RELEASE_TABLE, item.key, item.to_value())

    def _relay(self, side, method, flow_transport=None):
        """Relay the request toward the other side (plugin.routing); False when it could
        not go and was answered instead."""
        decision = self._toward(other(side), flow_transport)
        if decision.action is routing.Action.REPLY:
            self._not_relayed(method, decision.status, decision.reason, decision.warning)
            return False
        if method in REPLY_SDP_METHODS:  # no other reply is rewritten or noted (a BYE's 200)
            KSR.tm.t_on_reply("ksr_onreply_edge")
        # A failure is answered here, with a Warning, not by tm's own reply.
        KSR.tm.t_set_disable_internal_reply(1)
        if KSR.tm.t_relay() < 0:
            # RFC 3261 16.9: a transport error is answered as a 503 from the next hop;
            # RFC 5626 5.3: a client's flow that is gone, 430.
            self._not_relayed(method, *routing.relay_failed(other(side), decision))
            return False
        return True

    def _not_relayed(self, method, status, reason, why):
        """The request cannot go on: what the edge applied for it is undone (the dialog is
        released, ``refused``) and it is answered ``status`` with a Warning saying ``why``."""
        KSR.err("e2ae: Call-ID %s: %s not relayed: %s\n" % (_pv("$ci"), method, why))
        applied, self._applied = self._applied, None
        if applied is not None:
            self.edge.release(applied.call_id, (applied.from_tag, applied.to_tag), CallEvent.REFUSED)
            self._flush()
        # A 503 says when to try again (RFC 3261 21.5.4), as every 503 of the edge does.
        retry_after = self.edge.retry_after if status == 503 else None
        self._reply_error(Outcome(status=status, reason=reason, retry_after=retry_after,
                                  warning=self.edge.warning(why)),
                          initial=method == "INVITE" and not _pv("$tt"))

    def _register(self, side):
        """REGISTER from access: to the core next hop with a Path naming the client's flow
        (RFC 3327, RFC 5626; plugin.routing).  The edge keeps no binding of its own."""
        if side is not Side.ACCESS:
            self._reply_error(Outcome(status=403, reason="Forbidden", warning=self.edge.warning(
                "a REGISTER is only taken from the access side")), stateless=True)
            return 1
        created = KSR.tm.t_newtran()
        if created == 0:
            return 1
        if created < 0:
            self._bad_request("REGISTER", "the request cannot be parsed")
            return 1
        KSR.path.add_path_received_user(routing.path_user(_pv("$pr")))
        KSR.setdsturi(self.next_hop)
        self._relay(side, "REGISTER")
        return 1

    # -- routes ---------------------------------------------------------------------
    def _sane(self, method):
        """Kamailio's sanity checks; False (the request answered 400, an ACK dropped) when
        one fails."""
        if KSR.sanity.sanity_check(sum(SANITY_CHECKS), SANITY_URIS) > 0:
            return True
        failed = next((why for check, why in SANITY_CHECKS.items()
                       if KSR.sanity.sanity_check(check, SANITY_URIS) < 0), "a sanity check failed")
        self._bad_request(method or "request", failed)
        return False

    def _bad_request(self, method, why):
        """Answer 400 with a Warning saying ``why`` (statelessly; an ACK is only logged)."""
        KSR.warn("e2ae: %s from %s:%s refused: %s\n" % (method, _pv("$si"), _pv("$sp"), why))
        if method == "ACK":
            self.edge.metrics.drops.labels("bad_ack").inc()
            return
        warning = self.edge.warning(why)
        KSR.hdr.append_to_reply("Warning: %s\r\n" % warning)
        if KSR.sl.sl_send_reply(400, "Bad Request") < 0 and not self._send_built_reply(400, "Bad Request", warning):
            self.edge.metrics.drops.labels("unanswerable").inc()
            KSR.err("e2ae: %s from %s:%s cannot be answered: its headers cannot be read\n"
                    % (method, _pv("$si"), _pv("$sp")))
            return
        self.edge.metrics.sip_errors.labels("400").inc()

    @staticmethod
    def _raw_message():
        """The message as received (``$mb``), undecodable bytes replaced."""
        try:
            return _pv("$mb")
        except UnicodeDecodeError:
            return bytes.fromhex(KSR.pv.get("$(mb{s.encode.hexa})") or "").decode("utf-8", "replace")

    @classmethod
    def _send_built_reply(cls, status, reason, warning):
        """Kamailio could not build the reply (a header it cannot parse, e.g. the
        Content-Length): build it from the raw message (plugin.sipreply)."""
        raw = cls._raw_message()
        found = sipreply.needed_headers(raw)
        first = {name: values[0] if values else "" for name, values in found.items()}
        try:
            text = sipreply.response(status, reason, found["via"], first["from"], first["to"], first["call-id"],
                                     sipreply.cseq_of(raw, found), warning)
        except ValueError:
            return False
        host, port = sipreply.destination(found["via"][0], (_pv("$si"), int(_pv("$sp", 0) or 0)))
        try:
            transport = routing.Transport.parse(_pv("$pr") or "udp")
        except ValueError:
            return False
        uri = "sip:%s:%d" % (host, port)
        if transport is not routing.Transport.UDP:  # back over the request's own connection
            uri += ";transport=%s" % transport.value
        return KSR.corex.sendx(uri, "%s:%s:%s" % (transport.listener, _pv("$Ri"), _pv("$Rp")), text) > 0

    def ksr_request_route(self, msg):
        self._released_by_dialog = None
        self._applied = None
        side = self._side()
        if side is None:
            KSR.sl.sl_send_reply(403, "Forbidden")
            return 1
        if side is Side.ACCESS:
            KSR.force_rport()  # RFC 3581: replies go to the client's source, not its Via
        method = _pv("$rm")
        if not self._sane(method):
            return 1
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        self._aliased = False
        if side is Side.ACCESS and method in CONTACT_ALIAS_METHODS:
            # in-dialog requests follow its flow (1: the alias was added)
            self._aliased = KSR.nathelper.add_contact_alias() == 1
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
        if method == "INVITE" and not _pv("$ft"):
            # RFC 3261 8.1.1.3: the From of a request outside a dialog MUST carry a tag;
            # without one (or with ";tag" and no value) the dialog cannot be named.
            self._bad_request(method, "the From header has no tag")
            return 1
        created = KSR.tm.t_newtran()
        if created == 0:
            return 1  # a retransmission, absorbed
        if created < 0:  # a request tm cannot parse: answered, never dropped in silence
            self._bad_request(method, "the request cannot be parsed")
            return 1
        if method == "INVITE":
            self.edge.metrics.call_attempts.labels(side.value).inc()
        if method == "INVITE" and not _pv("$tt") and KSR.htable.sht_get(
                RELEASE_TABLE, dialog_id(_pv("$ci"), _pv("$ft"))) is not None:
            # An earlier attempt of this dialog is still being released in mediad: a
            # reservation now would be undone by that release.
            self._reply_error(Outcome(status=503, reason="Service Unavailable", retry_after=self.edge.retry_after,
                                      warning=self.edge.warning("an earlier attempt of this call is still "
                                                                "being released")), initial=True)
            return 1
        if not self._apply(side):
            return 1
        KSR.rr.record_route()
        if method == "INVITE":
            # The dialog module runs ksr_dialog_event("dialog:timeout") before it ends
            # this dialog on its timeout: the BYEs it sends are marked (plugin.lifecycle).
            KSR.pv.sets("$dlg_ctx(timeout_route)", TIMEOUT_ROUTE)
            KSR.dialog.dlg_manage()
            if self.reinvites and self._aliased:
                self.reinviter.remember_alias(True)  # the caller's Contact as the callee got it
            KSR.tm.t_on_failure("ksr_failure_edge")
        flow_transport = None
        if side is Side.ACCESS:
            KSR.setdsturi(self.next_hop)
        else:
            # Through the Path of a registered client: its flow becomes $du, and our
            # Path URI's user names the flow's transport.
            flow_transport = routing.path_transport(_pv("$hdr(Route)"))
            KSR.rr.loose_route()
        self._relay(side, method, flow_transport)
        return 1

    def _in_dialog(self, side, method):
        routed = KSR.rr.loose_route() > 0
        if routed and self.reinvites:
            self.reinviter.on_in_dialog_request()  # CSeqs after the edge's re-INVITE (plugin.reinvite)
            if method == "INVITE" and self._aliased:
                self.reinviter.remember_alias(False)
        if method == "ACK":
            if not routed and KSR.tm.t_check_trans() <= 0:
                return 1
            self._apply(side)
            if self._toward(other(side)).action is routing.Action.RELAY:
                KSR.tm.t_relay()
            return 1  # no refresh: Edge.refresh says why an ACK needs none
        if not routed:
            KSR.sl.sl_send_reply(404, "Not Here")
            return 1
        created = KSR.tm.t_newtran()
        if created == 0:
            return 1
        if created < 0:
            self._bad_request(method, "the request cannot be parsed")
            return 1
        if method == "BYE":
            call_id = _pv("$ci")
            if self._released_by_dialog != call_id:  # else a second claim would find nothing
                self.edge.release(call_id, (_pv("$ft"), _pv("$tt")), CallEvent.BYE)
                self._flush()
        elif not self._apply(side):
            return 1
        self._relay(side, method)
        if method != "BYE":
            # The dialog module reset its timeout for this request: so does the record.
            self.edge.refresh(_pv("$ci"), (_pv("$ft"), _pv("$tt")), method)
        return 1

    def ksr_reply_route(self, msg):
        """Every reply Kamailio receives: a BYE's reply waits (at most BYE_HOLD_S) while
        the BYEs of its dialog are being sent, so that Kamailio 5.6's dialog module sends
        both (plugin.lifecycle); a reply that may carry SDP and cannot be used (a 2xx to
        an INVITE without a To tag, a Content-Length that does not frame the body) is
        discarded before Kamailio relays it unconverted, and so is one whose CSeq has no
        number."""
        method = KSR.pv.get("$rm")
        if _cseq_number(_pv("$cs", 0)) is None:
            self._discard_reply(int(_pv("$rs", 0) or 0), "a CSeq number that is no number (RFC 3261 20.16)")
            return 1
        if self.reinvites:
            if method == "INVITE" and self.reinviter.on_reply():
                self._flush()  # a failure queued the call's BYEs
                return 1  # the answer to the edge's own re-INVITE (plugin.reinvite)
            self.reinviter.on_relayed_reply()  # the callee's CSeq back (plugin.reinvite_kemi)
        if method == "BYE":
            call_id = _pv("$ci")
            deadline = time.monotonic() + BYE_HOLD_S
            while KSR.htable.sht_get(BYE_TABLE, call_id) is not None and time.monotonic() < deadline:
                time.sleep(0.0005)
        elif method in REPLY_SDP_METHODS:
            status = int(_pv("$rs", 0) or 0)
            if method == "INVITE" and 200 <= status < 300 and not _pv("$tt"):
                # RFC 3261 12.1.1: a 2xx names the dialog with its To tag; one without
                # it can start no dialog (its media could never be released).
                self._discard_reply(status, "a 2xx to an INVITE without a To tag")
            elif 100 < status < 300 and not self._read_body():
                framing = sipreply.framing_error(self._raw_message())
                if framing is not None:
                    self._discard_reply(status, framing)
        return 1

    def ksr_onreply_edge(self, msg):
        side = self._side()
        status = int(_pv("$rs", 0) or 0)
        if side is None or status >= 300 or status < 101:
            return 1
        if side is Side.ACCESS:
            KSR.nathelper.add_contact_alias()  # the client's Contact: its flow (plugin.routing)
        self._apply(side, request=False)
        return 1

    def _discard_reply(self, status, why):
        """Discard a reply the edge cannot use (RFC 3261 18.3: a response whose
        Content-Length does not frame its body MUST be discarded).  Nothing
        is released: a retransmitted 2xx may still come; if none does, the INVITE's
        timeout ends the call (ksr_failure_edge)."""
        KSR.err("e2ae: Call-ID %s: %d from %s:%s discarded: %s\n" % (_pv("$ci"), status, _pv("$si"), _pv("$sp"), why))
        self.edge.metrics.drops.labels("bad_reply").inc()
        KSR.set_drop()

    def ksr_failure_edge(self, msg):
        self._applied = None  # this route's message is the INVITE's, not the last one routed
        if self._retry_as_avp():
            return 1
        self.edge.metrics.call_outcomes.labels(str(_pv("$T_reply_code", 0))).inc()
        self.edge.release(_pv("$ci"), (_pv("$ft"),), CallEvent.FAILURE)
        self._flush()
        return 1

    def _retry_as_avp(self):
        """``core_rtp_profile = auto``: a 488 from the core to our AVPF offer gets the same
        offer as RTP/AVP in a new branch of this INVITE transaction, once (plugin.profile).
        True when the retry is on its way (nothing released, no outcome counted: the 488
        is not the call's final answer), or when it could not be sent: then it was
        answered, counted and the call released here."""
        retried = _pv(AVP_RETRIED) == "1"
        if not profile.retry_as_avp(self.core_profile, int(_pv("$T_reply_code", 0) or 0), retried):
            return False
        if self._side() is not Side.ACCESS or _pv("$rm") != "INVITE":
            return False
        body = self._read_body()
        if not isinstance(body, str):
            return False
        outcome = self.edge.handle(self._message(Side.ACCESS, True, body))  # the AVPF offer, cached
        self._flush()
        try:
            avp = profile.as_avp(outcome.body) if outcome.body is not None and not outcome.failed else None
        except ValueError:  # a multipart body: not retried
            avp = None
        if avp is None or not self._set_body(Outcome(body=avp, content_type=outcome.content_type)):
            return False
        KSR.pv.sets(AVP_RETRIED, "1")
        KSR.info("e2ae: Call-ID %s: the core refused RTP/AVPF (488): offering RTP/AVP\n" % _pv("$ci"))
        KSR.pv.sets("$ru", _pv("$ru"))  # a new branch to the same Request-URI
        KSR.setdsturi(self.next_hop)
        KSR.tm.t_on_failure("ksr_failure_edge")
        if not self._relay(Side.ACCESS, "INVITE"):  # answered (and counted) by _relay
            self.edge.release(_pv("$ci"), (_pv("$ft"),), CallEvent.FAILURE)
            self._flush()
        return True

    # -- events -------------------------------------------------------------------
    def ksr_dialog_event(self, *args):
        evname = args[-1] if args and isinstance(args[-1], str) else None
        if evname == "dialog:start":  # confirmed by a 2xx, once per dialog
            self.edge.metrics.call_outcomes.labels("200").inc()
        elif evname == "dialog:timeout":
            # The dialog module sends its BYEs right after this event, then "dialog:end".
            KSR.htable.sht_seti(BYE_TABLE, _pv("$dlg(callid)"), 1)
        elif evname in ("dialog:end", "dialog:failed"):
            call_id = _pv("$dlg(callid)")
            tags = (_pv("$dlg(from_tag)"), _pv("$dlg(to_tag)"))
            if call_id:
                KSR.htable.sht_rm(BYE_TABLE, call_id)
                if evname == "dialog:failed":
                    event = CallEvent.FAILURE
                elif KSR.htable.sht_get(OPERATOR_TABLE, call_id) is not None:
                    KSR.htable.sht_rm(OPERATOR_TABLE, call_id)
                    event = CallEvent.OPERATOR
                else:  # a BYE ends the dialog while its request is routed; else a timeout
                    event = CallEvent.BYE if _pv("$rm") == "BYE" else CallEvent.TIMEOUT
                if self.edge.release(call_id, tags, event) and event is CallEvent.BYE:
                    self._released_by_dialog = call_id
                self._flush()
        return 1

    def ksr_tm_event(self, *args):
        """tm's ``tm:local-request`` (``[pool] takeover = reinvite`` only): a request
        Kamailio itself sends (plugin.reinvite_kemi)."""
        if self.reinvites:
            self.reinviter.on_local_request()
        return 1

    def ksr_rtimer_events(self, *args):
        try:
            pubsub = self._subscription()
            for _ in range(EVENTS_PER_TICK):
                item = pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
                if item is None:
                    break
                self._on_event(item)
        except Exception as exc:  # Redis down: a new subscription on the next tick
            KSR.warn("e2ae: events: %s\n" % exc.__class__.__name__)
            self._drop_subscription()
        if self.reinvites:
            self.reinviter.tick(time.time())
            self._flush()
        self._end_calls()
        self._retry_releases()
        return 1

    def _on_event(self, item):
        """One event from mediad's channel; a defect in handling it loses that event only
        (the subscription stays)."""
        try:
            event = json.loads(item["data"])
        except (ValueError, TypeError):
            return
        if not isinstance(event, dict):
            return
        try:
            if self.reinvites and event.get("event") == EVENT_MEDIA_MOVED:
                self.reinviter.on_moved(event)
            else:
                self.edge.on_event(event)
        except Exception as exc:
            KSR.err("e2ae: event %s: %s\n" % (str(event.get("event"))[:40], exc.__class__.__name__))
        self._flush()

    @staticmethod
    def _entries(table, limit=2000):
        """Up to ``limit`` (key, value) pairs of an htable (read first, worked on after: an
        iterator holds a slot's lock)."""
        out = []
        if KSR.htable.sht_iterator_start("e2ae", table) < 0:
            return out
        while len(out) < limit and KSR.htable.sht_iterator_next("e2ae") > 0:
            out.append((_pv("$shtitkey(e2ae)"), _pv("$shtitval(e2ae)")))
        KSR.htable.sht_iterator_end("e2ae")
        return out

    def _end_calls(self):
        """Send the BYEs of the calls being ended whose dialog is confirmed (plugin.lifecycle)."""
        now = time.time()
        for key, value in self._entries(END_TABLE):
            try:
                request = EndRequest.from_value(value)
            except (ValueError, TypeError, KeyError):
                KSR.htable.sht_rm(END_TABLE, key)
                continue
            state = None
            if KSR.dialog.dlg_get(request.call_id, request.from_tag, request.to_tag) > 0:
                state = int(_pv("$dlg(state)", 0) or 0)
            step = end_step(state, now - request.queued)
            if step is EndStep.WAIT:
                continue
            KSR.htable.sht_rm(END_TABLE, key)
            if step is EndStep.BYE:
                KSR.htable.sht_seti(BYE_TABLE, request.call_id, 1)
                sent = KSR.dialog.dlg_bye("all") > 0
                KSR.htable.sht_rm(BYE_TABLE, request.call_id)
                result = "bye" if sent else "error"
                if not sent:
                    KSR.err("e2ae: Call-ID %s: the dialog module did not send the BYEs\n" % request.call_id)
            else:
                result = "gone"
            self.edge.metrics.call_ends.labels(result).inc()
            try:
                self.edge.lifecycle.step(request.call_id, CallState.ENDING,
                                         CallEvent.GONE if step is EndStep.GONE else CallEvent.HUNG_UP)
            except LifecycleError:
                pass

    def _retry_releases(self):
        """Retry the queued releases that are due; stop at the first that fails again (what
        it needs is still down)."""
        now = time.time()
        entries = self._entries(RELEASE_TABLE, RELEASE_QUEUE_MAX)
        KSR.htable.sht_seti(META_TABLE, "releases", len(entries))
        done = 0
        for key, value in entries:
            if done >= RELEASES_PER_TICK:
                break
            try:
                pending = PendingRelease.from_value(value)
            except (ValueError, TypeError, KeyError):
                KSR.htable.sht_rm(RELEASE_TABLE, key)
                continue
            if pending.next_at > now:
                continue
            done += 1
            released = False
            try:
                left, released = self.edge.retry(pending)
            except UnavailableError:
                left = pending
            except Exception as exc:  # a defect: keep the entry for the next tries
                KSR.err("e2ae: Call-ID %s: release retry: %s\n" % (pending.call_id, exc.__class__.__name__))
                left = pending
            self._flush_ends()
            KSR.htable.sht_rm(RELEASE_TABLE, key)
            if left is None:
                self.edge.metrics.release_retries.labels("done" if released else "nothing").inc()
                continue
            again = left.failed_again(now)
            if again is None:
                self.edge.metrics.release_retries.labels("abandoned").inc()
                KSR.err("e2ae: Call-ID %s: release (%s) abandoned after %d tries\n"
                        % (pending.call_id, pending.event.value, pending.attempts + 1))
                continue
            self.edge.metrics.release_retries.labels("failed").inc()
            KSR.htable.sht_sets(RELEASE_TABLE, again.key, again.to_value())
            break

    def _flush_ends(self):
        """After a retry: its calls to end, and the releases sent earlier without waiting
        that mediad refused (Edge.retry keeps what is left of its own release)."""
        self._flush()

    def _subscription(self):
        if self._pubsub is None:
            pubsub = self.edge.store.redis.pubsub()
            try:
                pubsub.subscribe(EVENTS_CHANNEL)
            except Exception:
                pubsub.close()
                raise
            self._pubsub = pubsub
        return self._pubsub

    def _drop_subscription(self):
        """Close the subscription's connection (a new one is made on the next tick)."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # its connection is already broken: nothing to close
                pass

    def ksr_xhttp_event(self, *args):
        if self.routes.has_websocket() and "websocket" in _pv("$hdr(Upgrade)").lower():
            KSR.websocket.handle_handshake()  # SIP over WebSocket (RFC 7118)
            return 1
        if _pv("$hu").split("?", 1)[0] != "/metrics":
            KSR.xhttp.xhttp_reply(404, "Not Found", "text/plain", "not found\n")
            return 1
        dialogs = {state: float(_pv("$stat(%s_dialogs)" % state, 0) or 0) for state in metrics_module.DIALOG_STATES}
        body = metrics_module.exposition(self.metrics_dir, dialogs).decode("utf-8")
        KSR.xhttp.xhttp_reply(200, "OK", "text/plain; version=0.0.4; charset=utf-8", body)
        return 1


def mod_init():
    config = load_config()
    handler = _KsrHandler()
    handler.setFormatter(formatter(config.plugin_log_format, "%(levelname)s %(message)s"))
    for name in ("e2ae", "mediad"):  # the plugin's loggers, and those of the mediad modules it uses
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(getattr(logging, config.plugin_log_level, logging.INFO))
        logger.propagate = False
    # Neither format names a thread, a process or a source line: each record skips
    # finding them (the logging HOWTO's "Optimization"), about a third of a line's cost.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    metrics_module.reset_directory(_METRICS_DIR)
    if _NOT_COMPILED:
        logging.getLogger("e2ae").warning("running the rules from their sources: %s", _NOT_COMPILED)
    else:
        logging.getLogger("e2ae").info("running the rules from %s", os.path.dirname(sdp_rules.__file__))
    return kamailio(config)
