"""mediad.proto.srtp: libsrtp through pylibsrtp, checked against an independent RFC 3711 oracle."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mediad.proto.srtp import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    PROFILES,
    SrtpError,
    SrtpKeys,
    SrtpTransformer,
    exporter_length,
)
from sdp_rules.errors import E2aeError
from mediad.io import fastpath
from mediad.proto import srtp_roc

# RFC 3711 Appendix B.3 (key derivation test vectors).
B3_MASTER_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
B3_MASTER_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
B3_CIPHER_KEY = bytes.fromhex("C61E7A93744F39EE10734AFE3FF7A087")
B3_CIPHER_SALT = bytes.fromhex("30CBBC08863D8C85D49DB34A9AE1")
B3_AUTH_KEY_PREFIX = bytes.fromhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
# RFC 3711 Appendix B.2 (AES-CM keystream).
B2_SESSION_KEY = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
B2_SESSION_SALT = bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
B2_KEYSTREAM = bytes.fromhex(
    "E03EAD0935C95E80E166B16DD92B4EB4" "D23513162B02D0F72A43A2FE4A5F97AB" "41E95B3BB0A2E8DD477901E4FCA894C0"
)

RTP = bytes.fromhex("80 0f 12 34 de ca fb ad ca fe ba be") + bytes.fromhex("ab" * 100)
RTCP_SR = bytes.fromhex("80c80006cafebabe") + bytes(range(20))


# -- an independent oracle: RFC 3711 with `cryptography` AES-CTR and hashlib HMAC-SHA1 -----


def aes_cm(key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def kdf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 4.3.1/4.3.3 with key_derivation_rate 0: x = (label || r) XOR salt, IV = x * 2^16."""
    x = bytearray(master_salt)
    x[7] ^= label
    return aes_cm(master_key, bytes(x) + b"\x00\x00", bytes(length))


def packet_iv(session_salt: bytes, ssrc: int, index: int) -> bytes:
    """RFC 3711 4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)."""
    iv = int.from_bytes(session_salt, "big") << 16
    iv ^= ssrc << 64
    iv ^= index << 16
    return iv.to_bytes(16, "big")


def oracle_protect_rtp(master_key: bytes, master_salt: bytes, rtp: bytes, tag_len: int, roc: int = 0) -> bytes:
    k_e, k_a, k_s = kdf(master_key, master_salt, 0, 16), kdf(master_key, master_salt, 1, 20), kdf(
        master_key, master_salt, 2, 14)
    header, payload = rtp[:12], rtp[12:]
    seq = int.from_bytes(rtp[2:4], "big")
    ssrc = int.from_bytes(rtp[8:12], "big")
    encrypted = header + aes_cm(k_e, packet_iv(k_s, ssrc, (roc << 16) | seq), payload)
    tag = hmac.new(k_a, encrypted + roc.to_bytes(4, "big"), hashlib.sha1).digest()[:tag_len]
    return encrypted + tag


def oracle_protect_rtcp(master_key: bytes, master_salt: bytes, rtcp: bytes, srtcp_index: int) -> bytes:
    k_e, k_a, k_s = kdf(master_key, master_salt, 3, 16), kdf(master_key, master_salt, 4, 20), kdf(
        master_key, master_salt, 5, 14)
    ssrc = int.from_bytes(rtcp[4:8], "big")
    encrypted = rtcp[:8] + aes_cm(k_e, packet_iv(k_s, ssrc, srtcp_index), rtcp[8:])
    e_index = (0x80000000 | srtcp_index).to_bytes(4, "big")
    tag = hmac.new(k_a, encrypted + e_index, hashlib.sha1).digest()[:10]  # SRTCP: always 80 bits
    return encrypted + e_index + tag


def test_oracle_matches_rfc3711_appendix_b():
    assert kdf(B3_MASTER_KEY, B3_MASTER_SALT, 0, 16) == B3_CIPHER_KEY
    assert kdf(B3_MASTER_KEY, B3_MASTER_SALT, 2, 14) == B3_CIPHER_SALT
    assert kdf(B3_MASTER_KEY, B3_MASTER_SALT, 1, 20) == B3_AUTH_KEY_PREFIX
    assert aes_cm(B2_SESSION_KEY, B2_SESSION_SALT + b"\x00\x00", bytes(48)) == B2_KEYSTREAM


