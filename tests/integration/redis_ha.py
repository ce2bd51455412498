"""Real Redis setups beyond one plain server, on free loopback ports: TLS with ACL users,
Sentinel (1 master, 1 replica, 3 sentinels), Cluster (3 masters).

Each has ``url`` and ``redis_extra`` (the ``[redis]`` lines the edge's configuration needs),
``client()`` (an administrator's client, for the tests' inspection only) and ``stop()``.
The TLS server is configured by the run command's own code (:mod:`deploy.redis_setup`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from deploy.redis_setup import DEFAULT_USERS, acl_line, ensure_tls, redis_command, write_acl_file
from mediad.redis_keys import Component
from tests.conftest import free_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
ADMIN = ("e2ae-test-admin", "admin-secret")


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class SecureRedis:
    """redis-server with TLS only (its own CA) and an ACL user per component, ``default`` off."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-redis-tls-"))
        self.port = free_port(socket.SOCK_STREAM)
        self.ca, self.cert, self.key = ensure_tls(self.dir / "tls", "127.0.0.1")
        self.users = {c: (DEFAULT_USERS[c], f"{c.value}-{os.urandom(6).hex()}") for c in Component}
        acl = write_acl_file(self.dir / "users.acl", self.users)
        with open(acl, "a") as out:  # the tests' own inspection user
            out.write(acl_line(ADMIN[0], ADMIN[1], "+@all ~* &*") + "\n")
        self.acl = acl
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    @property
    def redis_extra(self) -> str:
        lines = [f"ca_file = {self.ca}"]
        for component, (name, password) in self.users.items():
            lines += [f"{component.value}_username = {name}", f"{component.value}_password = {password}"]
        return "\n".join(lines)

    def start(self) -> "SecureRedis":
        cmd = redis_command("127.0.0.1", self.port, "", self.dir, acl=self.acl,
                            tls=(self.ca, self.cert, self.key), appendonly=False)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: self.client().ping(), 10, "TLS redis-server")
        return self

    def client(self, user: tuple[str, str] = ADMIN):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, username=user[0], password=user[1], ssl=True,
                           ssl_ca_certs=str(self.ca), ssl_cert_reqs="required", socket_timeout=2)

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSet:
    """One master, one replica, three sentinels (quorum 2), password-protected, on loopback."""

    password = "e2ae-ha"
    master_name = "e2ae"

    def __init__(self, down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-sentinel-"))
        self.ports = [free_port(socket.SOCK_STREAM) for _ in range(2)]
        self.sentinel_ports = [free_port(socket.SOCK_STREAM) for _ in range(3)]
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers: dict[int, subprocess.Popen] = {}
        self.sentinels: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:6379/0"  # only its db counts: the sentinels give the master

    @property
    def redis_extra(self) -> str:
        nodes = ", ".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"password = {self.password}\nsentinels = {nodes}\nmaster_name = {self.master_name}"

    def _server(self, port: int, replica_of: int | None) -> None:
        directory = self.dir / f"redis-{port}"
        directory.mkdir()
        cmd = redis_command("127.0.0.1", port, self.password, directory, appendonly=False)
        cmd += ["--masterauth", self.password, "--replica-announce-ip", "127.0.0.1"]
        if replica_of is not None:
            cmd += ["--replicaof", "127.0.0.1", str(replica_of)]
        with open(directory / "log", "ab") as out:
            self.servers[port] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> "SentinelSet":
        master, replica = self.ports
        self._server(master, None)
        self._server(replica, master)
        _wait(lambda: self.node(master).ping(), 10, "master")
        _wait(lambda: self.node(replica).info("replication")["master_link_status"] == "up", 10, "replica")
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nsentinel announce-ip 127.0.0.1\n"
                f"dir {self.dir}\n"
                f"sentinel monitor {self.master_name} 127.0.0.1 {master} 2\n"
                f"sentinel auth-pass {self.master_name} {self.password}\n"
                f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {self.master_name} 1\n")
            with open(self.dir / f"sentinel-{port}.log", "ab") as out:
                self.sentinels.append(subprocess.Popen([REDIS, str(conf), "--sentinel"], stdout=out,
                                                       stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: all(self.sentinel(p).sentinel_master(self.master_name)["num-other-sentinels"] == 2
                          and self.sentinel(p).sentinel_master(self.master_name)["num-slaves"] == 1
                          for p in self.sentinel_ports), 20, "sentinels")
        return self

    def node(self, port: int):
        import redis

        return redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=1,
                           decode_responses=True)

    def sentinel(self, port: int):
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, decode_responses=True)

    def master_port(self) -> int:
        return int(self.sentinel(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(self.master_name)[1])

    def client(self):
        import redis

        for port in self.ports:
            try:
                node = self.node(port)
                if node.info("replication")["role"] == "master":
                    return redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=1)
            except redis.RedisError:
                continue
        raise RuntimeError("no master answers")

    def failover(self) -> None:
        """SENTINEL FAILOVER: the replica is promoted, the master demoted (both stay up)."""
        self.sentinel(self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", self.master_name)

    def kill_master(self) -> int:
        """kill -9 of the current master; its port."""
        port = self.master_port()
        os.killpg(self.servers[port].pid, signal.SIGKILL)
        self.servers[port].wait()
        return port

    def wait_master_not(self, port: int, timeout: float = 30.0) -> int:
        """Wait until every sentinel names another master, and that one answers as master."""
        def moved() -> bool:
            addrs = {tuple(self.sentinel(p).sentinel_get_master_addr_by_name(self.master_name))
                     for p in self.sentinel_ports}
            if len(addrs) != 1:
                return False
            (host, new), = addrs
            return int(new) != port and self.node(int(new)).info("replication")["role"] == "master"
        _wait(moved, timeout, "a new master")
        return self.master_port()

    def wait_replica_synced(self, timeout: float = 20.0) -> None:
        master = self.master_port()
        _wait(lambda: self.node(master).info("replication")["connected_slaves"] >= 1
              and all(self.node(p).info("replication").get("master_link_status") == "up"
                      for p in self.ports if p != master and self.servers[p].poll() is None), timeout,
              "the replica's sync")

    def stop(self) -> None:
        for proc in self.sentinels:
            _stop(proc)
        for proc in self.servers.values():
            _stop(proc)
        if not os.environ.get("E2AE_KEEP_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)


class ClusterSet:
    """Three masters, no replicas (``redis-cli --cluster create``), password-protected."""

    password = "e2ae-cluster"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="e2ae-cluster-"))
        self.ports = [free_port(socket.SOCK_STREAM) for _ in range(3)]
        while len({p + 10000 for p in self.ports} | set(self.ports)) < 6 or max(self.ports) + 10000 > 65535:
            self.ports = [free_port(socket.SOCK_STREAM) for _ in range(3)]
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def redis_extra(self) -> str:
        nodes = ", ".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"password = {self.password}\ncluster = on\ncluster_nodes = {nodes}"

    def start(self) -> "ClusterSet":
        for port in self.ports:
            directory = self.dir / str(port)
            directory.mkdir()
            cmd = redis_command("127.0.0.1", port, self.password, directory, appendonly=False)
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
                    "--cluster-node-timeout", "2000", "--masterauth", self.password]
            with open(directory / "log", "ab") as out:
                self.procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                   start_new_session=True))
        for port in self.ports:
            _wait(lambda: self._node(port).ping(), 10, f"cluster node {port}")
        subprocess.run([REDIS_CLI, "-a", self.password, "--no-auth-warning", "--cluster", "create",
                        *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=30,
                       stdin=subprocess.DEVNULL)
        _wait(lambda: all(self._node(p).cluster("info")["cluster_state"] == "ok" for p in self.ports), 20,
              "the cluster")
        return self

    def _node(self, port: int):
        import redis

        return redis.Redis(host="127.0.0.1", port=port, password=self.password, socket_timeout=1,
                           decode_responses=True)

    def client(self):
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports],
                            password=self.password, socket_timeout=2)

    def keys_per_node(self, pattern: str) -> dict[int, list[str]]:
        return {p: sorted(k for k in self._node(p).keys(pattern)) for p in self.ports}

    def stop(self) -> None:
        for proc in self.procs:
            _stop(proc)
        if not os.environ.get("E2AE_KEEP_LOGS"):
            shutil.rmtree(self.dir, ignore_errors=True)


__all__ = ["ADMIN", "ClusterSet", "SecureRedis", "SentinelSet"]
