"""Check that a system under the call-setup benchmark did the edge's job on one call's SDPs.

The job (3GPP TS 23.334 6.2.10.5, the eP-CSCF and eIMS-AGW roles of the edge):
the WebRTC DTLS-SRTP offer of the caller reaches the core as plain RTP/AVPF on
the relay's core address, with nothing of DTLS-SRTP (RFC 5763 ``a=fingerprint``
and ``a=setup``, RFC 8842 ``a=tls-id``), ICE (RFC 8839) or SDES (RFC 4568)
left in it; the core's plain answer reaches the caller as UDP/TLS/RTP/SAVPF on
the relay's access address, with the relay's certificate fingerprint, a
``setup`` role that answers ``actpass`` (RFC 5763 section 5), ICE-lite with
the relay as the only candidate (RFC 8445 section 2.5, RFC 8839 section 5.1),
and rtcp-mux (RFC 5761 section 5.1.3, required by WebRTC).

:func:`check` takes the two bodies as the probe's ends received them and
returns what is wrong with them, so the benchmark can show that the edge and
the reference were measured doing the same work.  It reads the SDP with the
few line rules of RFC 8866 section 5 it needs rather than with the project's
own SDP model, so that the check does not share code with what it checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACCESS_PROTO = "UDP/TLS/RTP/SAVPF"
CORE_PROTO = "RTP/AVPF"
# Attributes that must not reach a plain core (DTLS-SRTP, ICE, SDES, tls-id).
SECURE_ATTRIBUTES = ("fingerprint", "setup", "tls-id", "ice-ufrag", "ice-pwd", "ice-lite", "ice-options",
                     "candidate", "end-of-candidates", "crypto")
ANSWER_ROLES = ("active", "passive")  # RFC 5763 section 5: the answers to setup:actpass


@dataclass
class Section:
    """One SDP section: its ``c=`` address, its ``m=`` line (none at session level) and attributes in order."""

    connection: str | None = None
    media: list[str] | None = None  # ["audio", port, proto, fmt...]
    attributes: list[tuple[str, str]] = field(default_factory=list)

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.attributes if key == name]


def parse(sdp: str) -> tuple[Section, list[Section]]:
    """(session section, media sections) of ``sdp``; lines that are not ``type=value`` are ignored."""
    session = Section()
    media: list[Section] = []
    current = session
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            current = Section(media=value.split())
            media.append(current)
        elif kind == "c":
            parts = value.split()
            current.connection = parts[2] if len(parts) >= 3 else None
        elif kind == "a":
            name, _, rest = value.partition(":")
            current.attributes.append((name, rest))
    return session, media


def _attr(session: Section, media: Section, name: str) -> list[str]:
    """``name``'s values at media level, else at session level (RFC 8866 section 5.13)."""
    return media.values(name) or session.values(name)


def check(offer_to_core: str | None, answer_to_access: str, caller_offer: str,
          access_address: str, core_address: str) -> dict:
    """What is wrong with one call's two SDPs; ``{"ok": bool, "problems": [...], "seen": {...}}``.

    ``caller_offer`` is the offer the caller sent (its fingerprint, ports and
    candidates must not come back); ``access_address`` and ``core_address``
    are the relay's media addresses on each side.
    """
    problems: list[str] = []
    seen: dict = {}
    caller_session, caller_media = parse(caller_offer)
    caller_fingerprints = {v.split(" ", 1)[-1].upper() for m in caller_media
                           for v in _attr(caller_session, m, "fingerprint")}
    caller_ports = {m.media[1] for m in caller_media if m.media and len(m.media) > 1}

    if offer_to_core is None:
        problems.append("core: the callee received no offer")
    else:
        session, media = parse(offer_to_core)
        if len(media) != 1 or not media[0].media or len(media[0].media) < 4:
            problems.append(f"core: expected one m= line, found {len(media)}")
        else:
            m = media[0]
            proto = m.media[2]
            seen["core_proto"] = proto
            if proto != CORE_PROTO:
                problems.append(f"core: proto {proto}, expected {CORE_PROTO}")
            address = m.connection or session.connection
            if address != core_address:
                problems.append(f"core: media address {address}, expected the relay's {core_address}")
            if m.media[1] in caller_ports:
                problems.append(f"core: media port {m.media[1]} is the caller's own")
            left = sorted({name for name, _ in session.attributes + m.attributes if name in SECURE_ATTRIBUTES})
            if left:
                problems.append(f"core: DTLS/ICE/SDES attributes left: {', '.join(left)}")
            seen["core_rtcp_mux"] = bool(_attr(session, m, "rtcp-mux"))
            seen["core_formats"] = m.media[3:]

    session, media = parse(answer_to_access)
    if len(media) != 1 or not media[0].media or len(media[0].media) < 4:
        problems.append(f"access: expected one m= line, found {len(media)}")
        return {"ok": False, "problems": problems, "seen": seen}
    m = media[0]
    proto = m.media[2]
    seen["access_proto"] = proto
    if proto != ACCESS_PROTO:
        problems.append(f"access: proto {proto}, expected {ACCESS_PROTO}")
    address = m.connection or session.connection
    if address != access_address:
        problems.append(f"access: media address {address}, expected the relay's {access_address}")
    fingerprints = _attr(session, m, "fingerprint")
    seen["access_fingerprints"] = len(fingerprints)
    if not fingerprints:
        problems.append("access: no a=fingerprint")
    elif any(v.split(" ", 1)[-1].upper() in caller_fingerprints for v in fingerprints):
        problems.append("access: the caller's own fingerprint came back")
    setup = _attr(session, m, "setup")
    seen["access_setup"] = setup[0] if setup else None
    if setup[:1] not in ([role] for role in ANSWER_ROLES):
        problems.append(f"access: a=setup {setup}, expected one of {', '.join(ANSWER_ROLES)}")
    seen["access_ice_lite"] = "ice-lite" in {n for n, _ in session.attributes + m.attributes}
    if not seen["access_ice_lite"]:
        problems.append("access: no a=ice-lite")
    if not _attr(session, m, "ice-ufrag") or not _attr(session, m, "ice-pwd"):
        problems.append("access: no ICE credentials (a=ice-ufrag, a=ice-pwd)")
    candidates = [c.split() for c in _attr(session, m, "candidate")]
    seen["access_candidates"] = len(candidates)
    if not candidates:
        problems.append("access: no a=candidate")
    for c in candidates:
        # foundation component transport priority address port "typ" type ...
        if len(c) < 8 or c[6] != "typ" or c[7] != "host" or c[4] != access_address or c[5] != m.media[1]:
            problems.append(f"access: candidate {' '.join(c)} is not the relay's host address and port")
    if not _attr(session, m, "rtcp-mux"):
        problems.append("access: no a=rtcp-mux")
    if _attr(session, m, "crypto"):
        problems.append("access: SDES a=crypto offered beside DTLS-SRTP")
    return {"ok": not problems, "problems": problems, "seen": seen}