def keys_pair(profile: str, key: bytes | None = None, salt: bytes | None = None) -> tuple[SrtpKeys, SrtpKeys]:
    spec = PROFILES[profile]
    a_key, a_salt = key or os.urandom(spec.key_length), salt or os.urandom(spec.salt_length)
    b_key, b_salt = os.urandom(spec.key_length), os.urandom(spec.salt_length)
    return SrtpKeys(profile, a_key, a_salt, b_key, b_salt), SrtpKeys(profile, b_key, b_salt, a_key, a_salt)


# Both implementations: pylibsrtp (the Python packet path) and the native path's libsrtp contexts.
IMPLEMENTATIONS = [SrtpTransformer] + ([fastpath.FastSrtp] if fastpath.available() else [])


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: cls.__name__)
def impl(request):
    return request.param


def test_the_native_path_is_built_in_this_environment():
    """``deploy/e2ae setup`` builds it; without it the native tests would silently not run."""
    assert fastpath.available()


# -- known answers --------------------------------------------------------------------------


@pytest.mark.req("SRTP-8")
@pytest.mark.parametrize("profile, tag_len", [(AES_CM_128_HMAC_SHA1_80, 10), (AES_CM_128_HMAC_SHA1_32, 4)])
def test_rfc3711_known_answer_rtp_and_rtcp(profile, tag_len, impl):
    local, _ = keys_pair(profile, B3_MASTER_KEY, B3_MASTER_SALT)
    transformer = impl(local)
    srtp = transformer.protect_rtp(RTP)
    assert srtp == oracle_protect_rtp(B3_MASTER_KEY, B3_MASTER_SALT, RTP, tag_len)
    second = RTP[:2] + b"\x12\x35" + RTP[4:]
    assert transformer.protect_rtp(second) == oracle_protect_rtp(B3_MASTER_KEY, B3_MASTER_SALT, second, tag_len)

    srtcp = transformer.protect_rtcp(RTCP_SR)
    index = int.from_bytes(srtcp[len(RTCP_SR) : len(RTCP_SR) + 4], "big") & 0x7FFFFFFF
    assert index < 2
    assert srtcp == oracle_protect_rtcp(B3_MASTER_KEY, B3_MASTER_SALT, RTCP_SR, index)


@pytest.mark.req("SRTP-8")
def test_rfc3711_known_answer_unprotect_of_oracle_packets(impl):
    _, remote = keys_pair(AES_CM_128_HMAC_SHA1_80)
    # The far end (oracle) protects with remote's *remote* keys; we unprotect with ours.
    far_key, far_salt = remote.remote_key, remote.remote_salt
    transformer = impl(remote)
    assert transformer.unprotect_rtp(oracle_protect_rtp(far_key, far_salt, RTP, 10)) == RTP
    assert transformer.unprotect_rtcp(oracle_protect_rtcp(far_key, far_salt, RTCP_SR, 7)) == RTCP_SR


# -- round trips, tampering, replay ----------------------------------------------------------


