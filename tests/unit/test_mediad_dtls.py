"""mediad.proto.dtls: real DTLS 1.2 handshakes, in memory and against aiortc over UDP."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediad.proto import demux
from mediad.proto.certs import Certificate
from mediad.proto.dtls import (
    ApplicationData,
    Closed,
    DtlsSession,
    HandshakeComplete,
    HandshakeFailed,
    match_fingerprint,
    split_records,
)
from mediad.proto.srtp import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    PROFILES,
    SrtpTransformer,
)
from mediad.proto.stun import IceLiteResponder, random_ice_credentials
from sdp_rules.errors import UsageError
from iq import Fingerprint, Role

ALERT = 21
RTP = bytes.fromhex("80000001000000a0deadbeef") + bytes(range(160))
RTCP_RR = bytes.fromhex("81c90007deadbeef") + bytes(24)


@pytest.fixture(scope="module")
def cert_a() -> Certificate:
    return Certificate.generate("a")


@pytest.fixture(scope="module")
def cert_b() -> Certificate:
    return Certificate.generate("b")


def pump(
    a: DtlsSession,
    b: DtlsSession,
    now: float = 0.0,
    drop: Callable[[DtlsSession, bytes], bool] = lambda sender, datagram: False,
) -> list[bytes]:
    """Move datagrams between two sessions until both are quiet; returns all that moved."""
    moved: list[bytes] = []
    for _ in range(50):
        progress = False
        for src, dst in ((a, b), (b, a)):
            for datagram in src.datagrams_to_send():
                progress = True
                moved.append(datagram)
                if not drop(src, datagram):
                    dst.receive(datagram, now)
        if not progress:
            return moved
    raise AssertionError("sessions did not settle")


def events(session: DtlsSession) -> list:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def make_pair(client_cert, server_cert, *, srtp=True, client_fps="right", server_fps="right", **kwargs):
    def fps(value, cert):
        if value == "right":
            return [cert.fingerprint("sha-256")]
        return value

    client = DtlsSession(client_cert, Role.CLIENT, srtp=srtp,
                         remote_fingerprints=fps(client_fps, server_cert), **kwargs)
    server = DtlsSession(server_cert, Role.SERVER, srtp=srtp,
                         remote_fingerprints=fps(server_fps, client_cert), **kwargs)
    return client, server


# -- handshakes in memory ------------------------------------------------------


@pytest.mark.req("T38-8", "SRTP-8")
@pytest.mark.parametrize("profile", [AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32])
@pytest.mark.parametrize("agw_role", [Role.CLIENT, Role.SERVER])
def test_srtp_handshake_in_memory_keys_mirror(cert_a, cert_b, profile, agw_role):
    # cert_a is "the AGW", cert_b "the WIC": each role combination, each profile.
    agw = DtlsSession(cert_a, agw_role, srtp=True, remote_fingerprints=[cert_b.fingerprint()], srtp_profiles=[profile])
    other_role = Role.SERVER if agw_role is Role.CLIENT else Role.CLIENT
    wic = DtlsSession(cert_b, other_role, srtp=True, remote_fingerprints=[cert_a.fingerprint()])
    client = agw if agw_role is Role.CLIENT else wic
    assert agw.state == wic.state == "new"
    wic.start(0.0)
    agw.start(0.0)
    assert client.state == "handshaking"
    pump(agw, wic)

    (done_agw,) = events(agw)
    (done_wic,) = events(wic)
    assert isinstance(done_agw, HandshakeComplete) and isinstance(done_wic, HandshakeComplete)
    assert agw.state == wic.state == "established"
    assert done_agw.profile == done_wic.profile == profile
    assert done_agw.peer_fingerprint == cert_b.fingerprint()
    assert done_wic.peer_fingerprint == cert_a.fingerprint()
    ka, kw = done_agw.srtp_keys, done_wic.srtp_keys
    assert (ka.local_key, ka.local_salt) == (kw.remote_key, kw.remote_salt)
    assert (ka.remote_key, ka.remote_salt) == (kw.local_key, kw.local_salt)
    assert ka.local_key != ka.remote_key
    assert agw.timeout() is None and wic.timeout() is None

    t_agw, t_wic = SrtpTransformer(ka), SrtpTransformer(kw)
    assert t_wic.unprotect_rtp(t_agw.protect_rtp(RTP)) == RTP
    assert t_agw.unprotect_rtp(t_wic.protect_rtp(RTP)) == RTP
    assert t_wic.unprotect_rtcp(t_agw.protect_rtcp(RTCP_RR)) == RTCP_RR
    assert t_agw.unprotect_rtcp(t_wic.protect_rtcp(RTCP_RR)) == RTCP_RR


def test_srtp_profile_preference_is_servers_order(cert_a, cert_b):
    client = DtlsSession(cert_a, Role.CLIENT, srtp=True, remote_fingerprints=[cert_b.fingerprint()],
                         srtp_profiles=[AES_CM_128_HMAC_SHA1_32, AES_CM_128_HMAC_SHA1_80])
    server = DtlsSession(cert_b, Role.SERVER, srtp=True, remote_fingerprints=[cert_a.fingerprint()])
    client.start(0.0)
    pump(client, server)
    assert events(server)[0].profile == AES_CM_128_HMAC_SHA1_80
    assert events(client)[0].profile == AES_CM_128_HMAC_SHA1_80
    assert list(PROFILES)[:2] == [AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80]


@pytest.mark.req("T38-8")
@pytest.mark.parametrize("agw_role", [Role.CLIENT, Role.SERVER])
def test_udptl_over_dtls_application_data_both_ways(cert_a, cert_b, agw_role):
    client, server = make_pair(cert_a, cert_b, srtp=False)
    client.start(0.0)
    pump(client, server)
    done = events(client) + events(server)
    assert [type(e) for e in done] == [HandshakeComplete, HandshakeComplete]
    assert all(e.profile is None and e.srtp_keys is None for e in done)

    agw, wic = (client, server) if agw_role is Role.CLIENT else (server, client)
    udptl = [b"\x00\x00" + os.urandom(40), b"\x00\x01" + os.urandom(300)]
    for packet in udptl:
        wic.send_application_data(packet)
    pump(client, server)
    assert events(agw) == [ApplicationData(p) for p in udptl]
    agw.send_application_data(b"back")
    wire = agw.datagrams_to_send()
    assert b"back" not in b"".join(wire)  # encrypted on the wire
    for datagram in wire:
        wic.receive(datagram, 0.0)
    assert events(wic) == [ApplicationData(b"back")]


@pytest.mark.req("T38-9")
def test_one_certificate_serves_many_sessions(cert_a, cert_b):
    agw_cert = Certificate.generate()
    seen = []
    for peer_cert in (cert_a, cert_b, cert_a):
        client = DtlsSession(peer_cert, Role.CLIENT, srtp=True, remote_fingerprints=[agw_cert.fingerprint()])
        agw = DtlsSession(agw_cert, Role.SERVER, srtp=True, remote_fingerprints=[peer_cert.fingerprint()])
        client.start(0.0)
        pump(client, agw)
        (complete,) = events(client)
        assert isinstance(complete, HandshakeComplete)
        assert isinstance(events(agw)[0], HandshakeComplete)
        seen.append((complete.peer_fingerprint, complete.srtp_keys.local_key))
    assert {fp for fp, _ in seen} == {agw_cert.fingerprint()}
    assert len({key for _, key in seen}) == 3  # a fresh key per association


# -- authentication ----------------------------------------------------------------


@pytest.mark.req("T38-10", "SRTP-10")
@pytest.mark.parametrize("agw_role", [Role.CLIENT, Role.SERVER])
def test_fingerprint_mismatch_fails_with_alert(cert_a, cert_b, agw_role):
    wrong = [Certificate.generate().fingerprint()]
    if agw_role is Role.CLIENT:
        agw, wic = make_pair(cert_a, cert_b, client_fps=wrong)
    else:
        wic, agw = make_pair(cert_b, cert_a, server_fps=wrong)
    wic.start(0.0)
    agw.start(0.0)
    alerts_from_agw = []
    moved = pump(agw, wic, drop=lambda src, d: src is agw and d[0] == ALERT and not alerts_from_agw.append(d))
    assert alerts_from_agw, "the AGW sends a fatal alert"
    assert all(d[0] != 23 for d in moved)  # no application data ever
    (failed,) = events(agw)
    assert failed == HandshakeFailed("fingerprint_mismatch", failed.detail)
    assert agw.state == "failed" and agw.peer_fingerprint is None
    assert agw.timeout() is None
    with pytest.raises(UsageError):
        agw.send_application_data(b"x")
    # Deliver the alert: the WIC's handshake fails too, so it never reaches "established".
    for datagram in alerts_from_agw:
        wic.receive(datagram, 0.0)
    assert wic.state == "failed"
    assert [type(e) for e in events(wic)] == [HandshakeFailed]


def test_fingerprint_check_follows_rfc8122_strongest_hash(cert_a):
    fps = {h: cert_a.fingerprint(h) for h in ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512")}
    bogus = {h: Fingerprint(h, ":".join(["00"] * len(fp.value.split(":")))) for h, fp in fps.items()}
    for h, fp in fps.items():  # each hash function on its own
        assert match_fingerprint(cert_a.x509, [fp]) == fp
        assert match_fingerprint(cert_a.x509, [bogus[h]]) is None
    # The strongest offered hash decides; one of its set must match.
    assert match_fingerprint(cert_a.x509, [fps["sha-1"], fps["sha-256"]]) == fps["sha-256"]
    assert match_fingerprint(cert_a.x509, [bogus["sha-256"], fps["sha-256"]]) == fps["sha-256"]
    assert match_fingerprint(cert_a.x509, [fps["sha-1"], bogus["sha-256"]]) is None
    assert match_fingerprint(cert_a.x509, [Fingerprint("md5", "00:11")]) is None
    assert match_fingerprint(cert_a.x509, []) is None
    lower = Fingerprint("SHA-256", fps["sha-256"].value.lower())
    assert match_fingerprint(cert_a.x509, [lower]) == fps["sha-256"]


# -- early ClientHello (SRTP-9) -------------------------------------------------------


@pytest.mark.req("SRTP-9")
def test_early_client_hello_holds_until_fingerprints_then_completes(cert_a, cert_b):
    wic, agw = make_pair(cert_a, cert_b, server_fps=None)
    wic.start(0.0)
    pump(wic, agw)
    assert agw.state == "held"
    assert events(agw) == []  # no completion, no keys
    # The WIC thinks it is connected and sends data: kept, not delivered.
    (wic_complete,) = events(wic)
    assert isinstance(wic_complete, HandshakeComplete)
    wic.send_application_data(b"early")
    pump(wic, agw)
    assert events(agw) == []
    assert agw.timeout() == pytest.approx(30.0)  # the handshake deadline still runs

    agw.set_remote_fingerprints([cert_a.fingerprint("sha-384")], now=1.0)
    complete, data = events(agw)
    assert agw.state == "established"
    assert isinstance(complete, HandshakeComplete)
    assert complete.peer_fingerprint == cert_a.fingerprint("sha-384")
    assert data == ApplicationData(b"early")
    assert agw.timeout() is None
    t_agw = SrtpTransformer(complete.srtp_keys)
    t_wic = SrtpTransformer(wic_complete.srtp_keys)
    assert t_agw.unprotect_rtp(t_wic.protect_rtp(RTP)) == RTP
    assert t_wic.unprotect_rtcp(t_agw.protect_rtcp(RTCP_RR)) == RTCP_RR


@pytest.mark.req("SRTP-9", "SRTP-10")
def test_early_client_hello_then_wrong_fingerprints_fails(cert_a, cert_b):
    wic, agw = make_pair(cert_a, cert_b, server_fps=None)
    wic.start(0.0)
    pump(wic, agw)
    events(wic)
    wic.send_application_data(b"early")
    pump(wic, agw)
    assert agw.state == "held"
    agw.set_remote_fingerprints([cert_b.fingerprint()], now=1.0)  # not the WIC's certificate
    (failed,) = events(agw)
    assert failed.reason == "fingerprint_mismatch"
    assert agw.state == "failed"
    # close_notify goes to the WIC, which sees the association closed.
    pump(wic, agw)
    assert events(wic) == [Closed()]
    assert wic.state == "closed"


@pytest.mark.req("SRTP-9")
def test_fingerprints_arriving_mid_handshake_are_checked_in_it(cert_a, cert_b):
    wic, agw = make_pair(cert_a, cert_b, server_fps=None)
    wic.start(0.0)
    for datagram in wic.datagrams_to_send():  # only the ClientHello reaches the AGW
        agw.receive(datagram, 0.0)
    assert agw.state == "handshaking"
    agw.set_remote_fingerprints([Certificate.generate().fingerprint()], now=0.1)
    pump(wic, agw)
    (failed,) = events(agw)
    assert failed.reason == "fingerprint_mismatch"
    assert wic.state == "failed"  # it got the bad_certificate alert during the handshake


@pytest.mark.req("SRTP-9")
def test_held_session_times_out_without_fingerprints(cert_a, cert_b):
    wic, agw = make_pair(cert_a, cert_b, server_fps=None, handshake_timeout=5.0)
    wic.start(100.0)
    pump(wic, agw, now=100.0)
    assert agw.state == "held" and agw.timeout() == pytest.approx(105.0)
    agw.handle_timeout(104.9)
    assert agw.state == "held"
    agw.handle_timeout(105.0)
    (failed,) = events(agw)
    assert failed.reason == "timeout"
    assert agw.state == "failed"


# -- timers and loss ------------------------------------------------------------------


@pytest.mark.req("SRTP-10")
@pytest.mark.parametrize("agw_role", [Role.CLIENT, Role.SERVER])
def test_handshake_timeout(cert_a, cert_b, agw_role):
    client, server = make_pair(cert_a, cert_b, handshake_timeout=30.0)
    agw = client if agw_role is Role.CLIENT else server
    assert server.timeout() is None  # a server waits for a ClientHello without a deadline
    client.start(10.0)
    hello = client.datagrams_to_send()
    assert len(hello) == 1 and hello[0][0] == 22
    if agw is server:
        server.receive(hello[0], 10.0)
        assert server.datagrams_to_send()  # its flight, lost from here on
    first = agw.timeout()
    assert first is not None and 10.0 < first <= 40.0
    agw.handle_timeout(39.0)
    assert agw.state == "handshaking"
    agw.handle_timeout(40.0)
    assert agw.state == "failed"
    (failed,) = events(agw)
    assert failed.reason == "timeout"
    assert agw.timeout() is None
    agw.handle_timeout(50.0)  # nothing more
    assert events(agw) == []


@pytest.mark.req("T38-8")
def test_lost_first_flight_is_retransmitted(cert_a, cert_b):
    client, server = make_pair(cert_a, cert_b)
    start = time.monotonic()
    client.start(start)
    lost = client.datagrams_to_send()
    assert lost and client.timeout() == pytest.approx(start + 1.0, abs=0.2)
    client.handle_timeout(start)  # too early: nothing is sent again
    assert client.datagrams_to_send() == []
    time.sleep(max(0.0, client.timeout() - time.monotonic()) + 0.02)
    client.handle_timeout(time.monotonic())
    again = client.datagrams_to_send()
    assert again and again[0][0] == 22  # the ClientHello again
    for datagram in again:
        server.receive(datagram, time.monotonic())
    pump(client, server)
    assert client.state == server.state == "established"
    assert client.timeout() is None


@pytest.mark.req("T38-8")
def test_small_mtu_fragments_the_flights(cert_a, cert_b):
    client, server = make_pair(cert_a, cert_b, mtu=300)
    client.start(0.0)
    moved = pump(client, server)
    assert max(len(d) for d in moved) <= 300
    assert client.state == server.state == "established"
    # With the default MTU the flights are packed: several records per datagram.
    client, server = make_pair(cert_a, cert_b)
    client.start(0.0)
    moved = pump(client, server)
    assert max(len(d) for d in moved) <= 1200
    assert any(len(split_records(d)) > 1 for d in moved)


# -- robustness --------------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [b"", b"\x16", b"\x16\xfe\xfd" + bytes(5), os.urandom(7), b"\x80" + bytes(40),
                                     b"\x17\xfe\xfd" + bytes(8) + b"\x00\x05abc", b"\x16\x03\x03" + bytes(20)])
def test_garbage_is_dropped_and_counted(cert_a, cert_b, garbage):
    client, server = make_pair(cert_a, cert_b)
    server.receive(garbage, 0.0)
    assert server.dropped == 1 and server.state == "new"
    client.receive(garbage, 0.0)  # a client before start() expects nothing
    assert client.dropped == 1
    client.start(0.0)
    pump(client, server)
    assert client.state == server.state == "established"
    events(server)
    server.receive(garbage, 0.0)
    # Well-framed records that fail their MAC are dropped silently by DTLS (RFC 6347 4.1.2.7).
    bad_record = b"\x17\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x20" + os.urandom(32)
    server.receive(bad_record, 0.0)
    assert server.state == "established"
    assert events(server) == []
    assert server.datagrams_to_send() == []


def test_close_sends_close_notify(cert_a, cert_b):
    client, server = make_pair(cert_a, cert_b, srtp=False)
    client.start(0.0)
    pump(client, server)
    events(client), events(server)
    client.close()
    assert client.state == "closed"
    notify = client.datagrams_to_send()
    assert notify and notify[0][0] == ALERT
    server.receive(notify[0], 0.0)
    assert events(server) == [Closed()]
    assert server.state == "closed"
    server.receive(notify[0], 0.0)
    assert server.dropped == 1
    client.close()  # idempotent
    assert events(client) == []
    fresh = DtlsSession(cert_a, Role.SERVER, srtp=False)
    fresh.close()
    assert fresh.state == "closed" and fresh.datagrams_to_send() == []


def test_misuse_is_a_usage_error(cert_a):
    session = DtlsSession(cert_a, Role.SERVER, srtp=True)
    with pytest.raises(UsageError):
        session.send_application_data(b"too early")
    with pytest.raises(UsageError):
        DtlsSession(cert_a, Role.SERVER, srtp=True, srtp_profiles=["SRTP_NULL"])
    session.start(0.0)  # a server does not start by itself
    assert session.state == "new" and session.datagrams_to_send() == []


# -- interop with aiortc (an independent DTLS-SRTP driver) and aioice over real UDP -------


class _MiniAgw(asyncio.DatagramProtocol):
    """The AGW's access port in a few lines: RFC 7983 demux, ICE-lite, DTLS, SRTP."""

    def __init__(self, session: DtlsSession, responder: IceLiteResponder) -> None:
        self.session = session
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None
        self.srtp: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        kind = demux.classify(data)
        now = self.loop.time()
        if kind is demux.STUN:
            answer = self.responder.handle(data, addr, now)
            if answer:
                self.transport.sendto(answer, addr)
        elif kind is demux.DTLS:
            self.session.receive(data, now)
            self.flush()
        elif kind in (demux.RTP, demux.RTCP):
            self.srtp.append(data)

    def flush(self) -> None:
        for datagram in self.session.datagrams_to_send():
            self.transport.sendto(datagram, self.responder.selected_address)
        if self.timer:
            self.timer.cancel()
        when = self.session.timeout()
        if when is not None:
            self.timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.session.handle_timeout(self.loop.time())
        self.flush()


