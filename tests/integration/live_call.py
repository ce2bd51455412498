"""A WebRTC call through the edge that stays up until the test ends it: aiortc on the access
side (ICE, DTLS-SRTP, a tone), the demo's plain RTP endpoint on the core side.

:class:`LiveCall` is ``deploy.demo_call.run_call`` cut at its seams: :meth:`start` places
the call and waits for DTLS, the test looks at the running edge, then :meth:`hang_up`
(the WIC sends BYE) or the edge ends it (the WIC answers the edge's BYE with 200,
:attr:`bye_received` is set).  ``wrong_fingerprint`` replaces the offer's certificate
fingerprint by another certificate's, so mediad's check of the WIC's certificate fails.
"""

from __future__ import annotations

import asyncio
import re
import time

from deploy.demo_call import CoreEndpoint, SipMessage, SipUac, loopback_only, tone_track


def _other_fingerprint() -> str:
    from mediad.proto.certs import Certificate

    return Certificate.generate(days=1).fingerprint().value


def _ok(request: SipMessage, contact: str) -> bytes:
    """200 OK to an in-dialog request (RFC 3261 8.2.6: Via, From, To, Call-ID, CSeq copied)."""
    lines = ["SIP/2.0 200 OK"]
    for name, value in request.headers:
        if name in ("via", "from", "to", "call-id", "cseq"):
            lines.append(f"{name.title()}: {value}")
    lines += [f"Contact: <{contact}>", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class LiveCall:
    def __init__(self, access: tuple[str, int], core_sip: tuple[str, int], wrong_fingerprint: bool = False) -> None:
        self.access = access
        self.core = CoreEndpoint(core_sip, core_sip[0])
        self.uac = SipUac("127.0.0.1", access)
        self.wrong_fingerprint = wrong_fingerprint
        self.pc = None
        self.status = 0
        self.dtls_state = ""
        self.answer = ""
        self.bye_received = asyncio.Event()
        self._listener: asyncio.Task | None = None

    @property
    def call_id(self) -> str:
        return self.uac.call_id

    async def start(self, dtls_timeout: float = 10.0) -> "LiveCall":
        from aiortc import RTCPeerConnection, RTCSessionDescription

        loopback_only()
        self.pc = RTCPeerConnection()
        await self.core.open()
        await self.uac.open()
        self.pc.addTransceiver(tone_track(), direction="sendrecv")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        if self.wrong_fingerprint:  # aiortc offers sha-256, -384 and -512: one wrong sha-256 instead
            offer = re.sub(r"a=fingerprint:sha-(384|512) \S+\r\n", "", offer)
            offer = re.sub(r"a=fingerprint:sha-256 \S+", "a=fingerprint:sha-256 " + _other_fingerprint(), offer)
        reply = await self.uac.invite(offer)
        self.status = reply.status
        if reply.status != 200:
            return self
        self.answer = reply.body
        self._listener = asyncio.ensure_future(self._answer_byes())
        await self.pc.setRemoteDescription(RTCSessionDescription(reply.body, "answer"))
        dtls = self.pc.getTransceivers()[0].sender.transport
        deadline = time.monotonic() + dtls_timeout
        while dtls.state not in ("connected", "failed", "closed") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.dtls_state = dtls.state
        return self

    async def _answer_byes(self) -> None:
        """Answer the edge's BYE (a call it ends) with 200; other messages are the UAC's."""
        queue = self.uac.proto.queue
        contact = f"sip:wic@127.0.0.1:{self.uac.port}"
        while True:
            msg = await queue.get()
            if not msg.status and msg.method == "BYE":
                self.uac.proto.transport.sendto(_ok(msg, contact), msg.source)
                self.bye_received.set()
            else:
                queue.put_nowait(msg)
                await asyncio.sleep(0.01)

    async def hang_up(self) -> int:
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None
        return (await self.uac.bye()).status

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self.pc is not None:
            await self.pc.close()
        self.uac.close()
        self.core.close()
        await asyncio.sleep(0.05)  # the transports' sockets close on the loop's next turns


def secrets_in_play(redis_client, sdps: list[str]) -> dict[str, str]:
    """Every secret a log or a tool's output must never show, by what it is.

    The ice-pwd values of ``sdps`` (the offers and answers seen), the SRTP master keys
    and salts mediad keeps in Redis for every dialog now (base64 as stored, hex, and
    Python's bytes repr), the certificate's private key (each line of its PEM body)
    and the control secret kept in Redis, if any.
    """
    import base64
    import json as json_

    out: dict[str, str] = {}
    for sdp in sdps:
        for n, pwd in enumerate(re.findall(r"^a=ice-pwd:(\S+)", sdp, re.M)):
            out[f"ice-pwd {n} {pwd[:4]}"] = pwd
    for key in redis_client.keys("e2ae:agw:dialog:*"):
        doc = json_.loads(redis_client.get(key) or b"{}")
        for stream in doc.get("streams", []):
            for name, channel in ((stream.get("access") or {}).get("channels") or {}).items():
                if channel.get("ice_pwd"):
                    out[f"ice-pwd mediad {name}"] = channel["ice_pwd"]
                for field, value in (channel.get("srtp_keys") or {}).items():
                    if field == "profile":
                        continue
                    raw = base64.b64decode(value)
                    label = f"{key.decode()[-8:]} stream {stream.get('stream_id')} {name} {field}"
                    out[label + " base64"] = value
                    out[label + " hex"] = raw.hex()
                    out[label + " HEX"] = raw.hex().upper()
                    out[label + " repr"] = repr(raw)[2:-1]
            if (stream.get("access") or {}).get("ice_pwd"):
                out[f"ice-pwd mediad stream {stream.get('stream_id')}"] = stream["access"]["ice_pwd"]
        # A BUNDLE transport (RFC 9143) holds the ICE credentials and SRTP keys of its streams.
        for transport in doc.get("transports", []):
            tid = transport.get("transport_id")
            if transport.get("ice_pwd"):
                out[f"ice-pwd mediad transport {tid}"] = transport["ice_pwd"]
            for field, value in (transport.get("srtp_keys") or {}).items():
                if field == "profile":
                    continue
                raw = base64.b64decode(value)
                label = f"{key.decode()[-8:]} transport {tid} {field}"
                out[label + " base64"] = value
                out[label + " hex"] = raw.hex()
                out[label + " HEX"] = raw.hex().upper()
                out[label + " repr"] = repr(raw)[2:-1]
    stored = redis_client.get("e2ae:agw:certificate")
    if stored:
        pem = json_.loads(stored)["key"]
        for n, line in enumerate(pem.splitlines()):
            if line and not line.startswith("-----") and len(line) >= 16:
                out[f"private key line {n}"] = line
    control = redis_client.get("e2ae:control_secret")
    if control:
        out["control secret"] = control.decode()
    return out
