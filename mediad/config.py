"""The one configuration file of e2ae edge, read by the plugin and by mediad.

Theory of operation: the file is INI (``configparser``) with the sections
``[edge]``, ``[mediad]``, ``[pool]``, ``[redis]``, ``[policy]`` and ``[plugin]``; every
option has a default that works on one machine on loopback, so an empty or
missing file is a valid configuration.  ``load_config`` returns a frozen
:class:`Config`; a bad value raises :class:`ConfigError` naming the section,
the option and the value.  The path comes from the argument, else the
environment variable ``E2AE_CONFIG``, else defaults only.

``deploy/e2ae.conf`` documents every option; keep it in step with this file.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import quote, urlsplit, urlunsplit

from sdp_rules.errors import UsageError

ENV_CONFIG = "E2AE_CONFIG"
ACTPASS_POLICIES = ("active", "passive")
BUNDLE_POLICIES = ("off", "on")
DTLS_FAILURE_POLICIES = ("bye", "keep")
CORE_RTP_PROFILES = ("avpf", "avp", "auto")
SWITCHES = ("off", "on")


PACKET_PATHS = ("auto", "native", "python")
CORE_SOURCES = ("sdp", "latch")
MAX_SSRCS_LIMIT = 64  # the native packet path's table size (mediad/io/fastpath.c E2AE_MAX_SSRCS)
LOG_FORMATS = ("text", "json")  # mediad.logs
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(UsageError):
    """The configuration file has an invalid value (names section, option and value)."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def as_tuple(self) -> tuple[str, int]:
        return (self.host, self.port)