@pytest.mark.req("SRTP-8")
@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("peer_impl", IMPLEMENTATIONS, ids=lambda cls: "with_" + cls.__name__)
def test_round_trip_tamper_and_replay(profile, impl, peer_impl):
    a_keys, b_keys = keys_pair(profile)
    a, b = impl(a_keys), peer_impl(b_keys)
    srtp = a.protect_rtp(RTP)
    assert srtp != RTP and len(srtp) == len(RTP) + PROFILES[profile].auth_tag_length
    assert b.unprotect_rtp(srtp) == RTP
    with pytest.raises(SrtpError) as replay:
        b.unprotect_rtp(srtp)
    assert replay.value.reason == "replay"

    later = a.protect_rtp(RTP[:2] + b"\x12\x36" + RTP[4:])
    tampered = bytearray(later)
    tampered[20] ^= 0x01
    with pytest.raises(SrtpError) as auth:
        b.unprotect_rtp(bytes(tampered))
    assert auth.value.reason == "auth_fail"
    assert isinstance(auth.value, E2aeError)
    assert b.unprotect_rtp(later)[12:] == RTP[12:]  # the genuine packet still passes

    srtcp = b.protect_rtcp(RTCP_SR)
    assert a.unprotect_rtcp(srtcp) == RTCP_SR
    with pytest.raises(SrtpError) as rtcp_replay:
        a.unprotect_rtcp(srtcp)
    assert rtcp_replay.value.reason == "replay"
    bad = bytearray(b.protect_rtcp(RTCP_SR))
    bad[-1] ^= 0x80
    with pytest.raises(SrtpError) as rtcp_auth:
        a.unprotect_rtcp(bytes(bad))
    assert rtcp_auth.value.reason == "auth_fail"


@pytest.mark.parametrize("packet", [b"", b"\x80", b"\x80\x00\x00\x01", bytes(3000)])
def test_native_bad_packets_raise_srtp_error(packet):
    a_keys, b_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    b = fastpath.FastSrtp(b_keys)
    for method in (b.unprotect_rtp, b.unprotect_rtcp):
        with pytest.raises(SrtpError) as err:
            method(packet)
        assert err.value.reason in ("bad_packet", "auth_fail")


@pytest.mark.parametrize("packet", [b"", b"\x80", b"\x80\x00\x00\x01", bytes(3000)])
def test_bad_packets_raise_srtp_error(packet):
    a_keys, b_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    b = SrtpTransformer(b_keys)
    for method in (b.unprotect_rtp, b.unprotect_rtcp):
        with pytest.raises(SrtpError) as err:
            method(packet)
        assert err.value.reason in ("bad_packet", "auth_fail")
    with pytest.raises(SrtpError) as too_long:
        b.protect_rtp(bytes.fromhex("80000001000000a0deadbeef") + bytes(1500))
    assert too_long.value.reason == "bad_packet"


def test_outbound_repeat_is_allowed_for_a_relay(impl):
    a_keys, b_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    a = impl(a_keys)
    assert a.protect_rtp(RTP) == a.protect_rtp(RTP)


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.req("SRTP-8")
@pytest.mark.parametrize("profile", list(PROFILES))
def test_from_exporter_uses_rfc5764_layout(profile):
    spec = PROFILES[profile]
    k, s = spec.key_length, spec.salt_length
    material = bytes(range(exporter_length(profile)))
    client_key, server_key = material[:k], material[k : 2 * k]
    client_salt, server_salt = material[2 * k : 2 * k + s], material[2 * k + s :]
    client = SrtpKeys.from_exporter(material, profile, is_client=True)
    server = SrtpKeys.from_exporter(material, profile, is_client=False)
    assert (client.local_key, client.local_salt, client.remote_key, client.remote_salt) == (
        client_key, client_salt, server_key, server_salt)
    assert (server.local_key, server.local_salt, server.remote_key, server.remote_salt) == (
        server_key, server_salt, client_key, client_salt)
    assert len(material) == {16 + 14: 60, 16 + 12: 56}[k + s]
    with pytest.raises(ValueError):
        SrtpKeys.from_exporter(material[:-1], profile, is_client=True)


def test_keys_round_trip_and_never_show():
    keys, _ = keys_pair(AEAD_AES_128_GCM)
    data = keys.to_dict()
    assert SrtpKeys.from_dict(data) == keys
    assert set(data) == {"profile", "local_key", "local_salt", "remote_key", "remote_salt"}
    assert all(isinstance(v, str) for v in data.values())
    shown = repr(keys) + str(keys) + repr(SrtpTransformer(keys))
    for secret in (keys.local_key, keys.remote_key, keys.local_salt, keys.remote_salt):
        assert secret.hex() not in shown.lower() and data["local_key"] not in shown and secret.hex()[:8] not in shown
    for broken in ({**data, "local_key": "!!"}, {**data, "profile": "SRTP_NULL"},
                   {k: v for k, v in data.items() if k != "remote_salt"}, {**data, "local_salt": data["local_key"]}):
        with pytest.raises(ValueError) as err:
            SrtpKeys.from_dict(broken)
        assert data["local_key"] not in str(err.value)


