"""mediad's edges to the outside: ports, sockets, the native packet path, the control endpoint and its clients.

``ports`` (the port pools), ``tcp`` (RFC 4571 access over TCP), ``fastpath``
with ``fastpath.c`` (the native packet path, built by ``fastpath_build``),
``control`` (the Iq endpoint) and ``client`` (the Iq clients the plugin and
the tools use).
"""
