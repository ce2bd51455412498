"""The KEMI shell of :mod:`plugin.reinvite`: Kamailio's side of the edge's own re-INVITEs.

Runs in Kamailio only (it imports ``KSR``).  A ``media_moved`` event from a
survivor mediad (:data:`mediad.takeover.EVENT_MEDIA_MOVED`) reaches the
``rtimer`` process (:mod:`plugin.kemi`); :meth:`Reinviter.on_moved` reads the
dialog from the dialog module (``dlg_get``, ``$dlg(...)``), sends the
re-INVITE with ``KSR.tm.t_uac_send``, raises the dialog's ``cseq_diff``
variable and remembers the request in the ``e2ae_reinvite`` htable.  Every
reply Kamailio receives passes :meth:`Reinviter.on_reply` (from the core reply
route): a reply to the edge's own request has one Via.  Each tick
:meth:`Reinviter.tick` retries after a 491 and gives up on a re-INVITE that
got no final reply.  A failure ends the call (``media_lost``: the media is
released and a BYE sent each way, :mod:`plugin.lifecycle`).

A ``media_moved`` event for the access side (the survivor renewed the WIC's
terminations) is re-offered to the WIC (:func:`plugin.reinvite.moved_access_offer`),
and the dialog's rules state is told of the new transport (port, credentials,
certificate, tls-id, the edge as DTLS server).  Toward the caller (the WIC of a
WIC-originated call, the core of a core-originated one) the callee's later
requests are renumbered here (:meth:`Reinviter.on_in_dialog_request`) and their
replies put back (:meth:`Reinviter.on_relayed_reply`, from the core reply route,
before tm relays the reply; :meth:`Reinviter.callee_cseq` gives the plugin the
callee's number for the same reply).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import time

import KSR

from iq import Command, IqRequest, Side
from plugin.edge import other
from sdp_rules.errors import UnavailableError
from plugin.lifecycle import CallEvent
from plugin.reinvite import (ANSWER_WAIT_S, CSEQ_DIFF_VAR, CSEQ_MARK_VAR, CSEQ_REFRESH_HEADER, GLARE_WAIT_S,
                             UP_BASE_VAR, UP_DIFF_VAR, DialogView, Leg, Outcome, Party, Pending, ReinviteError,
                             RenewedTransport, alias_value, answer_specs, back_to_callee, build, check_answer,
                             moved_access_offer, moved_offer, outcome, refresh_value, toward_caller)
from sdp_rules.plan import random_tls_id

log = logging.getLogger("e2ae.plugin.reinvite")

# deploy/kamailio.cfg: the edge's re-INVITEs waiting for their final reply, by "Call-ID\tCSeq".
PENDING_TABLE = "e2ae_reinvite"
# The dialog variable holding the alias nathelper gave the caller's Contact.
ALIAS_VAR = "e2ae_caller_alias"
# ... and the callee's (a client called through its flow): read from the caller's requests,
# whose R-URI is the callee's Contact as the caller got it, alias included.
CALLEE_ALIAS_VAR = "e2ae_callee_alias"
_ALIAS_PARAM = re.compile(r";alias=([^;>?]+)")


def _pv(name, default=""):
    value = KSR.pv.get(name)
    return default if value is None else value


def _int(value) -> int:
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def _leg(prefix: str, alias: str = "") -> Leg:
    return Leg(uri=_pv(f"$dlg({prefix}_uri)"), tag=_pv(f"$dlg({prefix}_tag)"), cseq=_int(_pv(f"$dlg({prefix}_cseq)")),
               contact=_pv(f"$dlg({prefix}_contact)"), route_set=_pv(f"$dlg({prefix}_rs)"),
               socket=_pv(f"$dlg({prefix}_bindaddr)"), alias=alias)


def last_sent_to(record, side: Side) -> str | None:
    """The last SDP body the edge sent toward ``side`` (rendered from the other side's)."""
    origin = other(side).value
    for key in reversed(list(record.rendered)):
        parts = key.split("|")
        if len(parts) >= 2 and parts[1] == origin:
            return record.rendered[key]
    return None


def renewed_transports(record, event: dict) -> list[RenewedTransport]:
    """The transports of a ``media_moved`` access event, with their m-lines from the dialog's
    rules state, each given a new tls-id; the state is changed to name the new transport
    (the survivor's reply, the new tls-id, the edge as DTLS server awaiting the WIC's answer)."""
    known = record.rules.data.get("transports") or {}
    out = []
    for item in event.get("transports") or []:
        tid = str(int(item["transport_id"]))
        state = known.get(tid)
        if state is None:
            raise ReinviteError(f"transport {tid} is not in the dialog's state")
        tls_id = random_tls_id()
        out.append(RenewedTransport(tuple(state["mids"]), str(state["tag"]), int(item["port"]), str(item["ice_ufrag"]),
                                    str(item["ice_pwd"]), tls_id))
        reply = dict(state.get("reply") or {}, local_address=str(event["address"]), local_port=int(item["port"]),
                     ice_ufrag=str(item["ice_ufrag"]), ice_pwd=str(item["ice_pwd"]))
        fp_hash, _, fp_value = str(event["fingerprint"]).partition(" ")
        reply["local_fingerprint"] = {"hash_func": fp_hash, "value": fp_value}
        state.update(reply=reply, local_tls_id=tls_id, role="server", remote_tls_id=None, remote_ice_ufrag=None,
                     reuse=False, answered=False)
    if event.get("streams"):
        raise ReinviteError("streams with an access termination of their own are not re-offered")
    if not out:
        raise ReinviteError("the event names no transport")
    return out


def _awaiting_answer(record) -> dict[str, dict]:
    """The dialog's renewed transports whose re-offer the WIC has not answered yet, by id."""
    return {tid: state for tid, state in (record.rules.data.get("transports") or {}).items()
            if state.get("answered") is False}


class Reinviter:
    def __init__(self, edge) -> None:
        self.edge = edge
        self._restored: tuple[str, int, int] | None = None  # (Call-ID, CSeq as received, the callee's)

    # -- a survivor moved a dialog's media ------------------------------------------
    def on_moved(self, event: dict) -> None:
        side = Side(str(event.get("side")))
        record = self.edge.store.get(str(event.get("dialog", "")))
        if record is None:
            return
        toward = Party.CALLEE if record.caller_side != side.value else Party.CALLER
        try:
            previous = last_sent_to(record, side)
            if previous is None:
                raise ReinviteError(f"no SDP was sent to the {side.value} side yet")
            if side is Side.ACCESS:
                offers: list[str] = []

                def renew(fresh) -> None:  # the rules state names the new transport
                    sent = last_sent_to(fresh, side)
                    if sent is None:
                        raise ReinviteError(f"no SDP was sent to the {side.value} side yet")
                    offers.append(moved_access_offer(sent, str(event["address"]), str(event["fingerprint"]),
                                                     renewed_transports(fresh, event)))

                if self.edge.store.update(record.id, renew) is None:
                    return  # released meanwhile: nothing to re-offer
                body = offers[-1]
            else:
                body = moved_offer(previous, str(event["address"]), [int(p) for p in event["ports"]])
            self._send(record.call_id, record.caller_tag, record.callee_tag, toward, record.id, body, 1, side)
        except (ReinviteError, ValueError, KeyError, TypeError) as exc:
            self._fail(record, side, "refused", str(exc))

    def _send(self, call_id, from_tag, to_tag, toward, dialog, body, attempts, side) -> None:
        if KSR.dialog.dlg_get(call_id, from_tag, to_tag) <= 0:
            raise ReinviteError("the dialog module has no such dialog")
        alias = KSR.dialog.var_get(ALIAS_VAR)
        callee_alias = KSR.dialog.var_get(CALLEE_ALIAS_VAR)
        view = DialogView(call_id, _leg("from", alias if isinstance(alias, str) else ""),
                          _leg("to", callee_alias if isinstance(callee_alias, str) else ""),
                          _int(KSR.dialog.var_get(CSEQ_DIFF_VAR)), _int(KSR.dialog.var_get(UP_DIFF_VAR)))
        request = build(view, toward, body)
        # Remembered before it is sent: a worker may take the answer before t_uac_send returns.
        pending = Pending(call_id, from_tag, to_tag, toward, dialog, request.cseq, body, time.time(), attempts)
        KSR.htable.sht_sets(PENDING_TABLE, pending.key, pending.to_value())
        if KSR.tm.t_uac_send(request.method, request.ruri, request.nexthop or ".", request.socket or ".",
                             request.headers, request.body) < 0:
            KSR.htable.sht_rm(PENDING_TABLE, pending.key)
            raise ReinviteError("tm did not send the request")
        if toward is Party.CALLEE:
            KSR.dialog.var_sets(CSEQ_DIFF_VAR, str(request.cseq_diff))
            KSR.dialog.var_sets(CSEQ_MARK_VAR, "1")
        else:  # the plugin renumbers the callee's later requests itself
            KSR.dialog.var_sets(UP_DIFF_VAR, str(request.cseq_diff))
            KSR.dialog.var_sets(UP_BASE_VAR, str(request.cseq))
        self.edge.metrics.reinvites.labels(side.value, "sent").inc()
        log.warning("Call-ID %s: media moved: re-INVITE (CSeq %d) sent to the %s", call_id, request.cseq,
                    toward.value, extra={"call_id": call_id, "leg": side.value, "event": "reinvite"})

    # -- the dialog module's own requests --------------------------------------------
    def on_local_request(self) -> None:
        """A request Kamailio itself is about to send (tm's ``tm:local-request`` event): a
        BYE the dialog module sends to the callee of a dialog the edge re-INVITEd gets the
        caller's CSeq raised by ``cseq_diff`` too (``dlg_bye`` numbers it from the caller's
        last CSeq, below the edge's re-INVITE; the dialog module's sent-message hook sets
        the number the header names)."""
        if _pv("$rm") != "BYE":
            return
        call_id, from_tag, to_tag = _pv("$ci"), _pv("$ft"), _pv("$tt")
        if not (call_id and from_tag and to_tag) or KSR.dialog.dlg_get(call_id, from_tag, to_tag) <= 0:
            return
        if from_tag == _pv("$dlg(from_tag)"):  # to the callee, in the caller's CSeq space
            diff = _int(KSR.dialog.var_get(CSEQ_DIFF_VAR))
            number = refresh_value(_int(_pv("$cs")), diff)
        else:  # to the caller, in the callee's
            diff = _int(KSR.dialog.var_get(UP_DIFF_VAR))
            number = toward_caller(_int(_pv("$cs")), diff)
        if diff <= 0:
            return  # not re-INVITEd that way
        KSR.hdr.remove("CSeq")  # the request is rebuilt with it (tm uac.c)
        KSR.hdr.append("CSeq: %d BYE\r\n" % number)

    def remember_alias(self, initial: bool) -> None:
        """The caller's INVITE got nathelper's alias in its Contact: kept in the dialog (the
        dialog module keeps the Contact as received), for the Contact of the edge's re-INVITE."""
        if initial or _pv("$ft") == _pv("$dlg(from_tag)"):
            KSR.dialog.var_sets(ALIAS_VAR, alias_value(_pv("$si"), _int(_pv("$sp")), _pv("$pr") or "udp"))

    def on_in_dialog_request(self) -> None:
        """A request inside a dialog, loose-routed: the caller's first one after the edge's
        re-INVITE to the callee carries the header that marks the dialog for the dialog
        module's renumbering (later ones get it from the module itself); a callee's one
        after the edge's re-INVITE to the caller leaves with its CSeq raised (ACKs too)."""
        if _pv("$ft") == _pv("$dlg(from_tag)") and KSR.dialog.var_get(CALLEE_ALIAS_VAR) is None:
            found = _ALIAS_PARAM.search(_pv("$ru"))
            if found:
                KSR.dialog.var_sets(CALLEE_ALIAS_VAR, found.group(1))
        if _pv("$ft") == _pv("$dlg(to_tag)"):
            diff = _int(KSR.dialog.var_get(UP_DIFF_VAR))
            if diff > 0:
                KSR.hdr.remove("CSeq")
                KSR.hdr.append("CSeq: %d %s\r\n" % (toward_caller(_int(_pv("$cs")), diff), _pv("$rm")))
            return
        if KSR.dialog.var_get(CSEQ_MARK_VAR) != "1" or _pv("$ft") != _pv("$dlg(from_tag)"):
            return
        diff = _int(KSR.dialog.var_get(CSEQ_DIFF_VAR))
        KSR.hdr.append("%s: %d\r\n" % (CSEQ_REFRESH_HEADER, refresh_value(_int(_pv("$cs")), diff)))
        KSR.dialog.var_sets(CSEQ_MARK_VAR, "0")

    # -- replies and time ----------------------------------------------------------
    def on_relayed_reply(self) -> None:
        """A reply Kamailio received, not to the edge's re-INVITE: the caller's reply to a
        callee's request the plugin raised goes back with the callee's number (a reply to
        the dialog module's own BYE to the caller is tm's: changing it changes nothing, tm
        matches it by its branch)."""
        self._restored = None
        call_id, from_tag, to_tag = _pv("$ci"), _pv("$ft"), _pv("$tt")
        if not (call_id and from_tag and to_tag) or KSR.dialog.dlg_get(call_id, from_tag, to_tag) <= 0:
            return
        if from_tag != _pv("$dlg(to_tag)"):
            return  # a reply to the caller's request
        received = _int(_pv("$cs"))
        number = back_to_callee(received, _int(KSR.dialog.var_get(UP_DIFF_VAR)),
                                _int(KSR.dialog.var_get(UP_BASE_VAR)))
        if number is None:
            return
        KSR.hdr.remove("CSeq")
        KSR.hdr.append("CSeq: %d %s\r\n" % (number, _pv("$rm")))
        self._restored = (call_id, received, number)

    def callee_cseq(self, call_id: str, cseq: int) -> int:
        """The number of the reply being handled as the callee sent its request (the plugin's
        own matching of an answer to its offer, plugin.edge, is in the callee's numbers)."""
        restored = self._restored
        if restored is not None and restored[0] == call_id and restored[1] == cseq:
            return restored[2]
        return cseq

    def on_reply(self) -> bool:
        """A reply Kamailio received: True when it answered one of the edge's re-INVITEs."""
        if _pv("$rm") != "INVITE" or _int(_pv("$hdrc(Via)")) != 1:
            return False
        key = "%s\t%s" % (_pv("$ci"), _pv("$cs"))
        value = KSR.htable.sht_get(PENDING_TABLE, key)
        if value is None:
            return False
        pending = Pending.from_value(value)
        result = outcome(_int(_pv("$rs")), pending.attempts)
        if result is None:
            return True
        if result is Outcome.ANSWERED:
            try:
                answer = _pv("$rb")
                check_answer(pending.body, answer)
                if self._side(pending) is Side.ACCESS:
                    self._apply_answer(pending, answer)
            except (ReinviteError, UnavailableError) as exc:
                result = Outcome.FAILED
                log.warning("Call-ID %s: the answer to the re-INVITE (CSeq %d) cannot be applied: %s",
                            pending.call_id, pending.cseq, exc)
        KSR.htable.sht_rm(PENDING_TABLE, key)
        try:
            self._finish(pending, result, "status %s" % _pv("$rs"))
        except UnavailableError as exc:  # Redis: the call's record cannot be read to end it
            log.warning("Call-ID %s: re-INVITE %s, the call's state unreadable: %s", pending.call_id,
                        result.value, exc.reason)
        return True

    def _apply_answer(self, pending: Pending, answer: str) -> None:
        """The WIC's answer to the re-offer, to the survivor (a MODIFY of each renewed transport)."""
        record = self.edge.store.get(pending.dialog)
        if record is None:
            raise ReinviteError("the dialog's record is gone")
        specs = answer_specs(answer or "", _awaiting_answer(record))
        node = self.edge._where(record.mediad, record.created)
        reply = self.edge._ask(IqRequest(Command.MODIFY, record.id, "reoffer-%d" % pending.cseq, transports=specs),
                               node)
        if reply.error:
            raise ReinviteError(f"mediad refused the answer: {reply.error}")

        def answered(fresh) -> None:  # the same answer, on the record as another message left it
            answer_specs(answer or "", _awaiting_answer(fresh))

        if self.edge.store.update(record.id, answered) is None:
            raise ReinviteError("the dialog was released meanwhile")

    def tick(self, now: float) -> None:
        if KSR.htable.sht_iterator_start("e2ae_ri", PENDING_TABLE) < 0:
            return
        entries = []
        while len(entries) < 1000 and KSR.htable.sht_iterator_next("e2ae_ri") > 0:
            entries.append((_pv("$shtitkey(e2ae_ri)"), _pv("$shtitval(e2ae_ri)")))
        KSR.htable.sht_iterator_end("e2ae_ri")
        for key, value in entries:
            try:
                pending = Pending.from_value(value)
            except (ValueError, TypeError, KeyError):
                KSR.htable.sht_rm(PENDING_TABLE, key)
                continue
            try:
                if pending.retry_at and pending.retry_at <= now:
                    KSR.htable.sht_rm(PENDING_TABLE, key)
                    self._retry(pending)
                elif not pending.retry_at and now - pending.sent > ANSWER_WAIT_S:
                    KSR.htable.sht_rm(PENDING_TABLE, key)
                    self._finish(pending, Outcome.FAILED, "no final reply")
            except UnavailableError as exc:
                log.warning("Call-ID %s: re-INVITE not followed up, state unreadable: %s", pending.call_id,
                            exc.reason)

    def _finish(self, pending: Pending, result: Outcome, why: str) -> None:
        side = self._side(pending)
        if result is Outcome.ANSWERED:
            self.edge.metrics.reinvites.labels(side.value, "answered").inc()
            log.warning("Call-ID %s: re-INVITE (CSeq %d) answered: media continues on the survivor",
                        pending.call_id, pending.cseq)
        elif result is Outcome.RETRY:
            self.edge.metrics.reinvites.labels(side.value, "retry").inc()
            wait = random.uniform(*GLARE_WAIT_S)
            again = dataclasses.replace(pending, retry_at=time.time() + wait)
            KSR.htable.sht_sets(PENDING_TABLE, again.key, again.to_value())
        else:
            record = self.edge.store.get(pending.dialog)
            if record is not None:
                self._fail(record, side, "failed", why)

    def _retry(self, pending: Pending) -> None:
        side = self._side(pending)
        try:
            self._send(pending.call_id, pending.from_tag, pending.to_tag, pending.toward, pending.dialog,
                       pending.body, pending.attempts + 1, side)
        except ReinviteError as exc:
            record = self.edge.store.get(pending.dialog)
            if record is not None:
                self._fail(record, side, "refused", str(exc))

    def _side(self, pending: Pending) -> Side:
        record = self.edge.store.get(pending.dialog)
        caller_side = Side(record.caller_side) if record is not None else Side.ACCESS
        return caller_side if pending.toward is Party.CALLER else other(caller_side)

    def _fail(self, record, side: Side, result: str, why: str) -> None:
        self.edge.metrics.reinvites.labels(side.value, result).inc()
        log.warning("Call-ID %s: media moved, re-INVITE to the %s side %s (%s): ending the call", record.call_id,
                    side.value, result, why, extra={"call_id": record.call_id, "leg": side.value,
                                                     "event": "reinvite_" + result})
        self.edge.release_record(record, CallEvent.MEDIA_LOST)


__all__ = ["PENDING_TABLE", "Reinviter", "last_sent_to", "renewed_transports"]
