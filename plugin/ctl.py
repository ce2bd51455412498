"""``e2ae-ctl``: what a running edge holds, call by call, and ending a call.

    e2ae-ctl [--config FILE] [--json] calls
    e2ae-ctl [--config FILE] [--json] call CALL-ID
    e2ae-ctl [--config FILE] [--json] end CALL-ID [--wait SECONDS]
    e2ae-ctl [--config FILE] [--json] nodes
    e2ae-ctl [--config FILE] drain NODE-ID | undrain NODE-ID

Theory of operation
-------------------
Nothing here keeps state of its own; it reads what the edge already holds:

* the plugin's dialog records in Redis (:mod:`plugin.state`: Call-ID, tags, the
  side the call came from, when it was set up), read with SCAN and MGET;
* each mediad's control endpoint (the Iq interface): ``LIST`` (the dialogs it
  holds) and ``QUERY`` (a dialog's streams, the DTLS state of each channel,
  the packets relayed each way, its events).  mediad's QUERY answer leaves
  out SRTP keys and ice-pwd values; :func:`redact` drops any such field again
  before anything is printed, so neither can reach a terminal or a pipe;
* for ``end``, Kamailio's JSON-RPC datagram socket (``jsonrpcs`` module,
  ``[plugin] rpc_socket``): ``htable.sets`` marks the Call-ID in the
  ``e2ae_operator`` table, then the dialog module's ``dlg.terminate_dlg`` sends a
  BYE to each side; its end event makes the plugin release the media and the
  state as ``operator`` (:mod:`plugin.kemi`), and ``end`` waits until neither Redis nor
  mediad holds the dialog any more.  When the end event has not released it
  within ``EVENT_GRACE`` seconds (seen with a dialog ended over RPC right
  after another), ``end`` releases it itself with the plugin's own
  :meth:`plugin.edge.Edge.release` (the record's tombstone and mediad's
  RELEASE, as the plugin does), and says so.

It is authenticated as the plugin is: Iq requests are signed with the control
secret (``[mediad] control_secret``, or the one mediad keeps in Redis), Redis
is reached with ``[redis] url`` and password, and Kamailio's socket is a local
file whose mode decides who may use it.

The functions that shape what is shown (:func:`summary`, :func:`detail`,
:func:`redact`, :func:`render_calls`, :func:`render_call`) are pure; the
classes around them do the I/O.  ``MEDIAD`` names the mediad holding a dialog
(its control address; in a pool, ``id@host:port``).

In a pool of mediads (``mediad.pool``, ``plugin.pool``): ``nodes`` shows each
node (listed in ``[pool] nodes`` or registered), its weight, load, capacity
and standing; ``drain`` adds a node to the operator's drain set in Redis (it
keeps its calls and gets no new ones; its record says so at its next
heartbeat), ``undrain`` takes it out.  ``calls`` asks every node it can reach.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from typing import Any, Iterable, TextIO

from iq import Command, IqRequest
from sdp_rules.errors import E2aeError, UnavailableError

from mediad.pool import DRAINING_KEY, node_key
from mediad.redis_client import REDIS_ERRORS, connect, is_cluster, settings
from mediad.redis_keys import Component, pattern
from plugin.lifecycle import BYE_TABLE, OPERATOR_TABLE
from plugin.state import DIALOG_PREFIX, DialogRecord, dialog_key

# Fields that never leave this tool, wherever they appear in a document (defence in depth:
# mediad's QUERY answer has none of them).
SECRET_FIELDS = frozenset({
    "ice_pwd", "remote_ice_pwd", "srtp_keys", "keys", "key", "master_key", "master_salt", "salt",
    "local_key", "local_salt", "remote_key", "remote_salt",
    "password", "secret", "control_secret", "private_key", "cert_key",
})
SCAN_COUNT = 500
RPC_TIMEOUT = 3.0
EVENT_GRACE = 3.0  # seconds the dialog module's end event has to release an ended call


class CtlError(E2aeError):
    """What e2ae-ctl could not do, in words for the operator (exit status 1)."""


# ---------------------------------------------------------------------------
# What is shown (pure)
# ---------------------------------------------------------------------------

def redact(value: Any) -> Any:
    """``value`` without any field named in SECRET_FIELDS, at any depth."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if k not in SECRET_FIELDS}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _channels(stream: dict[str, Any]) -> dict[str, dict[str, Any]]:
    access = stream.get("access") or {}
    return access.get("channels") or {}