def test_profiles_offered():
    assert AES_CM_128_HMAC_SHA1_80 in PROFILES and AES_CM_128_HMAC_SHA1_32 in PROFILES
    assert PROFILES[AES_CM_128_HMAC_SHA1_32].auth_tag_length == 4
    if AEAD_AES_128_GCM in PROFILES:
        assert (PROFILES[AEAD_AES_128_GCM].key_length, PROFILES[AEAD_AES_128_GCM].salt_length) == (16, 12)


def test_supported_profiles_table_as_built():
    """The table is built at import: checked here as the module builds it (RFC 5764 4.1.2, RFC 7714 14.2)."""
    from pylibsrtp import Policy

    from mediad.proto.srtp import SrtpProfile, _supported_profiles

    assert _supported_profiles() == {
        AEAD_AES_128_GCM: SrtpProfile(AEAD_AES_128_GCM, Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12, 16, 4),
        AES_CM_128_HMAC_SHA1_80: SrtpProfile(AES_CM_128_HMAC_SHA1_80, Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14, 10,
                                             14),
        AES_CM_128_HMAC_SHA1_32: SrtpProfile(AES_CM_128_HMAC_SHA1_32, Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14, 4,
                                             14),
    } == PROFILES
    assert list(_supported_profiles()) == [AEAD_AES_128_GCM, AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32]


def test_key_errors_name_the_field_and_the_size():
    good = dict(local_key=bytes(16), local_salt=bytes(14), remote_key=bytes(16), remote_salt=bytes(14))
    for name, size in (("local_key", 16), ("local_salt", 14), ("remote_key", 16), ("remote_salt", 14)):
        with pytest.raises(ValueError) as err:
            SrtpKeys(AES_CM_128_HMAC_SHA1_80, **{**good, name: bytes(size - 1)})
        assert str(err.value) == f"{name} must be {size} bytes for {AES_CM_128_HMAC_SHA1_80}"
    with pytest.raises(ValueError) as err:
        SrtpKeys.from_exporter(bytes(59), AES_CM_128_HMAC_SHA1_80, is_client=True)
    assert str(err.value) == f"{AES_CM_128_HMAC_SHA1_80} needs 60 bytes of keying material"
    with pytest.raises(ValueError) as err:
        exporter_length("SRTP_NULL_NULL")
    assert str(err.value) == "unsupported SRTP protection profile 'SRTP_NULL_NULL'"


def test_stored_keys_must_be_strict_base64():
    keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    data = keys.to_dict()
    with pytest.raises(ValueError) as err:
        SrtpKeys.from_dict({**data, "local_key": data["local_key"][:-2] + "*" + data["local_key"][-1:]})
    assert str(err.value) == "malformed SRTP keys: Error"
    with pytest.raises(ValueError) as err:
        SrtpKeys.from_dict({k: v for k, v in data.items() if k != "profile"})
    assert str(err.value) == "malformed SRTP keys: KeyError"


def test_transformer_names_its_profile_and_errors_carry_their_reason():
    keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    transformer = SrtpTransformer(keys)
    assert transformer.profile == AES_CM_128_HMAC_SHA1_80
    with pytest.raises(SrtpError) as err:
        transformer.protect_rtcp(b"\x80")
    assert err.value.reason == "bad_packet" and str(err.value) == "bad_packet"


def test_the_replay_window_is_1024_packets():
    """RFC 3711 3.3.2: a packet 1023 behind the newest is still taken, 1024 behind is a replay (too old)."""
    a_keys, b_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    a, b = SrtpTransformer(a_keys), SrtpTransformer(b_keys)

    def packet(seq: int) -> bytes:
        return a.protect_rtp(bytes.fromhex("8000") + seq.to_bytes(2, "big") + bytes.fromhex("000000a0deadbeef") + b"x")

    old, older = packet(1), packet(0)
    b.unprotect_rtp(packet(1024))
    b.unprotect_rtp(old)  # 1023 behind
    with pytest.raises(SrtpError) as err:
        b.unprotect_rtp(older)  # 1024 behind
    assert err.value.reason == "replay"