@dataclass(frozen=True)
class SipSocket:
    """One SIP socket of the edge: where it binds and, behind a NAT, what it advertises."""

    host: str
    port: int
    advertise: HostPort | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def as_tuple(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def public(self) -> HostPort:
        """The address peers see: the advertised one, else the bound one."""
        return self.advertise or HostPort(self.host, self.port)

    def listen(self, proto: str) -> str:
        """Kamailio's ``listen=`` value for this socket over ``proto`` (udp, tcp, tls)."""
        text = f"{proto}:{self.host}:{self.port}"
        if self.advertise is not None:
            text += f" advertise {self.advertise.host}:{self.advertise.port}"
        return text


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def __len__(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Config:
    """Every option, with its default.  Attribute names are ``section_option``."""

    # [edge]: one SIP socket per transport and side; None is "off"
    edge_access_sip: SipSocket | None = SipSocket("127.0.0.1", 5060)
    edge_access_tcp: SipSocket | None = None
    edge_access_tls: SipSocket | None = None
    edge_access_ws: SipSocket | None = None
    edge_access_wss: SipSocket | None = None
    edge_core_sip: SipSocket | None = SipSocket("127.0.0.2", 5060)
    edge_core_tcp: SipSocket | None = None
    edge_core_tls: SipSocket | None = None
    edge_core_next_hop: str = "sip:127.0.0.3:5060"
    edge_tls_certificate: str = ""
    edge_tls_private_key: str = ""
    # [mediad]
    mediad_control: HostPort = HostPort("127.0.0.1", 2223)
    mediad_control_secret: str = ""  # empty: shared through Redis key CONTROL_SECRET_KEY
    mediad_access_address: str = "127.0.0.1"
    mediad_core_address: str = "127.0.0.2"
    mediad_access_advertise: str = ""  # empty: access_address
    mediad_core_advertise: str = ""  # empty: core_address
    mediad_access_ports: PortRange = PortRange(30000, 34999)
    mediad_core_ports: PortRange = PortRange(40000, 44999)
    mediad_metrics: HostPort | None = HostPort("127.0.0.1", 9810)
    mediad_dtls_handshake_timeout: float = 30.0
    mediad_consent_timeout: float = 30.0
    mediad_certificate_file: str = ""
    mediad_key_file: str = ""
    mediad_log_level: str = "INFO"
    mediad_sctp_max_message_size: int = 262144  # RFC 8841 a=max-message-size we accept
    mediad_packet_path: str = "auto"  # auto | native | python (mediad.io.fastpath)
    mediad_core_source: str = "sdp"  # sdp | latch: whose core media is accepted (docs/mediad.md)
    mediad_max_ssrcs: int = 16  # SSRCs per SRTP session toward access, each direction; a new one past it is dropped
    mediad_log_format: str = "text"  # text | json (mediad.logs)
    mediad_node_id: str = ""  # empty: no registration in the pool (mediad.pool)
    mediad_weight: int = 1  # its share of new calls in the pool
    mediad_capacity: int = 0  # sessions past which it gets no new calls; 0: no limit
    mediad_heartbeat: float = 1.0  # seconds between two registrations (the record lives 3 of them)
    # [pool]: how the plugin picks a mediad per dialog (plugin.pool); both empty: [mediad] control
    pool_nodes: str = ""  # static list: "id@host:port weight, ..."
    pool_registry: str = "off"  # on: the mediads registered in Redis (heartbeats)
    pool_cache: float = 1.0  # seconds a worker keeps what it read of the registry
    pool_disable_timeout: float = 10.0  # seconds a node that failed a RESERVE gets no new call
    # on: a registered mediad takes over a dead node's dialogs on the node's addresses (a floating
    # address, mediad.takeover); reinvite: on its own addresses, the edge re-INVITEs the peers
    # (plugin.reinvite); off: a dead node's calls are lost
    pool_takeover: str = "on"
    pool_takeover_hook: str = ""  # a command run with {address} before a dead node's address is bound
    # [redis]
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str = ""
    redis_dialog_ttl: int = 7200
    redis_username: str = ""  # ACL user (Redis 6+); empty: "default" (or the URL's)
    redis_plugin_username: str = ""  # each component's own ACL user, else username/password
    redis_plugin_password: str = ""
    redis_mediad_username: str = ""
    redis_mediad_password: str = ""
    redis_ctl_username: str = ""
    redis_ctl_password: str = ""
    redis_ca_file: str = ""  # rediss:// URLs: the CA of the server's certificate
    redis_certificate_file: str = ""  # rediss:// URLs: a client certificate, when the server asks
    redis_key_file: str = ""
    redis_sentinels: tuple[HostPort, ...] = ()  # Sentinel: the sentinels (empty: no Sentinel)
    redis_master_name: str = "e2ae"
    redis_sentinel_username: str = ""
    redis_sentinel_password: str = ""
    redis_sentinel_tls: bool = False
    redis_cluster: bool = False  # Redis Cluster
    redis_cluster_nodes: tuple[HostPort, ...] = ()  # its startup nodes (empty: the URL's)
    # [policy]
    policy_actpass: str = "active"
    policy_dtls_failure: str = "bye"
    policy_core_rtp_profile: str = "auto"
    policy_bundle: str = "on"  # BUNDLE toward access (RFC 9143): off | on
    # [plugin]
    plugin_metrics: HostPort | None = HostPort("127.0.0.1", 9811)
    plugin_iq_timeout_ms: int = 500
    plugin_retry_after: int = 5
    plugin_log_level: str = "INFO"
    plugin_log_format: str = "text"  # text | json (mediad.logs)
    plugin_rpc_socket: str = "/run/e2ae-edge/kamailio_rpc.sock"  # Kamailio's jsonrpcs datagram socket

    @property
    def redis_url_with_password(self) -> str:
        """``redis_url`` with ``redis_password`` put in when the URL carries none."""
        if not self.redis_password:
            return self.redis_url
        parts = urlsplit(self.redis_url)
        if parts.password:
            return self.redis_url
        host = parts.hostname or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal keeps its brackets (RFC 3986 3.2.2)
        netloc = f"{parts.username or ''}:{quote(self.redis_password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_host_port(text: str, *, where: str = "") -> HostPort:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{where}: expected host:port, got {text!r}")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ConfigError(f"{where}: expected an IP address and a port, got {text!r}") from None
    if not 0 < number < 65536:
        raise ConfigError(f"{where}: port out of range in {text!r}")
    return HostPort(host, number)


def parse_sip_socket(text: str, *, where: str = "") -> SipSocket | None:
    """``host:port``, ``host:port advertise host:port``, or ``off``."""
    words = text.split()
    if not words or words == ["off"]:
        return None
    if len(words) == 1:
        bound = parse_host_port(words[0], where=where)
        return SipSocket(bound.host, bound.port)
    if len(words) == 3 and words[1] == "advertise":
        bound = parse_host_port(words[0], where=where)
        public = words[2] if ":" in words[2] else f"{words[2]}:{bound.port}"
        return SipSocket(bound.host, bound.port, parse_host_port(public, where=where))
    raise ConfigError(f"{where}: expected host:port [advertise host[:port]] or off, got {text!r}")


def parse_port_range(text: str, *, where: str = "") -> PortRange:
    first, sep, last = text.strip().partition("-")
    try:
        lo, hi = int(first), int(last)
    except ValueError:
        raise ConfigError(f"{where}: expected first-last, got {text!r}") from None
    if not sep or not 1024 <= lo < hi < 65536:
        raise ConfigError(f"{where}: expected 1024 <= first < last <= 65535, got {text!r}")
    if hi - lo < 3:
        raise ConfigError(f"{where}: range {text!r} holds fewer than four ports")
    return PortRange(lo, hi)


def _address(text: str, where: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ConfigError(f"{where}: expected an IP address, got {text!r}") from None


def _optional_address(text: str, where: str) -> str:
    return _address(text, where) if text.strip() else ""


def _positive(kind: type, text: str, where: str) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {text!r}") from None
    if value <= 0:
        raise ConfigError(f"{where}: must be positive, got {text!r}")
    return value


def _host_port_list(text: str, where: str) -> tuple[HostPort, ...]:
    """``host:port, host:port, ...`` (empty: none)."""
    return tuple(parse_host_port(item, where=where) for item in text.split(",") if item.strip())


def _optional_host_port(text: str, where: str) -> HostPort | None:
    return None if text.strip() in ("", "off", "none") else parse_host_port(text, where=where)


# (section, option) -> converter(text, where)
_CONVERTERS = {
    ("edge", "access_sip"): lambda t, w: parse_sip_socket(t, where=w),
    ("edge", "access_tcp"): lambda t, w: parse_sip_socket(t, where=w),
    ("edge", "access_tls"): lambda t, w: parse_sip_socket(t, where=w),
    ("edge", "access_ws"): lambda t, w: parse_sip_socket(t, where=w),
    ("edge", "access_wss"): lambda t, w: parse_sip_socket(t, where=w),
    ("edge", "core_sip"): lambda t, w: parse_sip_socket(t, where=w),
    ("edge", "core_tcp"): lambda t, w: parse_sip_socket(t, where=w),
    ("edge", "core_tls"): lambda t, w: parse_sip_socket(t, where=w),
    ("edge", "core_next_hop"): lambda t, w: t.strip(),
    ("edge", "tls_certificate"): lambda t, w: t.strip(),
    ("edge", "tls_private_key"): lambda t, w: t.strip(),
    ("mediad", "control"): lambda t, w: parse_host_port(t, where=w),
    ("mediad", "control_secret"): lambda t, w: t.strip(),
    ("mediad", "access_address"): _address,
    ("mediad", "core_address"): _address,
    ("mediad", "access_advertise"): _optional_address,
    ("mediad", "core_advertise"): _optional_address,
    ("mediad", "access_ports"): lambda t, w: parse_port_range(t, where=w),
    ("mediad", "core_ports"): lambda t, w: parse_port_range(t, where=w),
    ("mediad", "metrics"): _optional_host_port,
    ("mediad", "dtls_handshake_timeout"): lambda t, w: float(_positive(float, t, w)),
    ("mediad", "consent_timeout"): lambda t, w: float(_positive(float, t, w)),
    ("mediad", "certificate_file"): lambda t, w: t.strip(),
    ("mediad", "key_file"): lambda t, w: t.strip(),
    ("mediad", "log_level"): lambda t, w: t.strip().upper(),
    ("mediad", "sctp_max_message_size"): lambda t, w: int(_positive(int, t, w)),
    ("mediad", "packet_path"): lambda t, w: _choice(t, w, PACKET_PATHS),
    ("mediad", "core_source"): lambda t, w: _choice(t, w, CORE_SOURCES),
    ("mediad", "max_ssrcs"): lambda t, w: _bounded(t, w, 1, MAX_SSRCS_LIMIT),
    ("mediad", "log_format"): lambda t, w: _choice(t, w, LOG_FORMATS),
    ("mediad", "node_id"): lambda t, w: _node_id(t, w),
    ("mediad", "weight"): lambda t, w: _bounded(t, w, 0, 1000),
    ("mediad", "capacity"): lambda t, w: _bounded(t, w, 0, 10_000_000),
    ("mediad", "heartbeat"): lambda t, w: float(_positive(float, t, w)),
    ("pool", "nodes"): lambda t, w: _pool_nodes(t, w),
    ("pool", "registry"): lambda t, w: _choice(t, w, ("off", "on")),
    ("pool", "cache"): lambda t, w: float(_positive(float, t, w)),
    ("pool", "disable_timeout"): lambda t, w: float(_positive(float, t, w)),
    ("pool", "takeover"): lambda t, w: _choice(t, w, ("off", "on", "reinvite")),
    ("pool", "takeover_hook"): lambda t, w: _takeover_hook(t, w),
    ("redis", "url"): lambda t, w: t.strip(),
    ("redis", "password"): lambda t, w: t.strip(),
    ("redis", "dialog_ttl"): lambda t, w: int(_positive(int, t, w)),
    ("redis", "username"): lambda t, w: t.strip(),
    ("redis", "plugin_username"): lambda t, w: t.strip(),
    ("redis", "plugin_password"): lambda t, w: t.strip(),
    ("redis", "mediad_username"): lambda t, w: t.strip(),
    ("redis", "mediad_password"): lambda t, w: t.strip(),
    ("redis", "ctl_username"): lambda t, w: t.strip(),
    ("redis", "ctl_password"): lambda t, w: t.strip(),
    ("redis", "ca_file"): lambda t, w: t.strip(),
    ("redis", "certificate_file"): lambda t, w: t.strip(),
    ("redis", "key_file"): lambda t, w: t.strip(),
    ("redis", "sentinels"): lambda t, w: _host_port_list(t, w),
    ("redis", "master_name"): lambda t, w: t.strip(),
    ("redis", "sentinel_username"): lambda t, w: t.strip(),
    ("redis", "sentinel_password"): lambda t, w: t.strip(),
    ("redis", "sentinel_tls"): lambda t, w: _choice(t, w, SWITCHES) == "on",
    ("redis", "cluster"): lambda t, w: _choice(t, w, SWITCHES) == "on",
    ("redis", "cluster_nodes"): lambda t, w: _host_port_list(t, w),
    ("policy", "actpass"): lambda t, w: _choice(t, w, ACTPASS_POLICIES),
    ("policy", "dtls_failure"): lambda t, w: _choice(t, w, DTLS_FAILURE_POLICIES),
    ("policy", "core_rtp_profile"): lambda t, w: _choice(t, w, CORE_RTP_PROFILES),
    ("policy", "bundle"): lambda t, w: _choice(t, w, BUNDLE_POLICIES),
    ("plugin", "metrics"): _optional_host_port,
    ("plugin", "iq_timeout_ms"): lambda t, w: int(_positive(int, t, w)),
    ("plugin", "retry_after"): lambda t, w: int(_positive(int, t, w)),
    ("plugin", "log_level"): lambda t, w: _choice(t, w, LOG_LEVELS).upper(),
    ("plugin", "log_format"): lambda t, w: _choice(t, w, LOG_FORMATS),
    ("plugin", "rpc_socket"): lambda t, w: t.strip(),
}


NODE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _node_id(text: str, where: str) -> str:
    value = text.strip()
    if len(value) > 64 or not set(value) <= NODE_ID_CHARS:
        raise ConfigError(f"{where}: a node id is up to 64 letters, digits, '.', '_' or '-', got {text!r}")
    return value


def _pool_nodes(text: str, where: str) -> str:
    from mediad.pool import parse_nodes  # checked here, parsed again where used

    try:
        parse_nodes(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return text.strip()


def _takeover_hook(text: str, where: str) -> str:
    import shlex

    value = text.strip()
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if words and not any("{address}" in word for word in words):
        raise ConfigError(f"{where}: the command must name {{address}}, got {text!r}")
    return value


def _bounded(text: str, where: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {text!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{where}: expected {low} to {high}, got {text!r}")
    return value


def _choice(text: str, where: str, choices: tuple[str, ...]) -> str:
    value = text.strip().lower()
    if value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {text!r}")
    return value


def parse_config(text: str, *, source: str = "<string>") -> Config:
    """Build a Config from INI text; unknown sections or options are errors (typos)."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise ConfigError(f"{source}: {exc}") from None
    values: dict[str, object] = {}
    known_sections = {section for section, _ in _CONVERTERS}
    for section in parser.sections():
        if section not in known_sections:
            raise ConfigError(f"{source}: unknown section [{section}]")
        for option, raw in parser.items(section):
            converter = _CONVERTERS.get((section, option))
            if converter is None:
                raise ConfigError(f"{source}: unknown option {option!r} in [{section}]")
            values[f"{section}_{option}"] = converter(raw, f"{source} [{section}] {option}")
    config = Config(**values)  # type: ignore[arg-type]
    _check(config, source)
    return config


ACCESS_SIP_OPTIONS = ("access_sip", "access_tcp", "access_tls", "access_ws", "access_wss")
CORE_SIP_OPTIONS = ("core_sip", "core_tcp", "core_tls")
# The Kamailio transport that carries each option's socket (WebSocket runs over TCP or TLS).
SIP_OPTION_PROTO = {"access_sip": "udp", "access_tcp": "tcp", "access_tls": "tls", "access_ws": "tcp",
                    "access_wss": "tls", "core_sip": "udp", "core_tcp": "tcp", "core_tls": "tls"}


def sip_sockets(config: Config) -> list[tuple[str, str, SipSocket]]:
    """Every configured SIP socket: (option name, Kamailio transport, socket)."""
    out = []
    for option in ACCESS_SIP_OPTIONS + CORE_SIP_OPTIONS:
        sock = getattr(config, f"edge_{option}")
        if sock is not None:
            out.append((option, SIP_OPTION_PROTO[option], sock))
    return out


def _check_sip(config: Config, source: str) -> None:
    sockets = sip_sockets(config)
    if not any(option in ACCESS_SIP_OPTIONS for option, _, _ in sockets):
        raise ConfigError(f"{source}: [edge] has no access socket (access_sip, _tcp, _tls, _ws, _wss all off)")
    if not any(option in CORE_SIP_OPTIONS for option, _, _ in sockets):
        raise ConfigError(f"{source}: [edge] has no core socket (core_sip, _tcp, _tls all off)")
    seen: dict[tuple[str, str, int], str] = {}
    for option, proto, sock in sockets:
        key = (proto, sock.host, sock.port)
        if key in seen:
            raise ConfigError(f"{source}: [edge] {option} and {seen[key]} are the same {proto} socket {sock}")
        seen[key] = option
    if any(proto == "tls" for _, proto, _ in sockets) and bool(config.edge_tls_certificate) != bool(
            config.edge_tls_private_key):
        raise ConfigError(f"{source}: [edge] tls_certificate and tls_private_key go together")


def _check_redis(config: Config, source: str) -> None:
    scheme = urlsplit(config.redis_url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{source}: [redis] url: expected redis://, rediss:// or unix://, got {scheme + ':'!r}")
    if config.redis_cluster and config.redis_sentinels:
        raise ConfigError(f"{source}: [redis] cluster = on and sentinels: choose one")
    if config.redis_sentinels and not config.redis_master_name:
        raise ConfigError(f"{source}: [redis] sentinels need master_name")
    if bool(config.redis_certificate_file) != bool(config.redis_key_file):
        raise ConfigError(f"{source}: [redis] certificate_file and key_file go together")
    tls_files = config.redis_ca_file or config.redis_certificate_file
    if tls_files and scheme != "rediss" and not config.redis_sentinel_tls:
        raise ConfigError(f"{source}: [redis] ca_file/certificate_file are for TLS: the url must be rediss://")
    if config.redis_cluster and scheme == "unix":
        raise ConfigError(f"{source}: [redis] cluster = on needs a redis:// or rediss:// url")


def _check(config: Config, source: str) -> None:
    _check_sip(config, source)
    _check_redis(config, source)
    if config.mediad_access_address == config.mediad_core_address:
        a, c = config.mediad_access_ports, config.mediad_core_ports
        if a.first <= c.last and c.first <= a.last:
            raise ConfigError(
                f"{source}: access_ports and core_ports overlap on the same address {config.mediad_access_address}"
            )


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the file at ``path``, else at ``$E2AE_CONFIG``, else return the defaults."""
    env = os.environ if env is None else env
    chosen = path if path is not None else env.get(ENV_CONFIG) or None
    if chosen is None:
        return Config()
    file = Path(chosen)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {str(file)!r}: {exc.strerror}") from None
    return parse_config(text, source=str(file))


def option_names() -> list[str]:
    """``section.option`` for every option (used by the documentation test)."""
    return [f"{section}.{option}" for section, option in _CONVERTERS]


__all__ = [
    "Config", "ConfigError", "HostPort", "PortRange", "SipSocket", "load_config", "parse_config",
    "parse_host_port", "parse_port_range", "parse_sip_socket", "sip_sockets", "option_names", "ENV_CONFIG",
]