def dtls_state(stream: dict[str, Any]) -> str:
    """The DTLS state of each access channel: ``established``, or ``rtp:established rtcp:new``."""
    channels = _channels(stream)
    if not channels:
        return "-"
    states = {name: (c.get("state") or "-") + (f" ({c['failure']})" if c.get("failure") else "")
              for name, c in channels.items()}
    if len(states) == 1:
        return next(iter(states.values()))
    return " ".join(f"{name}:{state}" for name, state in states.items())


def _streams(view: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The view's streams; a stream on a BUNDLE transport shows the transport's channel as its own.

    The transport holds the one DTLS association and port of its streams (RFC 9143); mediad's
    view lists it under ``transports`` and the stream names it by ``transport_id``.
    """
    view = view or {}
    transports = {t.get("transport_id"): t for t in view.get("transports") or []}
    out = []
    for stream in view.get("streams", []):
        transport = transports.get(stream.get("transport_id"))
        access = stream.get("access")
        if transport is not None and access is not None and not access.get("channels"):
            channel = {k: transport.get(k) for k in ("port", "state", "failure", "role", "peer", "srtp_keys")}
            access = {**access, "transport_id": transport.get("transport_id"), "channels": {"rtp": channel}}
            stream = {**stream, "access": access}
        out.append(stream)
    return out


def _stream_summary(stream: dict[str, Any]) -> dict[str, Any]:
    packets = stream.get("packets") or {}
    return {
        "stream": stream.get("stream_id"),
        "kind": stream.get("kind"),
        "dtls": dtls_state(stream),
        "packets_from_access": packets.get("from_access"),
        "packets_from_core": packets.get("from_core"),
    }


def summary(record: DialogRecord | None, dialog: str, mediad: str | None, view: dict[str, Any] | None,
            now: float) -> dict[str, Any]:
    """One line of ``calls``: a call (or a dialog mediad holds with no SIP record)."""
    return {
        "call_id": record.call_id if record else None,
        "dialog": dialog,
        "age_s": round(now - record.created, 1) if record and record.created else None,
        "caller_side": record.caller_side if record else None,
        "mediad": mediad,
        "streams": [_stream_summary(s) for s in _streams(view)],
    }


def _termination(term: dict[str, Any] | None) -> dict[str, Any] | None:
    if not term:
        return None
    out = dict(term)
    spec = dict(out.pop("spec", None) or {})
    out["remote"] = {k: v for k, v in spec.items() if v not in (None, [], False, "")}
    channels = out.get("channels")
    if isinstance(channels, dict):
        out["channels"] = {
            name: {**{k: v for k, v in ch.items() if k != "srtp_keys"}, "srtp": bool(ch.get("srtp_keys"))}
            for name, ch in channels.items()
        }
    return out


def detail(record: DialogRecord | None, dialog: str, mediad: str | None, view: dict[str, Any] | None,
           now: float) -> dict[str, Any]:
    """Everything ``call`` shows about one dialog: never a key or an ice-pwd."""
    out = summary(record, dialog, mediad, view, now)
    if record is not None:
        out["sip"] = {
            "call_id": record.call_id, "caller_tag": record.caller_tag, "callee_tag": record.callee_tag,
            "caller_side": record.caller_side, "created": record.created,
            "offer_in_progress": record.offer, "state": record.state.value,
        }
    if view is not None:
        out["media"] = {
            "version": view.get("version"),
            "streams": [
                {**{k: v for k, v in s.items() if k not in ("access", "core")},
                 "access": _termination(s.get("access")), "core": _termination(s.get("core"))}
                for s in _streams(view)
            ],
            "events": view.get("events", []),
        }
    return redact(out)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows) + "\n"


def render_calls(calls: list[dict[str, Any]]) -> str:
    rows = [["CALL-ID", "AGE", "MEDIAD", "STREAM", "DTLS", "PKTS ACCESS->CORE", "PKTS CORE->ACCESS"]]
    for call in calls:
        first = [call["call_id"] or f"(no SIP dialog: {call['dialog']})", _age(call["age_s"]), call["mediad"] or "-"]
        streams = call["streams"] or [{"stream": None}]
        for n, stream in enumerate(streams):
            head = first if n == 0 else ["", "", ""]
            if stream.get("stream") is None:
                rows.append(head + ["-", "-", "-", "-"])
                continue
            rows.append(head + [f"{stream['stream']} {stream['kind']}", stream["dtls"],
                                str(stream["packets_from_access"]), str(stream["packets_from_core"])])
    return _table(rows) + f"{len(calls)} call(s)\n"


def render_call(call: dict[str, Any]) -> str:
    lines = [f"Call-ID      {call['call_id'] or '-'}", f"dialog       {call['dialog']}",
             f"age          {_age(call['age_s'])}", f"mediad       {call['mediad'] or '- (holds no media)'}"]
    sip = call.get("sip")
    if sip:
        lines += [f"caller side  {sip['caller_side']}", f"caller tag   {sip['caller_tag']}",
                  f"callee tag   {sip['callee_tag'] or '- (not answered)'}"]
        if sip.get("offer_in_progress"):
            lines.append(f"offer        {sip['offer_in_progress']}")
        if sip.get("state"):
            lines.append(f"state        {sip['state']}")
    for stream in (call.get("media") or {}).get("streams", []):
        lines.append(f"stream {stream['stream_id']} ({stream['kind']})")
        packets = stream.get("packets") or {}
        lines.append(f"  packets    from access {packets.get('from_access')}, from core {packets.get('from_core')}")
        for side in ("access", "core"):
            term = stream.get(side)
            if not term:
                continue
            remote = term.get("remote", {})
            where = f"{remote.get('remote_address') or '?'}:{remote.get('remote_port') or '?'}"
            lines.append(f"  {side:<6}     remote {where}" + (f" ({remote['transport']})" if remote.get("transport") else ""))
            if term.get("ports"):
                lines.append(f"    ports    {term['ports']}")
            for name, ch in (term.get("channels") or {}).items():
                state = ch.get("state") + (f" ({ch['failure']})" if ch.get("failure") else "")
                lines.append(f"    {name:<8} port {ch.get('port')}  DTLS {state}  role {ch.get('role') or '-'}"
                             f"  SRTP {'yes' if ch.get('srtp') else 'no'}  peer {ch.get('peer') or '-'}")
            for fp in remote.get("remote_fingerprints", []):
                lines.append(f"    fingerprint {fp.get('hash_func')} {fp.get('value')}" if isinstance(fp, dict)
                             else f"    fingerprint {fp}")
    for event in (call.get("media") or {}).get("events", []):
        lines.append(f"event        stream {event.get('stream_id')} {event.get('component')}: {event.get('event')}"
                     + (f" ({event['reason']})" if event.get("reason") else ""))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# I/O: Redis, mediad, Kamailio
# ---------------------------------------------------------------------------

class Mediad:
    """One mediad's control endpoint, named by its address."""

    def __init__(self, name: str, client) -> None:
        self.name = name
        self.client = client

    def _request(self, command: Command, dialog: str):
        transaction = "ctl-" + os.urandom(6).hex()
        try:
            return self.client.request(IqRequest(command, dialog, transaction))
        except UnavailableError as exc:
            raise CtlError(f"mediad {self.name}: {exc}") from None

    def dialogs(self) -> list[str]:
        reply = self._request(Command.LIST, "list")
        if reply.error_code is not None:
            raise CtlError(f"mediad {self.name}: LIST refused: {reply.error_code} {reply.error}")
        data = reply.data or {}
        return list(data.get("dialogs", []))

    def query(self, dialog: str) -> dict[str, Any] | None:
        reply = self._request(Command.QUERY, dialog)
        if reply.error_code == 404:
            return None  # released meanwhile
        if reply.error_code is not None:
            raise CtlError(f"mediad {self.name}: QUERY refused: {reply.error_code} {reply.error}")
        return reply.data

    def close(self) -> None:
        self.client.close()


class KamailioRpc:
    """JSON-RPC 2.0 over Kamailio's jsonrpcs datagram socket (a Unix socket file)."""

    def __init__(self, path: str, timeout: float = RPC_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, method: str, *params: Any, missing_ok: bool = False) -> Any:
        """Kamailio's answer to ``method``; None for a 404 when ``missing_ok``."""
        request = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode()
        here = tempfile.mkdtemp(prefix="e2ae-ctl-")
        reply_path = os.path.join(here, "reply.sock")  # Kamailio answers to the sender's address
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(reply_path)
            sock.settimeout(self.timeout)
            sock.sendto(request, self.path)
            raw = sock.recv(65535)
        except FileNotFoundError:
            raise CtlError(f"no Kamailio RPC socket at {self.path} ([plugin] rpc_socket; is Kamailio running?)") from None
        except PermissionError:
            raise CtlError(f"no permission to use Kamailio's RPC socket {self.path}") from None
        except OSError as exc:
            raise CtlError(f"Kamailio RPC {method}: {exc.strerror or exc}") from None
        finally:
            sock.close()
            shutil.rmtree(here, ignore_errors=True)
        try:
            doc = json.loads(raw)
        except ValueError:
            raise CtlError(f"Kamailio RPC {method}: unreadable answer") from None
        if doc.get("error"):
            error = doc["error"]
            if missing_ok and error.get("code") == 404:
                return None
            raise CtlError(f"Kamailio RPC {method}: {error.get('code')} {error.get('message')}")
        return doc.get("result")


class Edge:
    """The running edge as e2ae-ctl sees it: Redis, the mediads, Kamailio's RPC socket."""

    def __init__(self, redis_client, mediads: list[Mediad], rpc: KamailioRpc, config=None) -> None:
        self.redis = redis_client
        self.mediads = mediads
        self.rpc = rpc
        self.config = config  # for the plugin's own release, when the end event did not release

    @classmethod
    def from_config(cls, config) -> "Edge":
        from mediad.io.client import IqClient

        client = connect(settings(config, Component.CTL), 2.0)
        try:
            iq = IqClient.from_config(config, Component.CTL)
        except UnavailableError as exc:
            raise CtlError(f"cannot authenticate to mediad: {exc}") from None
        mediads = [Mediad(str(config.mediad_control), iq)]
        from plugin.pool import Pool

        if Pool.configured(config):
            pool = Pool(config, lambda: client)
            mediads = [Mediad(node.ref, IqClient(node.address, iq.secret, iq.timeout)) for node in pool.nodes()]
        return cls(client, mediads, KamailioRpc(config.plugin_rpc_socket), config)

    def close(self) -> None:
        for mediad in self.mediads:
            mediad.close()
        self.redis.close()

    def records(self) -> list[DialogRecord]:
        try:
            keys = list(self.redis.scan_iter(match=pattern(DIALOG_PREFIX), count=SCAN_COUNT))  # every primary
            raws = self._get_all(keys)
        except REDIS_ERRORS as exc:
            raise CtlError(f"Redis: {exc.__class__.__name__}: {exc}") from None
        out = []
        for raw in raws:
            if raw is None:
                continue  # released between SCAN and MGET
            try:
                out.append(DialogRecord.from_json(raw))
            except (ValueError, KeyError, TypeError):
                continue
        return sorted(out, key=lambda r: (r.created, r.call_id))

    def _get_all(self, keys: list) -> list:
        """The values of ``keys`` (on a Cluster, keys of many slots: one GET each, pipelined by node)."""
        if not keys:
            return []
        if not is_cluster(self.redis):
            return self.redis.mget(keys)
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
        return pipe.execute()

    def holders(self) -> dict[str, Mediad]:
        """Which mediad holds each dialog (in a pool, the nodes that answer)."""
        out: dict[str, Mediad] = {}
        for mediad in self.mediads:
            try:
                dialogs = mediad.dialogs()
            except CtlError as exc:
                if len(self.mediads) == 1:
                    raise
                print(f"e2ae-ctl: {exc}", file=sys.stderr)
                continue
            for dialog in dialogs:
                out.setdefault(dialog, mediad)
        return out

    # -- the pool ---------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        """Every node of the pool as the plugin sees it now."""
        from plugin.pool import Pool, classify

        if self.config is None or not Pool.configured(self.config):
            raise CtlError("no pool configured ([pool] nodes, [pool] registry)")
        pool = Pool(self.config, lambda: self.redis)
        try:
            nodes = pool.nodes()
            draining = {d.decode() for d in self.redis.smembers(DRAINING_KEY)}
        except REDIS_ERRORS as exc:
            raise CtlError(f"Redis: {exc.__class__.__name__}: {exc}") from None
        return [{"id": n.id, "control": f"{n.host}:{n.port}", "weight": n.weight, "load": n.load,
                 "capacity": n.capacity, "registered": n.registered,
                 "state": classify(n, draining, {}, 0.0).value} for n in nodes]

    def drain(self, node_id: str, on: bool = True) -> dict[str, Any]:
        """Put ``node_id`` in the drain set (``on``) or take it out."""
        from mediad.config import NODE_ID_CHARS

        if not node_id or not set(node_id) <= NODE_ID_CHARS:
            raise CtlError(f"not a node id: {node_id!r}")
        try:
            (self.redis.sadd if on else self.redis.srem)(DRAINING_KEY, node_id)
            known = bool(self.redis.exists(node_key(node_id)))
        except REDIS_ERRORS as exc:
            raise CtlError(f"Redis: {exc.__class__.__name__}: {exc}") from None
        return {"node": node_id, "draining": on, "registered": known}

    def calls(self, now: float) -> list[dict[str, Any]]:
        records = self.records()
        holders = self.holders()
        out = []
        for record in records:
            mediad = holders.pop(record.id, None)
            view = mediad.query(record.id) if mediad else None
            out.append(summary(record, record.id, mediad.name if mediad else None, view, now))
        for dialog, mediad in sorted(holders.items()):  # media with no SIP dialog left
            out.append(summary(None, dialog, mediad.name, mediad.query(dialog), now))
        return [redact(call) for call in out]

    def find(self, call_id: str) -> list[DialogRecord]:
        return [r for r in self.records() if r.call_id == call_id]

    def call(self, call_id: str, now: float) -> list[dict[str, Any]]:
        records = self.find(call_id)
        if not records:
            raise CtlError(f"no call with Call-ID {call_id!r}")
        holders = self.holders()
        out = []
        for record in records:
            mediad = holders.get(record.id)
            view = mediad.query(record.id) if mediad else None
            out.append(detail(record, record.id, mediad.name if mediad else None, view, now))
        return out

    def end(self, call_id: str, wait: float) -> dict[str, Any]:
        records = self.find(call_id)
        if not records:
            raise CtlError(f"no call with Call-ID {call_id!r}")
        for record in records:
            if not record.callee_tag:
                raise CtlError(f"call {call_id!r} is not answered yet: it has no dialog to end with BYE "
                               "(the caller cancels it, or it times out)")
        for record in records:
            # The dialog's end event then releases it as "operator" (plugin.kemi).
            self.rpc.call("htable.sets", OPERATOR_TABLE, record.call_id, "1")
            # Kamailio 5.6 sends the caller's BYE, then the callee's, and refuses the
            # second when the first one's reply has already deleted the dialog: that reply
            # waits in the reply route while the mark is there (plugin.lifecycle).
            self.rpc.call("htable.seti", BYE_TABLE, record.call_id, 1)
            try:
                self.rpc.call("dlg.terminate_dlg", record.call_id, record.caller_tag, record.callee_tag)
            finally:  # the dialog's end event takes the mark away too
                self.rpc.call("htable.delete", BYE_TABLE, record.call_id, missing_ok=True)
        dialogs = [r.id for r in records]
        started = time.monotonic()
        left = self._wait_released(dialogs, started + min(wait, EVENT_GRACE))
        released_by = "kamailio"
        if left and self.config is not None:
            self._release([r for r in records if r.id in left])
            released_by = "e2ae-ctl"
            left = self._wait_released(dialogs, started + wait)
        return {"call_id": call_id, "dialogs": dialogs, "bye_sent": True, "released": not left,
                "released_by": released_by if not left else None, "still_held": left}

    def _wait_released(self, dialogs: list[str], deadline: float) -> list[str]:
        left = self._held(dialogs)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = self._held(dialogs)
        return left

    def _release(self, records: list[DialogRecord]) -> None:
        """The plugin's own release (tombstone, record gone, RELEASE to mediad), from here."""
        from prometheus_client import CollectorRegistry

        from plugin.edge import Edge as PluginEdge
        from plugin.lifecycle import CallEvent
        from plugin.metrics import Metrics

        edge = PluginEdge.from_config(self.config, Metrics(CollectorRegistry()), component=Component.CTL)
        try:
            for record in records:
                edge.release(record.call_id, (record.caller_tag, record.callee_tag), CallEvent.OPERATOR)
        finally:
            edge.store.close()
            edge.iq_client.close()
            if edge.pool is not None:
                edge.pool.close()

    def _held(self, dialogs: Iterable[str]) -> list[str]:
        """Which of ``dialogs`` Redis (the plugin's record) or a mediad still holds."""
        held = set()
        try:
            for dialog in dialogs:
                if self.redis.exists(dialog_key(dialog)):
                    held.add(dialog)
        except REDIS_ERRORS as exc:
            raise CtlError(f"Redis: {exc.__class__.__name__}") from None
        media = set(self.holders())
        return sorted(held | (media & set(dialogs)))


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="e2ae-ctl", description="What the running e2ae edge holds, and ending calls.")
    parser.add_argument("--config", help="configuration file (default: $E2AE_CONFIG, else built-in defaults)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("calls", help="every call: Call-ID, age, mediad, streams, DTLS state, packets each way")
    one = sub.add_parser("call", help="everything about one call (never a key or an ice-pwd)")
    one.add_argument("call_id", metavar="CALL-ID")
    end = sub.add_parser("end", help="end a call: BYE to both sides (dialog module), media and state released")
    end.add_argument("call_id", metavar="CALL-ID")
    end.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the release (default 10)")
    sub.add_parser("nodes", help="the media nodes of the pool: weight, load, capacity, state")
    drain = sub.add_parser("drain", help="a media node takes no new calls and keeps its calls")
    drain.add_argument("node_id", metavar="NODE-ID")
    undrain = sub.add_parser("undrain", help="a drained media node takes new calls again")
    undrain.add_argument("node_id", metavar="NODE-ID")
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None, edge: Edge | None = None) -> int:
    from mediad.config import load_config

    out = out or sys.stdout
    args = _parser().parse_args(argv)
    own = edge is None
    try:
        if edge is None:
            edge = Edge.from_config(load_config(args.config))
        now = time.time()
        if args.command == "nodes":
            nodes = edge.nodes()
            out.write(json.dumps({"nodes": nodes}, indent=2) + "\n" if args.json else _table(
                [["NODE", "CONTROL", "WEIGHT", "LOAD", "CAPACITY", "STATE"]]
                + [[n["id"], n["control"], str(n["weight"]), str(n["load"]), str(n["capacity"] or "-"),
                    n["state"] + ("" if n["registered"] else " (listed, no record)")] for n in nodes]))
        elif args.command in ("drain", "undrain"):
            result = edge.drain(args.node_id, args.command == "drain")
            if args.json:
                out.write(json.dumps(result, indent=2) + "\n")
            else:
                out.write(f"{args.node_id}: " + ("draining: no new calls, its calls go on" if result["draining"]
                                                 else "takes new calls again")
                          + ("" if result["registered"] else " (no live record of it now)") + "\n")
        elif args.command == "calls":
            calls = edge.calls(now)
            out.write(json.dumps({"calls": calls}, indent=2) + "\n" if args.json else render_calls(calls))
        elif args.command == "call":
            calls = edge.call(args.call_id, now)
            if args.json:
                out.write(json.dumps(calls[0] if len(calls) == 1 else calls, indent=2) + "\n")
            else:
                out.write("\n".join(render_call(c) for c in calls))
        else:
            result = edge.end(args.call_id, args.wait)
            if args.json:
                out.write(json.dumps(result, indent=2) + "\n")
            else:
                by = " (by e2ae-ctl: the dialog's end event did not)" if result.get("released_by") == "e2ae-ctl" else ""
                out.write(f"{args.call_id}: BYE sent to both sides; "
                          + (f"media and state released{by}\n" if result["released"]
                             else f"still held after {args.wait:g} s: {', '.join(result['still_held'])}\n"))
            return 0 if result["released"] else 1
    except E2aeError as exc:
        print(f"e2ae-ctl: {exc}", file=sys.stderr)
        return 1
    finally:
        if own and edge is not None:
            edge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
