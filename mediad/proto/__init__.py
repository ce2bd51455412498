"""mediad's protocols without I/O: codecs and sessions that take bytes and ``now`` and return bytes and events.

DTLS (RFC 6347, RFC 5764), its records, SRTP (RFC 3711), the ICE-lite STUN
responder (RFC 8445 section 2.5, RFC 7675), demultiplexing (RFC 7983, RFC 8843
section 9.2), RFC 4571 framing, MSRP framing (RFC 4975), T.140 (RFC 4103),
certificates and fingerprints (RFC 8122), and the control channel's wire
protocol and payload codec.  Nothing here imports asyncio, a socket, or
another part of mediad: each module is tested and fuzzed alone.
"""