# -- rollover counters across a restart (RFC 3711 section 3.3.1) ----------------------------

SSRC = 0xDEADBEEF


def rtp(seq: int, ssrc: int = SSRC) -> bytes:
    return bytes.fromhex("8000") + seq.to_bytes(2, "big") + bytes(4) + ssrc.to_bytes(4, "big") + b"audio" * 32


def wrap(transformer: SrtpTransformer, protect: bool, peer: SrtpTransformer | None = None) -> int:
    """Run SSRC's stream across a sequence-number wrap (65530..65535, 0..3); the next seq."""
    for seq in [*range(65530, 65536), *range(4)]:
        if protect:
            transformer.protect_rtp(rtp(seq))
        else:
            transformer.unprotect_rtp(peer.protect_rtp(rtp(seq)))
    return 4


@pytest.mark.parametrize("seq", [4, 40000])  # lower half, and upper half (no ROC-1 guess)
def test_a_restored_sender_continues_with_the_stored_roc(impl, seq):
    keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    before = impl(keys)
    wrap(before, protect=True)
    assert before.refresh_rocs([SSRC], []) is True
    assert before.refresh_rocs([SSRC], []) is False  # unchanged since the last read
    stored = before.rocs()
    assert stored == {"tx": {str(SSRC): 1}, "rx": {}}
    expected = oracle_protect_rtp(keys.local_key, keys.local_salt, rtp(seq), 10, roc=1)
    after = impl(keys)
    after.restore_rocs(stored)
    assert after.protect_rtp(rtp(seq)) == expected
    assert impl(keys).protect_rtp(rtp(seq)) != expected  # without the ROC: index seq, not 65536 + seq


def test_a_restored_receiver_continues_with_the_stored_roc(impl):
    a_keys, b_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    peer, before = SrtpTransformer(a_keys), impl(b_keys)
    seq = wrap(before, protect=False, peer=peer)
    assert before.refresh_rocs([], [SSRC, 1234]) is True  # 1234: no such stream, skipped
    stored = before.rocs()
    assert stored == {"tx": {}, "rx": {str(SSRC): 1}}
    packets = [peer.protect_rtp(rtp(s)) for s in (seq, seq + 1)]
    fresh = impl(b_keys)
    with pytest.raises(SrtpError) as err:
        fresh.unprotect_rtp(packets[0])
    assert err.value.reason == "auth_fail"
    after = impl(b_keys)
    after.restore_rocs(stored)
    assert [after.unprotect_rtp(p) for p in packets] == [rtp(seq), rtp(seq + 1)]


def test_a_restored_roc_stands_until_the_stream_moves_past_it(impl):
    """libsrtp reads ROC 0 for a restored stream until its first packet: the stored value must stay."""
    keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    after = impl(keys)
    after.restore_rocs({"tx": {str(SSRC): 7}})
    assert after.refresh_rocs([SSRC], []) is False
    assert after.rocs() == {"tx": {str(SSRC): 7}, "rx": {}}
    after.protect_rtp(rtp(65535))
    after.protect_rtp(rtp(0))
    assert after.refresh_rocs([SSRC], []) is True
    assert after.rocs()["tx"] == {str(SSRC): 8}


@pytest.mark.parametrize("stored", [None, {}, {"tx": {}, "rx": {}}, {"tx": {str(SSRC): 0}}])
def test_a_document_without_rocs_restores_roc_0(impl, stored):
    keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    after = impl(keys)
    after.restore_rocs(stored)
    assert after.protect_rtp(rtp(5)) == oracle_protect_rtp(keys.local_key, keys.local_salt, rtp(5), 10, roc=0)
    assert after.rocs() == {"tx": {}, "rx": {}}


