"""The mediad daemon: serves the Iq interface and owns every dialog's media.

Theory of operation
-------------------
:class:`Daemon` wires the parts: the configuration, one Prometheus registry
(``mediad.metrics``), the port pools (``mediad.io.ports``), the shared
certificate, the Redis store (``mediad.state``), the control endpoint
(``mediad.io.control``) and the dialogs (``mediad.core.session``), whose channels run
the packet path (``mediad.core.relay``).

Control requests of one dialog are served one at a time (one lock per dialog,
``mediad.io.control.DialogLocks``; different dialogs concurrently), so a
retransmission that arrives while its original is being served waits and then
finds the answer in the idempotency cache: per dialog, the last replies by
transaction, stored with the dialog's document in Redis (so a restarted mediad
answers the same); for released dialogs and errors, a bounded in-memory cache.  Reserve and
modify are all-or-nothing: if a port group cannot be had, everything the request
bound is closed again, the dialog is left as it was and the answer is 503.

Every change is written to Redis behind the answer: an Iq request (reserve,
modify, release), or what the packet path learns (DTLS result, SRTP keys, peer
address), changes the dialog in memory, marks it changed or released
(``mediad.state.WriteBehind``) and is answered; one writer task sends what
changed, in one pipeline, one batch after the other (so in order).  An idle
writer woken by a change first waits ``WRITE_GATHER`` s, so that its batch
carries the changes of several calls (a call's reserve and modify saved once
when they fall in one batch, nothing but its deletion when its release falls
in it too); while batches keep coming it sends
the next as soon as the one before is written.  A batch that fails (Redis
down, restarted, refusing) is put back and sent again after
``WRITE_RETRY_FIRST`` s, doubling up to ``WRITE_RETRY_MAX`` s, until it is
written.  ``flush`` waits for everything marked so far to be written.  The
window: a change is in Redis ``WRITE_GATHER`` s and one writer round trip
after its answer, or two round trips when a batch was being written (that
one, then its own); a mediad killed within that window, or while Redis is
unreachable, loses the changes
not yet written (a released dialog not yet deleted is restored by the next
mediad and expires after ``dialog_ttl`` without traffic).  At start the
dialogs in Redis are reloaded (``restore``): same ports, same ICE credentials,
SRTP from the stored keys, no new handshake.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from sdp_rules.errors import E2aeError, UsageError
from iq import Command, IqReply, IqRequest, Role, Side, StreamSpec, TerminationSpec
from iq import TRANSPORT_UDP_DTLS, TransportSpec

EVENT_DIALOG_EXPIRED = "dialog_expired"

from mediad import fence, takeover
from mediad.core import datachannel
from mediad.io import fastpath
from mediad.proto.certs import Certificate
from mediad.config import Config
from mediad.io.control import ControlEndpoint, DialogLocks
from mediad.proto.iqcodec import E_MALFORMED, E_NO_RESOURCES, E_PEER, E_UNKNOWN_DIALOG, E_UNSUPPORTED, ControlError
from mediad.proto import srtp_roc
from mediad.metrics import Metrics
from mediad.pool import Heartbeat
from mediad.io.ports import NoPortsError, PortPool
from mediad.core.relay import FAILED, AccessChannel, CoreChannel
from mediad.core.session import (SUPPORTED_KINDS, AccessLeg, CoreLeg, Dialog, Stream, stored_keys, stored_rocs,
                                 stored_srtcp)
from mediad.redis_client import settings as redis_settings
from mediad.redis_keys import Component
from mediad.state import CERTIFICATE_KEY, StateError, StateStore, WriteBehind
from mediad.io.tcp import listen as listen_tcp, offers_tcp, wants_tcp
from mediad.core.transport import BUNDLED_LEGS, KINDS_ON_TRANSPORT, Transport, TransportChannel

log = logging.getLogger("mediad")

RECENT_REPLIES = 4096
REDIS_PING_INTERVAL = 5.0  # seconds between two pings behind e2ae_mediad_redis_up
ROC_READ_SLICE = 32  # dialogs read between two turns of the loop (about 0.13 ms at 4.2 µs each)
ROC_READ_PERIOD = 0.1  # seconds between two looks at the noted SRTP contexts (docs/mediad.md "Restart")
WRITE_GATHER = 0.01  # seconds an idle writer waits after a change before it takes its batch
WRITE_RETRY_FIRST = 0.05  # seconds before a failed batch of dialog documents is sent again ...
WRITE_RETRY_MAX = 1.0  # ... doubling up to this
STOP_FLUSH_TIMEOUT = 2.0  # seconds stop() waits for the pending writes
CERTIFICATE_DAYS = 365


class Daemon:
    def __init__(self, config: Config, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.metrics = Metrics(registry if registry is not None else CollectorRegistry())
        self.engine = self._packet_path(config.mediad_packet_path)
        if self.engine is not None:
            self.metrics.add_native(self.engine)
        self.access_pool = PortPool(config.mediad_access_address, config.mediad_access_ports)
        self.core_pool = PortPool(config.mediad_core_address, config.mediad_core_ports)
        self.metrics.watch_pool("access", self.access_pool)
        self.metrics.watch_pool("core", self.core_pool)
        self.dialogs: dict[str, Dialog] = {}
        self.recent: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.pending = WriteBehind()
        self.flush_waiters: list[asyncio.Future] = []
        self.writing = False
        self.in_flight = 0  # dialogs of the batch being written
        self.metrics.watch_writer(lambda: len(self.pending) + self.in_flight)
        self.tasks: set[asyncio.Task] = set()
        self.certificate: Certificate | None = None
        self._renewal_certificate: Certificate | None = None  # see renewal_certificate()
        self.certificate_reference = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.store: StateStore | None = None
        self.control: ControlEndpoint | None = None
        self.metrics_server = None
        self.locks = DialogLocks()
        self.heartbeat: Heartbeat | None = None  # registration in the pool ([mediad] node_id)
        self.heartbeat_task: asyncio.Task | None = None
        self.srtp_noted: set[AccessChannel] = set()  # Python-path packets noted a wrap or an SRTCP block
        self.fence: fence.Fence | None = None  # a pool node's writes are fenced (mediad.fence)

    @staticmethod
    def _packet_path(choice: str) -> "fastpath.Engine | None":
        """The native packet path's engine, or None for the Python one (``[mediad] packet_path``)."""
        if choice == "python":
            return None
        if not fastpath.available():
            if choice == "native":
                raise RuntimeError("packet_path = native, but the native packet path is not built "
                                   "(run: python -m mediad.io.fastpath_build)")
            log.warning("the native packet path is not built: established SRTP is relayed in Python")
            return None
        return fastpath.Engine()

    async def open_channel(self, channel, sock) -> None:
        """Start reading a channel's socket: natively for DTLS-SRTP over UDP, else asyncio's.

        A stream on a BUNDLE transport has only its core channels here; their access side is the
        transport's (:meth:`open_transport_channel`).
        """
        stream = channel.stream
        if self.engine is not None and stream.kind == "srtp":
            if stream.path is None:
                stream.path = fastpath.StreamPath(self.engine, stream)
            rtcp = channel.component == "rtcp"
            if isinstance(channel, AccessChannel):
                which = fastpath.A_RTCP if rtcp else fastpath.A_RTP
            else:
                which = fastpath.C_RTCP if rtcp else fastpath.C_RTP
            fastpath.FastTransport(self.loop, stream.path, which, channel, sock)
        else:
            await self.loop.create_datagram_endpoint(lambda: channel, sock=sock)

    async def open_transport_channel(self, transport: Transport, sock) -> None:
        """Start reading a BUNDLE transport's port: natively when the native path runs, else asyncio's."""
        channel = transport.rtp
        if self.engine is not None:
            if transport.path is None:
                transport.path = fastpath.BundlePath(self.engine, transport)
            fastpath.FastTransport(self.loop, transport.path, fastpath.A_RTP, channel, sock)
            transport.path.sync_members()
        else:
            await self.loop.create_datagram_endpoint(lambda: channel, sock=sock)

    # -- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.store = StateStore(redis_settings(self.config, Component.MEDIAD), self.config.redis_dialog_ttl)
        await self.store.ping()
        secret = self.config.mediad_control_secret.encode() or await self.store.control_secret()
        await self._load_certificate()
        if self.config.mediad_node_id:
            self.fence = fence.Fence(self)
        await (takeover.restore_own(self) if self.config.mediad_node_id else self.restore())
        control = self.config.mediad_control
        self.control = ControlEndpoint(secret, self.serve, self.metrics)
        await self.control.listen(control.host, control.port)
        self._spawn(self._sweep())
        self._spawn(self._expire_idle())
        self._spawn(self._watch_rocs())
        self.metrics.redis_up.set(1)
        self._spawn(self._watch_redis())
        if self.config.mediad_node_id:
            self.heartbeat = Heartbeat(self.config, self.store.redis, lambda: len(self.dialogs), self.fence)
            self.heartbeat_task = asyncio.ensure_future(self.heartbeat.run(self._heartbeat_failed))
            if self.config.pool_takeover in ("on", "reinvite"):
                self._spawn(takeover.Takeover(self).run())
        if self.config.mediad_metrics is not None:
            m = self.config.mediad_metrics
            self.metrics_server, _ = start_http_server(m.port, addr=m.host, registry=self.metrics.registry)
        log.info("mediad ready: control %s, access %s %s, core %s %s, fingerprint %s",
                 control, self.config.mediad_access_address, self.config.mediad_access_ports,
                 self.config.mediad_core_address, self.config.mediad_core_ports,
                 self.certificate.fingerprint() if self.certificate else None)
        warning = srtp_roc.layout_warning()
        if warning is not None:
            log.warning(warning)

    def _heartbeat_failed(self, exc: Exception) -> None:
        self.metrics.redis_errors.inc()
        log.warning("pool heartbeat not written: %s", exc.__class__.__name__)

    async def stop(self) -> None:
        """Stop serving; the state stays in Redis for the next start."""
        if self.control is not None:
            self.control.close()
        if self.heartbeat is not None:
            if self.heartbeat_task is not None:  # no beat may write the record again after it is removed
                self.heartbeat_task.cancel()
                await asyncio.gather(self.heartbeat_task, return_exceptions=True)
            try:
                await asyncio.wait_for(self.heartbeat.leave(), STOP_FLUSH_TIMEOUT)
            except Exception as exc:  # the record then expires at its TTL
                log.warning("pool record not removed: %s", exc.__class__.__name__)
        try:
            await asyncio.wait_for(self.flush(), STOP_FLUSH_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("stopping with %d dialog(s) not written to Redis", len(self.pending) + self.in_flight)
        for dialog in list(self.dialogs.values()):
            for stream in dialog.streams.values():
                for channel in stream.channels():
                    channel.close()
            for transport in dialog.transports.values():
                for channel in transport.channels():
                    channel.close()
        self.dialogs.clear()
        for task in list(self.tasks):
            task.cancel()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
        if self.store is not None:
            await self.store.close()

    async def _load_certificate(self) -> None:
        cfg = self.config
        if cfg.mediad_certificate_file:
            cert_pem = Path(cfg.mediad_certificate_file).read_bytes()
            key_pem = Path(cfg.mediad_key_file or cfg.mediad_certificate_file).read_bytes()
            self.certificate = Certificate.from_pem(cert_pem, key_pem)
            self.certificate_reference = "file"
            return
        if self.store is None:  # set by start()
            raise UsageError("mediad: Redis used before start()")
        cert_pem, key_pem = await self.store.certificate_pem(
            lambda: Certificate.generate(days=CERTIFICATE_DAYS).to_pem())
        certificate = Certificate.from_pem(cert_pem, key_pem)
        if certificate.x509.has_expired():
            certificate = Certificate.generate(days=CERTIFICATE_DAYS)
            await self.store.replace_certificate_pem(*certificate.to_pem())
        self.certificate = certificate
        self.certificate_reference = "redis:" + CERTIFICATE_KEY

    def renewal_certificate(self) -> Certificate:
        """The DTLS identity of the access terminations this node renews in a takeover: its own,
        in memory, never the pool's.  A WebRTC peer starts a new DTLS association only when the
        remote fingerprint changes (libwebrtc ``DtlsTransport::SetRemoteParameters``; it ignores
        ``a=tls-id``), so the re-offer must name another certificate than the dead node's."""
        if self._renewal_certificate is None:
            self._renewal_certificate = Certificate.generate(days=CERTIFICATE_DAYS)
        return self._renewal_certificate

    # -- the Iq interface -------------------------------------------------------------
    async def handle(self, request: IqRequest) -> IqReply:
        """Serve one request (see :meth:`serve`); the answer as an IqReply."""
        return IqReply.from_dict(await self.serve(request))

    async def serve(self, request: IqRequest) -> dict[str, Any]:
        """Serve one request; the answer as the ``IqReply.to_dict()`` it caches (not to be changed)."""
        async with self.locks.hold(request.dialog):
            key = (request.dialog, request.transaction)
            dialog = self.dialogs.get(request.dialog)
            cached = dialog.replies.get(request.transaction) if dialog else self.recent.get(key)
            if cached is None and dialog is not None:
                cached = self.recent.get(key)
            if cached is not None:
                return cached
            try:
                reply = await self._dispatch(request)
            except ControlError as exc:
                exc.dialog, exc.transaction = request.dialog, request.transaction
                reply = exc.reply()
            except NoPortsError as exc:
                reply = IqReply(request.dialog, request.transaction, error=str(exc), error_code=E_NO_RESOURCES)
            data = reply.to_dict()
            dialog = self.dialogs.get(request.dialog)
            if dialog is not None and reply.error_code is None and request.command in (Command.RESERVE, Command.MODIFY):
                dialog.remember(request.transaction, data)
                dialog.refresh(self.loop.time())  # (and its document, with its TTL, is written again)
                self.changed(dialog)
            else:
                self.recent[key] = data
                while len(self.recent) > RECENT_REPLIES:
                    self.recent.popitem(last=False)
            return data

    async def _dispatch(self, request: IqRequest) -> IqReply:
        command = request.command
        if command is Command.LIST:
            return IqReply(request.dialog, request.transaction,
                           data={"dialogs": sorted(self.dialogs), "count": len(self.dialogs)})
        dialog = self.dialogs.get(request.dialog)
        for spec in request.streams:
            self._check_remote(spec)
        for transport in request.transports:
            self._check_address(f"transport {transport.transport_id}", "access", transport.remote_address,
                                transport.remote_port, self.config.mediad_access_address)
        if command is Command.RESERVE:
            return await self._reserve(request, dialog)
        if dialog is None:
            raise ControlError(E_UNKNOWN_DIALOG, f"unknown dialog {request.dialog[:64]!r}")
        if command is Command.QUERY:
            return IqReply(request.dialog, request.transaction, data=dialog.public_view())
        if command is Command.MODIFY:
            return await self._modify(request, dialog)
        return await self._release(request, dialog)

    def _check_remote(self, spec: StreamSpec) -> None:
        """What the peer's SDP gave (addresses, ports) must be something mediad can send to.

        A host name (mediad resolves no names on its packet path), an address of
        the other family than the side's own, or a port out of range is the peer's
        doing: 488, the request changes nothing.
        """
        for side, term, local in (("access", spec.access, self.config.mediad_access_address),
                                  ("core", spec.core, self.config.mediad_core_address)):
            if term is not None:
                self._check_address(f"stream {spec.stream_id}", side, term.remote_address, None, local)
                for name in ("remote_port", "remote_rtcp_port", "remote_sctp_port"):
                    self._check_port(f"stream {spec.stream_id}", side, name, getattr(term, name))

    def _check_address(self, what: str, side: str, address: str | None, port: int | None, local: str) -> None:
        if address:
            try:
                parsed = ipaddress.ip_address(address)
            except ValueError:
                raise ControlError(E_PEER, f"{what}: {side} remote address {address[:64]!r} is not an IP address") \
                    from None
            if parsed.version != ipaddress.ip_address(local).version:
                raise ControlError(E_PEER, f"{what}: {side} remote address {address!r} is IPv{parsed.version}, "
                                           f"mediad's {side} address is IPv{ipaddress.ip_address(local).version}")
        self._check_port(what, side, "remote_port", port)

    @staticmethod
    def _check_port(what: str, side: str, name: str, value) -> None:
        if value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool):
            raise ControlError(E_MALFORMED, f"{what}: {side} {name} is not a number")
        if not 0 <= value <= 65535:
            raise ControlError(E_PEER, f"{what}: {side} remote port {value} is out of range")

    def _check_transports(self, request: IqRequest, dialog: Dialog | None) -> None:
        """A stream names a transport the dialog has or the request adds (else 400); kinds srtp, sctp.

        A transport released by the request may keep no stream the request does not release or move.
        """
        known = set(dialog.transports) if dialog is not None else set()
        known |= {t.transport_id for t in request.transports}
        released = set(request.release_transports)
        for spec in request.transports:
            if spec.transport != TRANSPORT_UDP_DTLS:
                raise ControlError(E_UNSUPPORTED, f"transport {spec.transport_id}: {str(spec.transport)[:32]!r} "
                                                  f"(a bundle is {TRANSPORT_UDP_DTLS} only, RFC 9143 section 8)")
        for spec in request.streams:
            if spec.transport_id is None:
                continue
            if spec.transport_id not in known or spec.transport_id in released:
                raise ControlError(E_MALFORMED, f"stream {spec.stream_id} names transport {spec.transport_id}, "
                                                f"which the dialog does not have")
            if spec.kind not in KINDS_ON_TRANSPORT:
                raise ControlError(E_MALFORMED, f"stream {spec.stream_id}: a {spec.kind!r} stream cannot be on "
                                                f"a transport")
        if dialog is not None and released:
            leaving = set(request.release_streams) | {
                s.stream_id for s in request.streams if s.transport_id not in released}
            for stream in dialog.streams.values():
                if stream.transport_id in released and stream.stream_id not in leaving:
                    raise ControlError(E_MALFORMED, f"transport {stream.transport_id} is released but stream "
                                                    f"{stream.stream_id} is still on it")

    def _check_stream(self, spec: StreamSpec) -> None:
        if spec.kind not in SUPPORTED_KINDS and spec.kind not in datachannel.KINDS:
            raise ControlError(E_UNSUPPORTED, f"stream kind {spec.kind!r} is not supported by this mediad")
        if spec.access is None and spec.core is None:
            raise ControlError(E_MALFORMED, f"stream {spec.stream_id} has no termination")

    async def _reserve(self, request: IqRequest, dialog: Dialog | None) -> IqReply:
        if not request.streams:
            raise ControlError(E_MALFORMED, "reserve without streams")
        for spec in request.streams:
            self._check_stream(spec)
            if dialog is not None and spec.stream_id in dialog.streams:
                raise ControlError(E_MALFORMED, f"stream {spec.stream_id} is already reserved")
        self._check_transports(request, dialog)
        new_dialog = dialog is None
        dialog = dialog or Dialog(self, request.dialog)
        self.dialogs[dialog.id] = dialog
        transports: list[Transport] = []
        try:
            transports = await self._open_transports(dialog, request.transports)
            streams = await self._create_streams(dialog, request.streams)
        except BaseException:
            for transport in transports:
                self._close_transport(dialog, transport)
            if new_dialog:
                del self.dialogs[dialog.id]
            raise
        self._apply_transports(dialog, request.transports, transports)
        self.metrics.sessions_active.set(len(self.dialogs))
        return self._reply(request, streams)

    async def _open_transports(self, dialog: Dialog, specs: list[TransportSpec]) -> list[Transport]:
        """Bind one access port for each transport the dialog lacks, all or nothing (RFC 9143: one 5-tuple)."""
        created: list[Transport] = []
        try:
            for spec in specs:
                if spec.transport_id in dialog.transports or any(t.transport_id == spec.transport_id
                                                                 for t in created):
                    continue
                tcp = offers_tcp(spec.remote_candidates)
                socks = self.access_pool.allocate(1, tcp_too=tcp)
                transport = Transport(dialog, spec)
                transport.rtp = TransportChannel(transport, socks[0].getsockname()[1], "rtp")
                created.append(transport)
                self.metrics.terminations["access"].inc()
                await self.open_transport_channel(transport, socks[0])
                if tcp:  # the passive ICE-TCP candidate on the same port number (RFC 6544)
                    await listen_tcp(transport.rtp, socks[1])
        except BaseException:
            for transport in created:
                self._close_transport(dialog, transport)
            raise
        for transport in created:
            dialog.transports[transport.transport_id] = transport
        return created

    def _apply_transports(self, dialog: Dialog, specs: list[TransportSpec], created: list[Transport]) -> None:
        """Once the streams are in place: start what the new transports need, change the kept ones."""
        for spec in specs:
            transport = dialog.transports[spec.transport_id]
            if transport in created:
                transport.rebuild()
                transport.configure()
            else:
                transport.apply(spec)

    def _close_transport(self, dialog: Dialog, transport: Transport) -> None:
        if dialog.transports.get(transport.transport_id) is transport:
            del dialog.transports[transport.transport_id]
        for channel in transport.channels():
            channel.close()
            self.access_pool.release(channel.port)
        self.metrics.terminations["access"].dec()

    async def _create_streams(self, dialog: Dialog, specs: list[StreamSpec]) -> list[Stream]:
        """Allocate and bind every port of ``specs``, all or nothing."""
        created: list[Stream] = []
        try:
            for spec in specs:
                stream = Stream(dialog, spec)
                created.append(stream)
                if spec.access is not None:
                    await self._add_access(stream, spec.access)
                if spec.core is not None:
                    await self._add_core(stream, spec.core)
        except BaseException:
            for stream in created:
                self._close_stream(stream)
            raise
        for stream in created:
            dialog.streams[stream.stream_id] = stream
            if stream.access is not None:
                stream.access.configure()
        return created

    async def _add_access(self, stream: Stream, spec: TerminationSpec, certificate: Certificate | None = None) -> None:
        if stream.transport_id is not None:
            return self._add_bundled(stream, spec)
        if stream.kind in datachannel.KINDS:
            return await datachannel.add_access(self, stream, spec)
        leg = AccessLeg(stream, spec)
        leg.certificate = certificate
        count = 1 if stream.kind in ("t38", "srtp_tcp") or spec.rtcp_mux else 2  # over TCP RTCP is muxed
        tcp = wants_tcp(stream.kind, spec)
        socks = self.access_pool.allocate(count, even=count == 2, tcp_too=tcp)
        stream.access = leg  # only once it has its ports: a failed allocation leaves no leg
        self.metrics.terminations["access"].inc()
        leg.rtp = AccessChannel(leg, socks[0].getsockname()[1], "rtp")
        if count == 2:
            leg.rtcp = AccessChannel(leg, socks[1].getsockname()[1], "rtcp")
        for channel, sock in zip(leg.channels(), socks):
            await self.open_channel(channel, sock)
        if tcp:
            await listen_tcp(leg.rtp, socks[-1])

    def _add_bundled(self, stream: Stream, spec: TerminationSpec) -> None:
        """The access side of a stream on a transport: no port of its own (RFC 9143)."""
        transport = stream.dialog.transports[stream.transport_id]
        stream.access = BUNDLED_LEGS[stream.kind](stream, transport, spec)
        self.metrics.terminations["access"].inc()
        transport.attach(stream.access)

    async def _add_core(self, stream: Stream, spec: TerminationSpec) -> None:
        if stream.kind in datachannel.KINDS:
            return await datachannel.add_core(self, stream, spec)
        leg = CoreLeg(stream, spec)
        count = 1 if stream.kind == "t38" or spec.rtcp_mux else 2
        socks = self.core_pool.allocate(count, even=stream.kind != "t38")
        stream.core = leg
        self.metrics.terminations["core"].inc()
        leg.rtp = CoreChannel(leg, socks[0].getsockname()[1], "rtp")
        if count == 2:
            leg.rtcp = CoreChannel(leg, socks[1].getsockname()[1], "rtcp")
        for channel, sock in zip(leg.channels(), socks):
            await self.open_channel(channel, sock)

    async def _modify(self, request: IqRequest, dialog: Dialog) -> IqReply:
        """Change, add and drop streams and transports: all or nothing.

        Every port the request needs (a new transport, a side an existing stream
        gains, a stream leaving a transport, the new streams) is bound before
        anything of the dialog changes; when one cannot be had, what was bound is
        closed again, the dialog is as it was and the answer is 503.  Streams the
        request drops are closed last, once nothing can fail any more (their ports
        are not reused by this request's new ones), then the transports it drops.
        """
        self._check_transports(request, dialog)
        drop = [i for i in dict.fromkeys(request.release_streams) if i in dialog.streams]
        for spec in request.streams:
            if spec.stream_id not in dialog.streams or spec.stream_id in drop:
                self._check_stream(spec)
        streams_before = list(dialog.streams.items())
        dropped = [dialog.streams.pop(i) for i in drop]
        existing = [(dialog.streams[s.stream_id], s) for s in request.streams if s.stream_id in dialog.streams]
        new_specs = [s for s in request.streams if s.stream_id not in dialog.streams]
        # A stream moving onto a transport, off one, or between two (RFC 9143 7.5.2): a new access leg.
        moving = [(stream, spec) for stream, spec in existing
                  if spec.transport_id != stream.transport_id and stream.access is not None
                  and (spec.access is not None or spec.transport_id is not None)]
        moved: list[tuple[Stream, Any, int | None]] = []  # (stream, its old access leg, its old transport)
        gained: list[tuple[Stream, str]] = []  # (stream, side) an existing stream gains
        transports: list[Transport] = []
        try:
            transports = await self._open_transports(dialog, request.transports)
            for stream, spec in moving:
                moved.append((stream, stream.access, stream.transport_id))
                stream.access, stream.transport_id = None, spec.transport_id
                await self._add_access(stream, spec.access or TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF"))
            for stream, spec in existing:
                for side, add in (("access", self._add_access), ("core", self._add_core)):
                    if getattr(spec, side) is not None and getattr(stream, side) is None:
                        gained.append((stream, side))
                        await add(stream, getattr(spec, side))
            created = await self._create_streams(dialog, new_specs)
        except BaseException:
            for stream, side in gained:
                leg = getattr(stream, side)
                if leg is not None:  # None: its ports could not be had
                    if side == "access":
                        self._close_access(leg)
                    else:
                        self._close_leg(leg, side)
                    setattr(stream, side, None)
            for stream, old_leg, old_transport in moved:
                if stream.access is not None:
                    self._close_access(stream.access)
                stream.access, stream.transport_id = old_leg, old_transport
            for transport in transports:
                self._close_transport(dialog, transport)
            dialog.streams.clear()
            dialog.streams.update(streams_before)
            raise
        fresh = {id(stream) for stream, _, _ in moved} | {id(stream) for stream, side in gained if side == "access"}
        for _, old_leg, _ in moved:
            self._close_access(old_leg)
        for stream, spec in existing:
            new_access = id(stream) in fresh
            if not new_access and stream.transport_id is None and self._new_association(stream, spec):
                stream.access.spec.remote_fingerprints = []  # the new ones come with this modify or a later one
                stream.access.reset_association()
            stream.local_tls_id = spec.local_tls_id or stream.local_tls_id
            stream.remote_tls_id = spec.remote_tls_id or stream.remote_tls_id
            stream.mid = spec.mid if spec.mid is not None else stream.mid
            if new_access:
                stream.access.configure()
            elif spec.access is not None:
                for port in stream.access.apply(spec.access):
                    self.access_pool.release(port)
            if spec.core is not None and (stream, "core") not in gained:
                for port in stream.core.apply(spec.core):
                    self.core_pool.release(port)
        self._apply_transports(dialog, request.transports, transports)
        for stream in dropped:
            self._close_stream(stream)
        for transport_id in dict.fromkeys(request.release_transports):
            transport = dialog.transports.get(transport_id)
            if transport is not None:
                self._close_transport(dialog, transport)
        for transport in dialog.transports.values():
            transport.rebuild()  # core specs (the SSRCs sent toward the WIC) may have changed
        return self._reply(request, [stream for stream, _ in existing] + created)

    @staticmethod
    def _new_association(stream: Stream, spec: StreamSpec) -> bool:
        """Does this modify start a new DTLS association on ``stream`` (RFC 8842 section 5)?

        With tls-ids: a new remote tls-id.  A peer without tls-id (Chrome): the
        ALG's ``reuse_association`` false on an access modify, once the stream
        had the peer's fingerprints (ICE restart, new certificate); a stream
        without them yet keeps its held early ClientHello (SRTP-9).  The reset
        forgets the old fingerprints, so the modify that brings the new ones
        (the answer to an AGW re-offer) does not reset again.
        """
        leg = stream.access
        if spec.reuse_association or leg is None:
            return False
        if spec.remote_tls_id and stream.remote_tls_id:
            return spec.remote_tls_id != stream.remote_tls_id
        if spec.remote_tls_id or stream.remote_tls_id or spec.access is None:
            return False
        return bool(leg.spec.remote_fingerprints)

    async def _release(self, request: IqRequest, dialog: Dialog) -> IqReply:
        ids = list(request.release_streams) + [s.stream_id for s in request.streams]
        if ids:
            for stream_id in ids:
                stream = dialog.streams.pop(stream_id, None)
                if stream is not None:
                    self._close_stream(stream)
        if not ids or not dialog.streams:
            for stream in dialog.streams.values():
                self._close_stream(stream)
            dialog.streams.clear()
            for transport in list(dialog.transports.values()):
                self._close_transport(dialog, transport)
            del self.dialogs[dialog.id]
            self.pending.released(dialog.id)
            if self.fence is not None:
                self.fence.released(dialog.id)
            self._wake_writer()
            self.metrics.sessions_active.set(len(self.dialogs))
        else:
            self.changed(dialog)
        return IqReply(request.dialog, request.transaction)

    def _reply(self, request: IqRequest, streams: list[Stream]) -> IqReply:
        # What the SDP carries (c=, ICE candidates): the advertised address behind a NAT.
        dialog = self.dialogs.get(request.dialog)
        home = dialog.home if dialog is not None and dialog.home is not None else takeover.Home.own(self.config)
        a, c = home.access_sdp, home.core_sdp
        held = dialog.transports if dialog is not None else {}
        transports = [held[t.transport_id].reply(a) for t in request.transports if t.transport_id in held]
        return IqReply(request.dialog, request.transaction, streams=[s.reply(a, c) for s in streams],
                       transports=transports)

    def _close_stream(self, stream: Stream) -> None:
        if stream.access is not None:
            self._close_access(stream.access)
        if stream.core is not None:
            self._close_leg(stream.core, "core")

    def _close_access(self, leg) -> None:
        """An access termination: its ports, or its place on a transport (the transport stays)."""
        if getattr(leg, "transport", None) is not None:
            leg.release()
        self._close_leg(leg, "access")

    def _close_leg(self, leg, side: str) -> None:
        """Close one termination's channels and give their ports back."""
        pool = self.access_pool if side == "access" else self.core_pool
        for channel in leg.channels():
            channel.close()
            pool.release(channel.port)
        self.metrics.terminations[side].dec()

    async def _sweep(self) -> None:
        """Tell the ALG about expired consent even when no media is waiting to be sent."""
        period = min(1.0, self.config.mediad_consent_timeout / 4)
        while True:
            await asyncio.sleep(period)
            for dialog in list(self.dialogs.values()):
                for stream in list(dialog.streams.values()):
                    if stream.access is not None and stream.access.spec.ice_lite:
                        for channel in stream.access.channels():
                            channel.check_consent()
                for transport in list(dialog.transports.values()):
                    if transport.spec.ice_lite:
                        for channel in transport.channels():
                            channel.check_consent()

    def note_srtp(self, channel: AccessChannel) -> None:
        """A Python-path packet of ``channel`` showed a wrap or an SRTCP block (``mediad.proto.srtp``)."""
        self.srtp_noted.add(channel)

    async def _watch_rocs(self) -> None:
        """Write a dialog's document again when one of its SRTP streams' ROC or SRTCP index moved.

        RFC 3711 3.3.1: a stream's ROC advances when its sequence number wraps
        (every 65536 packets); a restored session must continue each stream at
        its exact ROC and start its SRTCP index past what it sent
        (``mediad.proto.srtp``).  The packets note the channels whose state moved
        (the native path in its ring, ``fastpath.Engine.noted``; the Python path
        through ``note_srtp``), so every ``ROC_READ_PERIOD`` only those are read:
        nothing when nothing moved.  A wrap is stored within about
        ``ROC_READ_PERIOD`` + ``WRITE_GATHER`` s; only a process dying inside that
        window after a wrap leaves a stale ROC behind.  When the ring overflowed
        (more notes in one period than it holds) every dialog is read, as before.
        """
        while True:
            await asyncio.sleep(ROC_READ_PERIOD)
            channels, self.srtp_noted = self.srtp_noted, set()
            native = self.engine.noted() if self.engine is not None else []
            if native is None:
                await self._read_all_rocs()
                continue
            channels.update(native)
            for channel in channels:
                dialog = channel.leg.dialog
                if self.dialogs.get(dialog.id) is dialog and channel.transport is not None \
                        and channel.rocs_advanced():
                    self.changed(dialog)

    async def _read_all_rocs(self) -> None:
        for n, dialog in enumerate(list(self.dialogs.values()), 1):
            if dialog.id in self.dialogs and self._rocs_advanced(dialog):
                self.changed(dialog)
            if n % ROC_READ_SLICE == 0:
                await asyncio.sleep(0)  # the packets waiting on this loop go first

    @staticmethod
    def _rocs_advanced(dialog: Dialog) -> bool:
        advanced = False
        for stream in dialog.streams.values():
            if isinstance(stream.access, AccessLeg):
                for channel in stream.access.channels():
                    advanced |= channel.rocs_advanced()
        for transport in dialog.transports.values():
            if transport.rtp is not None:
                advanced |= transport.rtp.rocs_advanced()
        return advanced

    async def _expire_idle(self) -> None:
        """Release the dialogs nothing refreshed for ``dialog_ttl`` (their Redis documents expire too).

        A dialog is refreshed by a RESERVE or MODIFY, and by authenticated traffic
        from the access side (SRTP/SRTCP, consent checks, DTLS application data)
        seen since its last refresh: an active dialog is refreshed, and its
        document written again with a new TTL, once half its TTL has passed.  A
        dialog that expires is released as a RELEASE would (ports, native path,
        Redis), counted and announced with a ``dialog_expired`` event.
        """
        ttl = float(self.config.redis_dialog_ttl)
        period = max(0.2, min(30.0, ttl / 8))
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for dialog in list(self.dialogs.values()):
                age = now - dialog.refreshed_at
                if age < ttl / 2:
                    continue
                if dialog.active():
                    dialog.refresh(now)
                    self.changed(dialog)
                elif age >= ttl:
                    self._expire(dialog, age)

    def _expire(self, dialog: Dialog, age: float) -> None:
        for stream in dialog.streams.values():
            self._close_stream(stream)
        dialog.streams.clear()
        for transport in list(dialog.transports.values()):
            self._close_transport(dialog, transport)
        del self.dialogs[dialog.id]
        self.pending.released(dialog.id)
        if self.fence is not None:
            self.fence.released(dialog.id)
        self._wake_writer()
        self.metrics.sessions_active.set(len(self.dialogs))
        self.metrics.dialogs_expired.inc()
        log.info("dialog %s expired: no request and no access traffic for %.0f s", dialog.id, age)
        event = {"dialog": dialog.id, "stream_id": None, "event": EVENT_DIALOG_EXPIRED, "reason": None,
                 "component": None, "time": round(time.time(), 3)}
        self.metrics.events.labels(EVENT_DIALOG_EXPIRED).inc()
        self._spawn(self._publish(event))

    async def _watch_redis(self) -> None:
        """Ping Redis every REDIS_PING_INTERVAL s: ``e2ae_mediad_redis_up``, a log line on each change."""
        if self.store is None:  # set by start()
            raise UsageError("mediad: Redis used before start()")
        up = True
        while True:
            await asyncio.sleep(REDIS_PING_INTERVAL)
            try:
                await self.store.ping()
            except StateError as exc:
                if up:
                    log.warning("Redis unreachable: %s", exc)
                up = False
            else:
                if not up:
                    log.info("Redis reachable again")
                up = True
            self.metrics.redis_up.set(1 if up else 0)

    # -- what the packet path tells us -------------------------------------------------
    def event(self, stream: Stream, name: str, reason: str | None, component: str, **extra: Any) -> None:
        dialog = stream.dialog
        event = {"dialog": dialog.id, "stream_id": stream.stream_id, "event": name, "reason": reason,
                 "component": component, "time": round(time.time(), 3), **extra}
        dialog.add_event(event)
        self.metrics.events.labels(name).inc()
        log.info("dialog %s stream %d %s: %s%s", dialog.id, stream.stream_id, component, name,
                 f" ({reason})" if reason else "",
                 extra={"dialog": dialog.id, "stream": stream.stream_id, "leg": "access", "component": component,
                        "event": name, "reason": reason})
        if dialog.id in self.dialogs:
            self._spawn(self._publish(event))
            self.changed(dialog)

    def changed(self, dialog: Dialog) -> None:
        """Write the dialog's document behind the caller (``WRITE_GATHER`` s later at the earliest)."""
        if dialog.id not in self.dialogs:
            return
        self.pending.changed(dialog.id)
        self._wake_writer()

    async def flush(self) -> None:
        """Return once everything changed or released so far is written (retried until it is)."""
        if not self.pending and not self.writing:
            return
        if self.loop is None:  # set by start()
            raise UsageError("mediad: the event loop used before start()")
        waiter = self.loop.create_future()
        self.flush_waiters.append(waiter)
        self._wake_writer()
        await waiter  # the caller's own: cancelling the caller cancels it, and the writer skips it

    def _wake_writer(self) -> None:
        if not self.writing and self.loop is not None:
            self.writing = True
            self._spawn(self._write())

    async def _write(self) -> None:
        """The one writer: batch after batch until nothing is pending; a failed batch again, later.

        It first gathers for ``WRITE_GATHER`` s: one pipeline then carries the changes
        of several calls instead of one per request.
        """
        if self.store is None:  # set by start()
            raise UsageError("mediad: Redis used before start()")
        delay = WRITE_RETRY_FIRST
        try:
            await asyncio.sleep(WRITE_GATHER)
            while self.pending or self.flush_waiters:
                waiters, self.flush_waiters = self.flush_waiters, []
                deletes, saves = self.pending.batch()
                documents = [(d, self._owned(self.dialogs[d])) for d in saves if d in self.dialogs]
                self.in_flight = len(deletes) + len(documents)
                try:
                    if deletes or documents:
                        await (self.fence or self.store).write(deletes, documents)
                except StateError as exc:  # Redis's doing: the same batch (or newer) again, later
                    self.pending.retry(deletes, [d for d, _ in documents])
                    self.flush_waiters[:0] = waiters  # they wait for this batch, written later
                    self.in_flight = 0
                    self.metrics.redis_errors.inc()
                    self.metrics.state_retries.inc()
                    (log.warning if delay == WRITE_RETRY_FIRST else log.debug)(
                        "%d dialog(s) not saved, %d not deleted, again in %.2f s (until written): %s",
                        len(documents), len(deletes), delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, WRITE_RETRY_MAX)
                    continue
                except Exception:  # a defect of ours: retrying would not help, the writer goes on
                    log.exception("%d dialog(s) not saved, %d not deleted", len(documents), len(deletes))
                else:
                    delay = WRITE_RETRY_FIRST
                    if deletes or documents:
                        self.metrics.state_written.inc(len(deletes) + len(documents))
                self.in_flight = 0
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        finally:
            self.in_flight = 0
            self.writing = False

    def _owned(self, dialog: Dialog) -> dict[str, Any]:
        """The dialog's document; in a pool it names its node (a restarted node reloads its own
        only) and the addresses its ports are bound on (a survivor binds them: mediad.takeover)."""
        document = dialog.document()
        if self.fence is not None:
            document = self.fence.stamp(dialog.id, document)  # {"node": ..., "epoch": ...} first
            document["home"] = (dialog.home or takeover.Home.own(self.config)).to_dict()
        return document

    def drop(self, dialog: Dialog) -> None:
        """Let go of a dialog another node owns now (mediad.fence): its sockets closed, its ports
        back, nothing written, deleted or announced."""
        for stream in dialog.streams.values():
            self._close_stream(stream)
        dialog.streams.clear()
        for transport in list(dialog.transports.values()):
            self._close_transport(dialog, transport)
        self.dialogs.pop(dialog.id, None)
        self.pending.forget(dialog.id)
        self.metrics.sessions_active.set(len(self.dialogs))

    async def _publish(self, event: dict[str, Any]) -> None:
        if self.store is None:  # set by start()
            raise UsageError("mediad: Redis used before start()")
        try:
            await (self.fence or self.store).publish(event)
        except StateError as exc:
            self.metrics.redis_errors.inc()
            log.warning("event not published: %s", exc)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- restart -------------------------------------------------------------------
    async def restore(self) -> None:
        """Reload every dialog in Redis of this node: same ports, SRTP from the stored keys."""
        if self.store is None or self.loop is None:  # set by start()
            raise UsageError("mediad: restore() before start()")
        for document, remaining in await self.store.load_all():
            if document.get("node", "") != self.config.mediad_node_id:
                continue  # another node's dialog (mediad.pool)
            await self.adopt(document, remaining)
        self.metrics.sessions_active.set(len(self.dialogs))

    async def adopt(self, document: dict[str, Any], remaining: float | None) -> Dialog | None:
        """One dialog from its document (``remaining``: its TTL left, in s), held from now on;
        None when it cannot be restored (logged).  A restart's."""
        if self.loop is None:  # set by start()
            raise UsageError("mediad: the event loop used before start()")
        try:
            return await self.adopt_or_raise(document, remaining)
        except takeover.ADOPT_ERRORS as exc:
            log.warning("dialog %s not restored: %s", str(document.get("dialog"))[:64], exc)
            return None

    async def adopt_or_raise(self, document: dict[str, Any], remaining: float | None,
                             new_core: bool = False, new_access: bool = False) -> Dialog:
        """:meth:`adopt`, raising NoPortsError when a port cannot be bound again and another of
        :data:`mediad.takeover.ADOPT_ERRORS` when the document cannot be read (a takeover tells them
        apart; mediad.takeover).  ``new_core``: its core sides get new ports on this node's core
        address (the edge re-INVITEs the core, plugin.reinvite).  ``new_access``: its access
        sides get new terminations on this node's access address, waiting for the WIC's answer
        to the edge's re-offer (:func:`mediad.takeover.fresh_access_spec`)."""
        if self.loop is None:  # set by start()
            raise UsageError("mediad: the event loop used before start()")
        home = takeover.Home.of(document, self.config)  # None: this node's own addresses
        with self.access_pool.adopting(home and home.access), self.core_pool.adopting(home and home.core):
            dialog = await self._restore_dialog(document, new_core, new_access)
        dialog.home = home
        if self.fence is not None:
            self.fence.adopted(dialog.id, document)
        # It expires when its document does.
        ttl = self.config.redis_dialog_ttl
        dialog.refreshed_at = self.loop.time() - max(0.0, ttl - remaining) if remaining is not None else \
            self.loop.time()
        self.dialogs[dialog.id] = dialog
        self.metrics.restored_sessions.inc()
        return dialog

    async def _restore_dialog(self, document: dict[str, Any], new_core: bool = False,
                              new_access: bool = False) -> Dialog:
        dialog = Dialog(self, str(document["dialog"]))
        dialog.version = int(document.get("version", 0))
        dialog.replies = dict(document.get("replies") or {})
        dialog.events = list(document.get("events") or [])
        streams: list[Stream] = []
        try:
            for tdoc in document.get("transports") or []:
                await (self._renew_transport if new_access else self._restore_transport)(dialog, tdoc)
            for sdoc in document["streams"]:
                spec = StreamSpec(int(sdoc["stream_id"]), str(sdoc["kind"]),
                                  local_tls_id=sdoc.get("local_tls_id"), remote_tls_id=sdoc.get("remote_tls_id"),
                                  transport_id=sdoc.get("transport_id"), mid=sdoc.get("mid"))
                if new_access:
                    spec = takeover.fresh_access_spec(spec)
                stream = Stream(dialog, spec)
                streams.append(stream)
                if sdoc.get("access"):
                    if new_access and stream.transport_id is None:
                        await self._renew_access(stream, sdoc["access"])
                    else:
                        await self._restore_access(stream, sdoc["access"])
                if sdoc.get("core"):
                    await self._restore_core(stream, sdoc["core"], new_core)
        except BaseException:
            for stream in streams:
                self._close_stream(stream)
            for transport in list(dialog.transports.values()):
                self._close_transport(dialog, transport)
            raise
        for stream in streams:
            dialog.streams[stream.stream_id] = stream
            if stream.access is not None:
                stream.access.configure()
        for transport in dialog.transports.values():
            transport.rebuild()
            transport.configure()
        return dialog

    async def _restore_transport(self, dialog: Dialog, tdoc: dict[str, Any]) -> None:
        """A transport from its document: the same port and ICE credentials, SRTP from the stored keys."""
        transport = Transport(dialog, TransportSpec.from_dict(tdoc["spec"]), (tdoc["ice_ufrag"], tdoc["ice_pwd"]))
        port = int(tdoc["port"])
        sock = self.access_pool.claim(port)
        transport.rtp = TransportChannel(transport, port, "rtp")
        dialog.transports[transport.transport_id] = transport
        self.metrics.terminations["access"].inc()
        await self.open_transport_channel(transport, sock)
        if offers_tcp(transport.spec.remote_candidates):  # listen again: the WIC reconnects
            await listen_tcp(transport.rtp, self.access_pool.bind_tcp(port))
        transport.restore(tdoc)

    async def _renew_transport(self, dialog: Dialog, tdoc: dict[str, Any]) -> None:
        """A transport whose old port is out of reach: a new port and ICE credentials, no
        association (a new handshake follows the edge's re-offer); the SSRCs the WIC sent on
        it stay learnt (its streams go on, RFC 3711 section 3.3.1: new keys, new contexts)."""
        spec = takeover.fresh_access_spec(TransportSpec.from_dict(tdoc["spec"]))
        transport = Transport(dialog, spec)
        transport.certificate = self.renewal_certificate()
        sock = self.access_pool.allocate(1)[0]
        transport.rtp = TransportChannel(transport, sock.getsockname()[1], "rtp")
        dialog.transports[transport.transport_id] = transport
        self.metrics.terminations["access"].inc()
        await self.open_transport_channel(transport, sock)
        for ssrc, key in (tdoc.get("learnt") or {}).items():
            transport.demux.incoming.setdefault(int(ssrc), int(key))

    async def _renew_access(self, stream: Stream, adoc: dict[str, Any]) -> None:
        """A stream's own access termination whose old ports are out of reach: as
        :meth:`_add_access` on this node's address, with the stored spec made fresh (what
        cannot move at all, data channels and TCP, never comes here: mediad.takeover.plan)."""
        await self._add_access(stream, takeover.fresh_access_spec(TerminationSpec.from_dict(adoc["spec"])),
                               self.renewal_certificate())

    async def _restore_access(self, stream: Stream, adoc: dict[str, Any]) -> None:
        if stream.transport_id is not None:
            return self._add_bundled(stream, TerminationSpec.from_dict(adoc["spec"]))
        if stream.kind in datachannel.KINDS:
            return await datachannel.restore_access(self, stream, adoc)
        leg = AccessLeg(stream, TerminationSpec.from_dict(adoc["spec"]), (adoc["ice_ufrag"], adoc["ice_pwd"]))
        stream.access = leg
        self.metrics.terminations["access"].inc()
        for component in ("rtp", "rtcp"):
            cdoc = adoc["channels"].get(component)
            if cdoc is None:
                continue
            sock = self.access_pool.claim(int(cdoc["port"]))
            channel = AccessChannel(leg, int(cdoc["port"]), component)
            setattr(leg, component, channel)
            await self.open_channel(channel, sock)
            if component == "rtp" and wants_tcp(stream.kind, leg.spec):  # listen again: the WIC reconnects
                await listen_tcp(channel, self.access_pool.bind_tcp(channel.port))
            channel.role = Role(cdoc["role"]) if cdoc.get("role") else None
            peer = tuple(cdoc["peer"]) if cdoc.get("peer") else None
            keys = stored_keys(cdoc)
            if keys is not None:
                channel.restore(keys, peer, stored_rocs(cdoc), stored_srtcp(cdoc))
            elif cdoc.get("state") == FAILED:
                channel.failure, channel.peer = cdoc.get("failure") or "protocol_error", peer

    async def _restore_core(self, stream: Stream, cdoc: dict[str, Any], new_ports: bool = False) -> None:
        if stream.kind in datachannel.KINDS:
            return await datachannel.restore_core(self, stream, cdoc)
        leg = CoreLeg(stream, TerminationSpec.from_dict(cdoc["spec"]))
        components = list(cdoc["ports"].items())
        fresh = self.core_pool.allocate(len(components), even=stream.kind != "t38") if new_ports else None
        stream.core = leg
        self.metrics.terminations["core"].inc()
        leg.latched = {k: tuple(v) for k, v in (cdoc.get("latched") or {}).items()}
        leg.refresh()
        for n, (component, port) in enumerate(components):
            sock = fresh[n] if fresh is not None else self.core_pool.claim(int(port))
            port = sock.getsockname()[1]
            channel = CoreChannel(leg, int(port), component)
            setattr(leg, component, channel)
            await self.open_channel(channel, sock)