class _IceShim:
    """What aiortc's RTCDtlsTransport needs of an ICE transport, over an aioice Connection."""

    role = "controlling"

    def __init__(self, connection) -> None:
        self.connection = connection

    async def _recv(self) -> bytes:
        return await self.connection.recv()

    async def _send(self, data: bytes) -> None:
        await self.connection.send(data)


async def _aiortc_call(monkeypatch, agw_role: Role, check, *, aiortc_fingerprint_ok: bool = True) -> None:
    """Set up ICE (aioice, controlling) and DTLS (aiortc) against the mini AGW, then ``check``."""
    import aioice
    from aioice import Candidate
    from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, RTCDtlsParameters, RTCDtlsTransport

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    loop = asyncio.get_running_loop()
    agw_cert = Certificate.generate()
    wic_cert = RTCCertificate.generateCertificate()
    wic_fps = [Fingerprint.parse(f"{f.algorithm} {f.value}") for f in wic_cert.getFingerprints()]
    if not aiortc_fingerprint_ok:
        wic_fps = [Certificate.generate().fingerprint("sha-512")]
    ufrag, pwd = random_ice_credentials()
    session = DtlsSession(agw_cert, agw_role, srtp=True, remote_fingerprints=wic_fps, now=loop.time())
    responder = IceLiteResponder(ufrag, pwd)
    transport, agw = await loop.create_datagram_endpoint(
        lambda: _MiniAgw(session, responder), local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]

    ice = aioice.Connection(ice_controlling=True, use_ipv6=False)
    ice.remote_is_lite = True
    ice.remote_username, ice.remote_password = ufrag, pwd
    await ice.gather_candidates()
    await ice.add_remote_candidate(Candidate("1", 1, "udp", 2130706431, "127.0.0.1", port, "host"))
    await ice.add_remote_candidate(None)
    dtls = RTCDtlsTransport(_IceShim(ice), [wic_cert])
    try:
        await asyncio.wait_for(ice.connect(), 2.0)
        assert responder.nominated
        assert responder.selected_address == ("127.0.0.1", ice.local_candidates[0].port)
        dtls._set_role("server" if agw_role is Role.CLIENT else "client")
        params = RTCDtlsParameters(fingerprints=[RTCDtlsFingerprint("sha-256", agw_cert.fingerprint().value)])
        started = loop.time()
        wic_task = asyncio.ensure_future(dtls.start(params))
        session.start(loop.time())
        agw.flush()
        await asyncio.wait_for(wic_task, 3.0)
        for _ in range(100):
            if session.state not in ("new", "handshaking"):
                break
            await asyncio.sleep(0.01)
        check(session, dtls, loop.time() - started)
    finally:
        await dtls.stop()
        await ice.close()
        transport.close()


