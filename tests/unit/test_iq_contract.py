"""The Iq contract (package ``iq``): messages, their JSON form, old and new shapes.

Transports (BUNDLE, RFC 9143) are new; a request or reply written before they
existed must still parse and mean the same.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from iq import (
    Command,
    Fingerprint,
    IqReply,
    IqRequest,
    Role,
    Side,
    StreamReply,
    StreamSpec,
    TerminationReply,
    TerminationSpec,
    TransportReply,
    TransportSpec,
)

FP = Fingerprint("sha-256", ":".join(["AB"] * 32))


def _bundled_request() -> IqRequest:
    transport = TransportSpec(
        transport_id=0, remote_address="127.0.0.1", remote_port=43629, ice_lite=True,
        remote_ice_ufrag="MKQO", remote_ice_pwd="9ju6t+v9irXemIO4O+ViI8jP",
        remote_candidates=["3683871575 1 udp 2122260223 127.0.0.1 43629 typ host"],
        remote_fingerprints=[FP], local_fingerprint_request=True, establish_tls=True,
        tls_role=Role.CLIENT, notify_tls_failure=True, local_tls_id="e2aeTlsId00000000001",
        mid_extension_id=4,
    )
    audio = StreamSpec(
        0, "srtp", transport_id=0, mid="0",
        access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True,
                               payload_types=[111, 63, 9, 0, 8, 13, 110, 126], ssrcs=[704286057]),
        core=TerminationSpec(Side.CORE, "RTP/AVPF"),
    )
    video = StreamSpec(
        1, "srtp", transport_id=0, mid="1",
        access=TerminationSpec(Side.ACCESS, "UDP/TLS/RTP/SAVPF", rtcp_mux=True,
                               payload_types=[96, 97], ssrcs=[3974389467, 3531061635]),
        core=TerminationSpec(Side.CORE, "RTP/AVPF"),
    )
    return IqRequest(Command.RESERVE, "d", "t", [audio, video], transports=[transport])


def test_a_bundled_request_round_trips_through_json():
    request = _bundled_request()
    data = json.loads(json.dumps(request.to_dict()))
    assert data["transports"][0]["tls_role"] == "client"
    assert data["transports"][0]["remote_fingerprints"] == [FP.to_dict()]
    assert data["streams"][1]["transport_id"] == 0 and data["streams"][1]["mid"] == "1"
    assert data["streams"][1]["access"]["ssrcs"] == [3974389467, 3531061635]
    assert IqRequest.from_dict(data) == request
    assert list(data["transports"][0]) == [f.name for f in dataclasses.fields(TransportSpec)]


def test_a_request_written_before_transports_parses_as_before():
    old = {
        "command": "modify", "dialog": "d", "transaction": "t", "release_streams": [2],
        "streams": [{"stream_id": 0, "kind": "srtp", "access": None, "group": None,
                     "local_tls_id": None, "remote_tls_id": None, "reuse_association": True,
                     "core": {"side": "core", "transport": "RTP/AVP", "remote_port": 6000}}],
    }
    request = IqRequest.from_dict(old)
    assert request.transports == [] and request.release_transports == []
    assert request.streams[0].transport_id is None and request.streams[0].mid is None
    assert request.streams[0].core.payload_types == [] and request.streams[0].core.ssrcs == []
    assert request.release_streams == [2]


def test_a_reply_with_a_transport_round_trips_and_finds_it():
    reply = IqReply("d", "t", [StreamReply(0, core=TerminationReply("127.0.0.2", 40000))],
                    transports=[TransportReply(0, "127.0.0.1", 30000, FP, "ufrag", "p" * 24)])
    again = IqReply.from_dict(json.loads(json.dumps(reply.to_dict())))
    assert again == reply
    assert again.transport(0).local_port == 30000
    with pytest.raises(KeyError, match="no reply for transport 1"):
        again.transport(1)
    assert IqReply.from_dict({"dialog": "d", "transaction": "t"}).transports == []


def test_unknown_transport_fields_are_refused():
    data = _bundled_request().to_dict()
    data["transports"][0]["bundle_policy"] = "max-bundle"
    with pytest.raises(ValueError, match="unknown fields for TransportSpec"):
        IqRequest.from_dict(data)
    with pytest.raises(ValueError, match="malformed Iq request"):
        IqRequest.from_dict(dict(_bundled_request().to_dict(), transports=[{"remote_port": 1}]))


def test_a_request_finds_its_transport():
    request = _bundled_request()
    assert request.transport(0).mid_extension_id == 4
    with pytest.raises(KeyError):
        request.transport(7)


def test_a_bad_fingerprint_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="not a sha-256 digest"):
        Fingerprint.parse("sha-256 AB:CD")
    with pytest.raises(ValueError, match="not allowed"):
        Fingerprint.parse("md5 " + ":".join(["AB"] * 16))

