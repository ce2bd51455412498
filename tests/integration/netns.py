"""Hosts on a private network for tests: network namespaces joined by a bridge.

:class:`Lan` makes a *hub* namespace holding a bridge (``br0``) and one namespace per
host, each with an ``eth0`` on the bridge (a veth pair made inside the hub, so
nothing is added to the machine's own namespace), on ``10.77.0.0/24``.  The names
carry the process id and a random suffix, so runs side by side never meet; the
addresses are private to the run's namespaces.  Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).

:func:`inside` runs a block of the calling thread in a namespace (``setns(2)``):
sockets made there stay in it afterwards.  A subprocess started inside inherits
it; ``ip netns exec`` starts one in another.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator

CLONE_NEWNET = 0x40000000
SUBNET = "10.77.0"
IP = shutil.which("ip") or "/usr/sbin/ip"

_libc = ctypes.CDLL(None, use_errno=True)


def available() -> bool:
    """Whether this process may make namespaces (root with iproute2)."""
    return os.geteuid() == 0 and os.path.exists(IP)


def ip(*args: str, ns: str | None = None) -> None:
    cmd = [IP, *(["-n", ns] if ns else []), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """The calling thread in network namespace ``ns`` for the block (then back)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)


class Lan:
    """A hub namespace with a bridge and ``hosts`` (name → last byte of its address)."""

    def __init__(self, hosts: dict[str, int], hub_addresses: tuple[int, ...] = (1,)) -> None:
        prefix = f"e2ae-{os.getpid()}-{secrets.token_hex(2)}"
        self.hub = f"{prefix}-hub"
        self.hosts = {name: f"{prefix}-{name}" for name in hosts}
        self.numbers = dict(hosts)
        self.hub_addresses = hub_addresses
        self.made: list[str] = []

    @staticmethod
    def address(n: int) -> str:
        return f"{SUBNET}.{n}"

    def up(self) -> "Lan":
        try:
            for ns in (self.hub, *self.hosts.values()):
                ip("netns", "add", ns)
                self.made.append(ns)
                ip("link", "set", "lo", "up", ns=ns)
            ip("link", "add", "br0", "type", "bridge", ns=self.hub)
            ip("link", "set", "br0", "up", ns=self.hub)
            for n in self.hub_addresses:
                ip("addr", "add", f"{self.address(n)}/24", "dev", "br0", ns=self.hub)
            for name, ns in self.hosts.items():
                port = f"v-{name}"[:15]
                ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=self.hub)
                ip("link", "set", port, "master", "br0", ns=self.hub)
                ip("link", "set", port, "up", ns=self.hub)
                ip("link", "set", "eth0", "up", ns=ns)
                ip("addr", "add", f"{self.address(self.numbers[name])}/24", "dev", "eth0", ns=ns)
        except BaseException:
            self.down()
            raise
        return self

    def add_address(self, host: str, n: int) -> str:
        address = self.address(n)
        ip("addr", "add", f"{address}/24", "dev", "eth0", ns=self.hosts[host])
        return address

    def down(self) -> None:
        """Delete the namespaces (their veths and bridge go with them); processes inside first."""
        for ns in reversed(self.made):
            subprocess.run([IP, "netns", "del", ns], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        self.made.clear()


__all__ = ["Lan", "available", "inside", "ip"]