@pytest.mark.req("T38-8", "SRTP-8", "ICE-1", "MUX-1")
@pytest.mark.parametrize("agw_role", [Role.CLIENT, Role.SERVER])
def test_interop_with_aiortc_over_udp(monkeypatch, agw_role):
    def check(session, dtls, elapsed):
        assert dtls.state == "connected"
        assert session.state == "established", events(session)
        (complete,) = [e for e in events(session) if isinstance(e, HandshakeComplete)]
        assert complete.profile == AEAD_AES_128_GCM
        ours = SrtpTransformer(complete.srtp_keys)
        # aiortc -> AGW: its libsrtp session protects, ours unprotects.
        assert ours.unprotect_rtp(dtls._tx_srtp.protect(RTP)) == RTP
        assert ours.unprotect_rtcp(dtls._tx_srtp.protect_rtcp(RTCP_RR)) == RTCP_RR
        # AGW -> aiortc.
        assert dtls._rx_srtp.unprotect(ours.protect_rtp(RTP)) == RTP
        assert dtls._rx_srtp.unprotect_rtcp(ours.protect_rtcp(RTCP_RR)) == RTCP_RR
        assert elapsed < 1.0

    asyncio.run(_aiortc_call(monkeypatch, agw_role, check))


@pytest.mark.req("T38-10", "SRTP-10")
@pytest.mark.parametrize("agw_role", [Role.CLIENT, Role.SERVER])
def test_interop_with_aiortc_wrong_fingerprint(monkeypatch, agw_role):
    def check(session, dtls, elapsed):
        assert session.state == "failed"
        (failed,) = events(session)
        assert failed.reason == "fingerprint_mismatch"
        assert dtls.state == "failed"

    asyncio.run(_aiortc_call(monkeypatch, agw_role, check, aiortc_fingerprint_ok=False))




