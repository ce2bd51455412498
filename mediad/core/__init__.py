"""mediad's call tree: dialog → transport → media streams → legs, and the channels and associations they own.

``session`` (dialog, stream, legs, the stream kinds), ``transport`` (a BUNDLE
transport, RFC 9143), ``relay`` (the per-port channels that drive ICE-lite,
DTLS and SRTP), ``datachannel`` and ``sctp`` (data channels over SCTP over
DTLS, RFC 8261, RFC 8831).  It decides with the codecs of ``mediad.proto`` and
runs on the event loop; it imports nothing of ``mediad.io``.
"""