@pytest.mark.parametrize("stored", [{"up": {"1": 1}}, {"tx": {"x": 1}}, {"tx": {"1": -1}}, {"tx": {"1": 2**32}},
                                    {"tx": [1]}, {"rx": {str(2**32): 1}},
                                    {"tx": {"1": float("inf")}}, {"rx": {"1": float("nan")}}])  # JSON 1e999, NaN
def test_malformed_rocs_are_refused(stored):
    keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    with pytest.raises(ValueError, match="malformed SRTP rollover counters"):
        SrtpTransformer(keys).restore_rocs(stored)


# -- SRTCP index across a restart (RFC 3711 sections 3.4, 9.2) --------------------------------

def rtcp(ssrc: int = SSRC) -> bytes:
    return bytes([0x80, 201, 0, 1]) + ssrc.to_bytes(4, "big")


def srtcp_index(profile: str, packet: bytes) -> int:
    at = len(packet) - PROFILES[profile].srtcp_index_at
    return int.from_bytes(packet[at:at + 4], "big") & 0x7FFFFFFF


def test_srtcp_layout_of_this_libsrtp_is_understood():
    """The import-time check passed: the native SRTCP index can be read and set."""
    from mediad.proto import srtp_roc

    assert srtp_roc.SRTCP_INDEX


@pytest.mark.parametrize("profile", list(PROFILES))
def test_the_srtcp_index_is_where_the_profile_says(impl, profile):
    keys, peer_keys = keys_pair(profile)
    sender, peer = impl(keys), SrtpTransformer(peer_keys)
    for expected in (1, 2, 3):
        packet = sender.protect_rtcp(rtcp())
        assert srtcp_index(profile, packet) == expected
        assert peer.unprotect_rtcp(packet) == rtcp()


@pytest.mark.parametrize("profile", list(PROFILES))
def test_a_restored_sender_starts_its_srtcp_index_past_every_index_sent(impl, profile):
    """Without the margin the restored sender sends index 1 again: keystream reuse, dropped as a replay."""
    from mediad.proto.srtp import SRTCP_MARGIN

    keys, peer_keys = keys_pair(profile)
    before, peer = impl(keys), SrtpTransformer(peer_keys)
    for _ in range(5):
        peer.unprotect_rtcp(before.protect_rtcp(rtcp()))
    assert before.refresh_srtcp([SSRC, 1234]) is False  # read (1234: nothing sent yet), below the first block
    stored = before.srtcp_indices()
    assert stored == {str(SSRC): 5, "1234": 0}
    for _ in range(3):  # sent after the last write: covered by the margin
        peer.unprotect_rtcp(before.protect_rtcp(rtcp()))
    after = impl(keys)
    after.restore_srtcp(stored)
    packet = after.protect_rtcp(rtcp())
    assert srtcp_index(profile, packet) == 5 + SRTCP_MARGIN + 1
    assert peer.unprotect_rtcp(packet) == rtcp()  # the peer's replay check takes it
    assert srtcp_index(profile, after.protect_rtcp(rtcp(1234))) == SRTCP_MARGIN + 1
    assert after.srtcp_indices()[str(SSRC)] == 5 + SRTCP_MARGIN
    fresh = impl(keys).protect_rtcp(rtcp())  # what a restore without the index sent
    with pytest.raises(SrtpError) as err:
        peer.unprotect_rtcp(fresh)
    assert err.value.reason == "replay"


@pytest.mark.parametrize("stored", [None, {str(SSRC): 3}])
def test_an_ssrc_admitted_on_a_restored_session_starts_past_the_margin(impl, stored):
    """The document may not name an SSRC admitted after its last write: it may have sent up to a block."""
    from mediad.proto.srtp import SRTCP_MARGIN

    keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    restored, fresh = impl(keys), impl(keys)
    restored.restore_srtcp(stored)
    for transformer in (restored, fresh):
        transformer.admit(1234)
    assert srtcp_index(AES_CM_128_HMAC_SHA1_80, restored.protect_rtcp(rtcp(1234))) == SRTCP_MARGIN + 1
    assert srtcp_index(AES_CM_128_HMAC_SHA1_80, fresh.protect_rtcp(rtcp(1234))) == 1  # a new session: from 1
    assert restored.srtcp_indices()["1234"] == SRTCP_MARGIN