def test_a_fresh_server_starts_only_on_a_client_hello(cert_a, cert_b):
    client, server = make_pair(cert_a, cert_b, srtp=False)
    client.start(0.0)
    pump(client, server)
    client.send_application_data(b"stale")
    stale = client.datagrams_to_send()  # epoch-1 records of an earlier association
    fresh = DtlsSession(cert_b, Role.SERVER, srtp=False, remote_fingerprints=[cert_a.fingerprint()])
    for datagram in stale:
        fresh.receive(datagram, 0.0)
    assert fresh.state == "new" and fresh.dropped == len(stale) and fresh.timeout() is None
    assert fresh.datagrams_to_send() == [] and events(fresh) == []


@given(offset=st.integers(0, 400), patch=st.binary(min_size=1, max_size=6))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_mutated_client_hello_never_raises(cert_a, cert_b, offset, patch):
    client, server = make_pair(cert_a, cert_b)
    client.start(0.0)
    (hello,) = client.datagrams_to_send()
    mutated = hello[:offset] + patch + hello[offset + len(patch):]
    server.receive(mutated, 0.0)
    assert server.state in ("new", "handshaking", "failed")
    assert (server.state == "new") == (server.dropped == 1)
    if server.state == "failed":
        assert server.timeout() is None and [e.reason for e in events(server)] == ["protocol_error"]


