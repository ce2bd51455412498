"""UDP port pools of the access and core sides.

Theory of operation: a :class:`PortPool` hands out bound, non-blocking UDP
sockets from one address and one inclusive port range.  It remembers what it
handed out; ``kind=SOCK_STREAM`` gives TCP sockets (MSRP toward the core)
from the same range and bookkeeping.  A port that another process holds (``bind`` fails) is skipped, so
pools of several daemons, or other programs, may share a range.  A group is
``count`` consecutive ports, the first one even when asked (RTP on an even
port, RTCP on the next one: RFC 3550 section 11).  Allocation is
all-or-nothing and bounded: after ``len(range)`` candidates it raises
:class:`NoPortsError` (503).  ``claim`` re-binds one exact port (restart).
"""

from __future__ import annotations

import errno
import random
import socket

from sdp_rules.errors import E2aeError

from mediad.config import PortRange


class NoPortsError(E2aeError):
    """No free port group in the range (answered with 503)."""


class PortPool:
    def __init__(self, address: str, ports: PortRange) -> None:
        self.address = address
        self.range = ports
        self.in_use: set[int] = set()
        self._next = random.randint(ports.first, ports.last)

    def _bind(self, port: int, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        sock = socket.socket(socket.AF_INET, kind | socket.SOCK_NONBLOCK)
        try:
            if kind == socket.SOCK_STREAM:  # a listener re-bound after a restart: TIME_WAIT
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.address, port))
        except OSError:
            sock.close()
            raise
        return sock

    def allocate(self, count: int = 1, even: bool = False, kind: int = socket.SOCK_DGRAM,
                 tcp_too: bool = False) -> list[socket.socket]:
        """``count`` bound sockets; ``tcp_too``: one more, TCP on the first port (ICE-TCP, RFC 6544)."""
        first, last = self.range.first, self.range.last
        span = last - first + 1
        for _ in range(span):
            port = self._next
            if even and port % 2:
                port += 1
            if port + count - 1 > last:
                port = first + (first % 2 if even else 0)
            self._next = port + count
            if self._next > last:
                self._next = first
            group = range(port, port + count)
            if any(p in self.in_use for p in group):
                continue
            sockets: list[socket.socket] = []
            try:
                for p in group:
                    sockets.append(self._bind(p, kind))
                if tcp_too:
                    sockets.append(self._bind(port, socket.SOCK_STREAM))
            except OSError as exc:
                for sock in sockets:
                    sock.close()
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise NoPortsError(f"cannot bind {self.address}: {exc.strerror}") from None
                continue
            self.in_use.update(group)
            return sockets
        raise NoPortsError(f"no free group of {count} port(s) in {self.address} {self.range}")

    def claim(self, port: int, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """Bind one exact port again (restart); raises NoPortsError when taken."""
        if port in self.in_use:
            raise NoPortsError(f"port {port} is already in use here")
        try:
            sock = self._bind(port, kind)
        except OSError as exc:
            raise NoPortsError(f"cannot re-bind {self.address}:{port}: {exc.strerror}") from None
        self.in_use.add(port)
        return sock

    def bind_tcp(self, port: int) -> socket.socket:
        """A TCP socket on a port this pool holds for UDP (ICE-TCP after a restart); NoPortsError if taken."""
        try:
            return self._bind(port, socket.SOCK_STREAM)
        except OSError as exc:
            raise NoPortsError(f"cannot bind TCP {self.address}:{port}: {exc.strerror}") from None

    def release(self, port: int) -> None:
        self.in_use.discard(port)