@pytest.mark.parametrize("stored", [{"x": 1}, {"1": -1}, {"1": 2**31}, [1], {str(2**32): 1}])
def test_malformed_srtcp_indices_are_refused(stored):
    keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    with pytest.raises(ValueError, match="malformed SRTCP indices"):
        SrtpTransformer(keys).restore_srtcp(stored)


# -- notes: the packets say when a ROC or an SRTCP index is to be stored ----------------------

def test_a_wrap_is_noted_in_both_directions(impl):
    keys, peer_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    mine, peer = impl(keys), SrtpTransformer(peer_keys)
    notes = []
    mine.note = lambda: notes.append(1)
    for seq in range(65000, 65536):
        mine.protect_rtp(rtp(seq))
        mine.unprotect_rtp(peer.protect_rtp(rtp(seq, 0xA1)))
    assert notes == []  # nothing wrapped
    mine.protect_rtp(rtp(3))
    assert len(notes) == 1
    mine.unprotect_rtp(peer.protect_rtp(rtp(3, 0xA1)))
    assert len(notes) == 2
    for seq in range(256, 65000):  # the rest of the cycle: nothing
        mine.protect_rtp(rtp(seq))
    assert len(notes) == 2


def test_every_srtcp_block_is_noted_and_asks_for_a_write(impl):
    from mediad.proto.srtp import SRTCP_BLOCK

    keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    mine = impl(keys)
    notes = []
    mine.note = lambda: notes.append(1)
    for _ in range(SRTCP_BLOCK - 1):
        mine.protect_rtcp(rtcp())
    assert notes == [] and mine.refresh_srtcp([SSRC]) is False
    mine.protect_rtcp(rtcp())
    assert len(notes) == 1 and mine.refresh_srtcp([SSRC]) is True
    assert mine.srtcp_indices() == {str(SSRC): SRTCP_BLOCK}
    for _ in range(SRTCP_BLOCK + 5):
        mine.protect_rtcp(rtcp())
    assert len(notes) == 2 and mine.refresh_srtcp([SSRC]) is True and mine.refresh_srtcp([SSRC]) is False


def test_the_srtcp_layout_is_recognised_here_and_an_unknown_one_is_told(monkeypatch):
    """The pinned pylibsrtp's libsrtp has the declared stream layout; without it mediad warns at start."""
    from mediad.proto import srtp_roc

    assert srtp_roc.SRTCP_INDEX and srtp_roc.layout_warning() is None
    monkeypatch.setattr(srtp_roc, "SRTCP_INDEX", False)
    assert "SRTCP indices restart at 1" in srtp_roc.layout_warning()


# -- the inbound SSRC cap (a peer with the keys must not grow libsrtp's streams without bound) ----


def sr(ssrc: int) -> bytes:
    return bytes.fromhex("80c80006") + ssrc.to_bytes(4, "big") + bytes(20)


def streams(transformer: SrtpTransformer, ssrcs) -> list[int]:
    """The SSRCs of ``ssrcs`` that have a libsrtp inbound stream."""
    return [ssrc for ssrc in ssrcs if srtp_roc.get_stream_roc(transformer._rx, ssrc) is not None]


def test_inbound_ssrcs_past_the_cap_are_refused_before_libsrtp(impl):
    ours_keys, theirs_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    ours, theirs = impl(ours_keys, max_inbound=3), SrtpTransformer(theirs_keys)
    for ssrc in (1, 2):  # an SRTP SSRC and an SRTCP sender SSRC each take a slot
        assert ours.unprotect_rtp(theirs.protect_rtp(rtp(1, ssrc))) == rtp(1, ssrc)
    assert ours.unprotect_rtcp(theirs.protect_rtcp(sr(3))) == sr(3)
    for ssrc in range(4, 40):
        for packet in (theirs.protect_rtp(rtp(1, ssrc)), theirs.protect_rtcp(sr(ssrc))):
            with pytest.raises(SrtpError) as info:
                (ours.unprotect_rtcp if packet[1] == 200 else ours.unprotect_rtp)(packet)
            assert info.value.reason == "inbound_ssrc_cap"
    assert streams(ours, range(1, 40)) == [1, 2, 3] and ours.inbound_ssrcs() == [1, 2, 3]
    assert ours.unprotect_rtp(theirs.protect_rtp(rtp(2, 3))) == rtp(2, 3)  # an admitted SSRC goes on