@pytest.mark.req("SRTP-9")
def test_peer_closing_a_held_session_fails_it(cert_a, cert_b):
    wic, agw = make_pair(cert_a, cert_b, server_fps=None)
    wic.start(0.0)
    pump(wic, agw)
    assert agw.state == "held"
    wic.close()
    pump(wic, agw)
    assert agw.state == "failed"
    assert [e.reason for e in events(agw)] == ["protocol_error"]
    agw.set_remote_fingerprints([cert_a.fingerprint()], now=1.0)  # too late: no effect
    assert agw.state == "failed" and events(agw) == []


# -- a peer with an RSA certificate (baresip, many SIP UEs) -----------------------


def _rsa_dtls_server():
    """An independent pyOpenSSL DTLS 1.2 server whose certificate is RSA: only ECDHE-RSA suites."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    from OpenSSL import SSL

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa-ue")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(cert)
    ctx.use_privatekey(key)
    ctx.set_cipher_list(b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
    conn = SSL.Connection(ctx, None)
    conn.set_accept_state()
    digest = cert.fingerprint(hashes.SHA256())
    return conn, Fingerprint("sha-256", ":".join(f"{b:02X}" for b in digest))


@pytest.mark.req("SRTP-8", "T38-8")
def test_client_role_completes_with_an_rsa_certificate_peer(cert_a):
    """The AGW as DTLS client offers ECDHE-RSA suites too: a UE with an RSA certificate can answer."""
    from OpenSSL import SSL

    server, server_fp = _rsa_dtls_server()
    agw = DtlsSession(cert_a, Role.CLIENT, srtp=True, remote_fingerprints=[server_fp])
    agw.start(now=0.0)
    for _ in range(20):
        for datagram in agw.datagrams_to_send():
            server.bio_write(datagram)
        try:
            server.do_handshake()
        except SSL.WantReadError:
            pass
        while True:
            try:
                agw.receive(server.bio_read(65536), now=0.0)
            except SSL.WantReadError:
                break
        if agw.state == "established":
            break
    got = events(agw)
    assert [type(e).__name__ for e in got] == ["HandshakeComplete"]
    assert got[0].profile == "SRTP_AES128_CM_SHA1_80" and got[0].peer_fingerprint == server_fp
    assert server.get_cipher_name().startswith("ECDHE-RSA-")
