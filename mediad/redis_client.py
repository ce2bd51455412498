"""The one way the plugin, mediad and e2ae-ctl open Redis, from the ``[redis]`` settings.

Theory of operation: :func:`settings` reads what one component needs from the
configuration (pure: no I/O) into :class:`RedisSettings`; :func:`connect`
(blocking redis-py: the plugin inside Kamailio, e2ae-ctl, the run command)
and :func:`connect_async` (``redis.asyncio``: mediad) make the client.  Four
shapes, the same for both:

* one server, ``url = redis://host:port/db`` (or ``unix://``);
* one server over TLS, ``url = rediss://...`` with ``ca_file`` (the CA that
  signed the server's certificate, checked: ``ssl_cert_reqs=required``) and,
  when the server asks for one, ``certificate_file``/``key_file``;
* Sentinel: ``sentinels = host:port, ...`` and ``master_name``: redis-py's
  ``Sentinel`` asks them for the master on every new connection, and a
  connection to a master that was demoted is closed
  (``SentinelManagedConnection``), so the next command goes to the new master;
  the sentinels have their own ``sentinel_username``/``sentinel_password``
  and ``sentinel_tls``;
* Cluster: ``cluster = on`` and ``cluster_nodes = host:port, ...`` (the
  startup nodes; default: the URL's host and port): redis-py's ``RedisCluster``
  routes each command by its key's slot (every key of a dialog shares one:
  :mod:`mediad.redis_keys`).

Each component authenticates as its own ACL user (Redis 7 ``AUTH username
password``): ``<component>_username``/``<component>_password`` when set, else
``username``/``password``, else what the URL carries.  Socket timeouts are the
caller's (the plugin's are short: a Redis that does not answer is a 503, not
a hung worker).  Passwords never appear in a message of this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from mediad.config import Config, HostPort
from mediad.redis_keys import Component


@dataclass(frozen=True)
class RedisSettings:
    """What one component needs to reach Redis (the ``[redis]`` section, resolved)."""

    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may carry a password
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    certificate_file: str = ""
    key_file: str = ""
    sentinels: tuple[HostPort, ...] = ()
    master_name: str = ""
    sentinel_username: str = ""
    sentinel_password: str = field(default="", repr=False)
    sentinel_tls: bool = False
    cluster: bool = False
    cluster_nodes: tuple[HostPort, ...] = ()

    @classmethod
    def from_url(cls, url: str) -> "RedisSettings":
        """A plain (or TLS without a CA file) single server at ``url``, credentials in it."""
        return cls(url=url)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    @property
    def kind(self) -> str:
        """``cluster``, ``sentinel`` or ``server``: for logs and errors."""
        return "cluster" if self.cluster else "sentinel" if self.sentinels else "server"


def settings(config: Config, component: Component) -> RedisSettings:
    """``component``'s Redis settings from ``config`` (its own ACL user when one is set)."""
    own_user = getattr(config, f"redis_{component.value}_username")
    own_password = getattr(config, f"redis_{component.value}_password")
    return RedisSettings(
        url=config.redis_url,
        username=own_user or config.redis_username,
        password=own_password or config.redis_password,
        ca_file=config.redis_ca_file, certificate_file=config.redis_certificate_file,
        key_file=config.redis_key_file, sentinels=config.redis_sentinels,
        master_name=config.redis_master_name, sentinel_username=config.redis_sentinel_username,
        sentinel_password=config.redis_sentinel_password, sentinel_tls=config.redis_sentinel_tls,
        cluster=config.redis_cluster, cluster_nodes=config.redis_cluster_nodes,
    )


def _tls_kwargs(s: RedisSettings) -> dict[str, Any]:
    out: dict[str, Any] = {"ssl_cert_reqs": "required"}
    if s.ca_file:
        out["ssl_ca_certs"] = s.ca_file
    if s.certificate_file:
        out["ssl_certfile"] = s.certificate_file
        out["ssl_keyfile"] = s.key_file
    return out


def _url_parts(s: RedisSettings) -> tuple[str, int, int, str, str]:
    """host, port, db, username, password of the URL (settings' credentials win)."""
    parts = urlsplit(s.url)
    db = int(parts.path.lstrip("/") or 0) if parts.scheme in ("redis", "rediss") else 0
    username = s.username or unquote(parts.username or "")
    password = s.password or unquote(parts.password or "")
    return parts.hostname or "127.0.0.1", parts.port or 6379, db, username, password


def client_kwargs(s: RedisSettings, timeout: float) -> dict[str, Any]:
    """Connection keyword arguments of redis-py shared by every shape (no host, port, db)."""
    _, _, _, username, password = _url_parts(s)
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    if s.tls:
        kwargs.update(ssl=True, **_tls_kwargs(s))
    return kwargs


def _sentinel_kwargs(s: RedisSettings, timeout: float) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if s.sentinel_username:
        kwargs["username"] = s.sentinel_username
    if s.sentinel_password:
        kwargs["password"] = s.sentinel_password
    if s.sentinel_tls:
        kwargs.update(ssl=True, **_tls_kwargs(s))
    return kwargs


def _startup_nodes(s: RedisSettings) -> list[tuple[str, int]]:
    if s.cluster_nodes:
        return [node.as_tuple() for node in s.cluster_nodes]
    host, port, _, _, _ = _url_parts(s)
    return [(host, port)]


def _client(s: RedisSettings | str, timeout: float, redis_cls, cluster_cls, node_cls, sentinel_cls):
    """One client of ``s`` from one flavour of redis-py's classes (blocking or asyncio)."""
    if isinstance(s, str):
        s = RedisSettings.from_url(s)
    kwargs = client_kwargs(s, timeout)
    if s.cluster:
        return cluster_cls(startup_nodes=[node_cls(h, p) for h, p in _startup_nodes(s)], **kwargs)
    if s.sentinels:
        _, _, db, _, _ = _url_parts(s)
        sentinel = sentinel_cls([n.as_tuple() for n in s.sentinels], sentinel_kwargs=_sentinel_kwargs(s, timeout),
                                db=db, **kwargs)
        return sentinel.master_for(s.master_name)
    if s.tls or s.username or s.password:
        host, port, db, _, _ = _url_parts(s)
        if urlsplit(s.url).scheme == "unix":
            return redis_cls(unix_socket_path=urlsplit(s.url).path, db=db, **kwargs)
        return redis_cls(host=host, port=port, db=db, **kwargs)
    return redis_cls.from_url(s.url, **kwargs)


def connect(s: RedisSettings | str, timeout: float):
    """A blocking redis-py client (``redis.Redis`` or ``redis.cluster.RedisCluster``); connects lazily."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    return _client(s, timeout, redis.Redis, RedisCluster, ClusterNode, Sentinel)


def connect_async(s: RedisSettings | str, timeout: float):
    """A ``redis.asyncio`` client (``Redis`` or ``RedisCluster``) for mediad; connects lazily."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel

    return _client(s, timeout, aioredis.Redis, RedisCluster, ClusterNode, Sentinel)


def _errors() -> tuple[type[BaseException], ...]:
    import redis

    # RedisClusterException (a Cluster that cannot be reached or mapped) is not a RedisError
    return (redis.RedisError, redis.exceptions.RedisClusterException)


REDIS_ERRORS = _errors()


def is_cluster(client) -> bool:
    """Whether ``client`` (from :func:`connect` or :func:`connect_async`) is a Cluster client."""
    return hasattr(client, "get_node_from_key")


__all__ = ["REDIS_ERRORS", "RedisSettings", "client_kwargs", "connect", "connect_async", "is_cluster", "settings"]