def test_forged_packets_of_new_ssrcs_take_no_slot(impl):
    """An off-path sender who knows the 5-tuple but not the keys cannot fill the table."""
    ours_keys, theirs_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    forger = SrtpTransformer(keys_pair(AES_CM_128_HMAC_SHA1_80)[1])
    ours, theirs = impl(ours_keys, max_inbound=2), SrtpTransformer(theirs_keys)
    for ssrc in range(100, 120):
        with pytest.raises(SrtpError) as info:
            ours.unprotect_rtp(forger.protect_rtp(rtp(1, ssrc)))
        assert info.value.reason == "auth_fail"
    assert ours.inbound_ssrcs() == [] and streams(ours, range(100, 120)) == []
    for ssrc in (7, 8):
        assert ours.unprotect_rtp(theirs.protect_rtp(rtp(1, ssrc))) == rtp(1, ssrc)


def test_a_retired_ssrc_frees_its_slot_and_stream_and_is_refused(impl):
    """RTCP BYE: the slot and libsrtp's stream are freed; the SSRC's old packets must not authenticate again."""
    ours_keys, theirs_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    ours, theirs = impl(ours_keys, max_inbound=2), SrtpTransformer(theirs_keys)
    old = theirs.protect_rtp(rtp(1, 1))
    ours.unprotect_rtp(old)
    ours.unprotect_rtp(theirs.protect_rtp(rtp(1, 2)))
    with pytest.raises(SrtpError, match="inbound_ssrc_cap"):
        ours.unprotect_rtp(theirs.protect_rtp(rtp(1, 3)))
    assert ours.retire(1) and not ours.retire(1) and not ours.retire(99)
    assert streams(ours, (1, 2)) == [2]
    with pytest.raises(SrtpError) as info:
        ours.unprotect_rtp(old)  # a replay of the retired stream (a new libsrtp stream would take it)
    assert info.value.reason == "retired_ssrc"
    assert ours.unprotect_rtp(theirs.protect_rtp(rtp(1, 3))) == rtp(1, 3)  # the freed slot
    assert ours.inbound_ssrcs() == [2, 3]


def test_retired_ssrcs_are_remembered_up_to_the_table_size(impl):
    ours_keys, theirs_keys = keys_pair(AES_CM_128_HMAC_SHA1_80)
    ours, theirs = impl(ours_keys, max_inbound=1), SrtpTransformer(theirs_keys)
    for ssrc in range(1, 66):
        ours.unprotect_rtp(theirs.protect_rtp(rtp(1, ssrc)))
        assert ours.retire(ssrc)
    assert not ours.is_retired(1) and all(ours.is_retired(ssrc) for ssrc in range(2, 66))
    assert ours.unprotect_rtp(theirs.protect_rtp(rtp(9, 1))) == rtp(9, 1)


def test_a_restored_session_admits_the_streams_it_created(impl):
    ours_keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    ours = impl(ours_keys, max_inbound=2)
    ours.restore_rocs({"rx": {"5": 1, "6": 2, "7": 3}, "tx": {"8": 1}})
    assert ours.inbound_ssrcs() == [5, 6] and streams(ours, (5, 6, 7)) == [5, 6]


def test_the_inbound_cap_is_bounded_by_the_table():
    ours_keys, _ = keys_pair(AES_CM_128_HMAC_SHA1_80)
    for bad in (0, 65):
        with pytest.raises(ValueError):
            SrtpTransformer(ours_keys, max_inbound=bad)
