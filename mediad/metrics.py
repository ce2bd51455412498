"""Every Prometheus metric of mediad, defined against an injected registry.

Theory of operation: :class:`Metrics` creates the metric families once and
binds the label children the packet path needs up front, so the hot path is
one ``inc()`` on a prebound child: no label lookup, no dict churn.  Labels are
bounded sets (side, direction, kind, reason, role, result, command); never a
dialog or Call-ID.  Names start with ``e2ae_mediad_``; counters end in
``_total`` (prometheus-client adds the suffix to the exposed name).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SIDES = ("access", "core")
DIRECTIONS = ("in", "out")
PACKET_KINDS = ("rtp", "rtcp", "udptl", "stun", "dtls", "sctp", "t140", "msrp")
DROP_REASONS = (
    "malformed", "unknown_kind", "not_established", "auth_fail", "replay", "bad_packet",
    "dtls_failed", "no_peer", "consent_expired", "wrong_source", "send_error", "unexpected",
    "stun_rejected",
)
ROLES = ("client", "server")
HANDSHAKE_RESULTS = ("ok", "fingerprint_mismatch", "timeout", "protocol_error")
TCP_RESULTS = ("accepted", "rejected")
# Why an access TCP connection was closed or a frame not sent (mediad.tcp).
TCP_ERRORS = ("not_stun", "unauthenticated", "oversized", "unknown_frame", "idle_timeout", "busy", "congested")
COMMANDS = ("reserve", "modify", "release", "query", "list", "unknown")
CONTROL_RESULTS = ("ok", "400", "401", "404", "500", "501", "503")


class PacketCounters:
    """The prebound packet and byte counters of one (side, direction, kind)."""

    __slots__ = ("packets", "bytes")

    def __init__(self, packets, bytes_) -> None:
        self.packets = packets
        self.bytes = bytes_

    def count(self, size: int) -> None:
        self.packets.inc()
        self.bytes.inc(size)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "e2ae_mediad_"
        self.sessions_active = Gauge(p + "sessions_active", "Dialogs with media state", registry=registry)
        self.terminations_active = Gauge(
            p + "terminations_active", "Terminations (bound media ports groups)", ["side"], registry=registry
        )
        self.handshakes = Counter(
            p + "dtls_handshakes", "DTLS handshakes by AGW role and result", ["role", "result"], registry=registry
        )
        self.handshake_seconds = Histogram(
            p + "dtls_handshake_seconds", "DTLS handshake duration (first flight to completion)", ["role"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry,
        )
        self.packets = Counter(
            p + "packets", "Packets by side, direction and kind", ["side", "direction", "kind"], registry=registry
        )
        self.bytes = Counter(
            p + "bytes", "Bytes by side, direction and kind", ["side", "direction", "kind"], registry=registry
        )
        self.drops = Counter(p + "drops", "Dropped packets by reason", ["reason"], registry=registry)
        self.control_requests = Counter(
            p + "control_requests", "Control (Iq) requests by command and result", ["command", "result"],
            registry=registry,
        )
        self.control_seconds = Histogram(
            p + "control_request_seconds", "Control request latency", ["command"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1), registry=registry,
        )
        self.events = Counter(p + "events", "Events sent to the ALG", ["event"], registry=registry)
        self.sctp_setup_seconds = Histogram(
            p + "sctp_setup_seconds", "SCTP association setup (DTLS up to SCTP established)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry,
        )
        self.data_channels_active = Gauge(
            p + "data_channels_active", "Data channels bridged to a core stream", registry=registry
        )
        self.restored_sessions = Counter(
            p + "restored_sessions", "Dialogs reloaded from Redis at start", registry=registry
        )
        self.redis_errors = Counter(p + "redis_errors", "Failed Redis operations", registry=registry)
        self.tcp_connections = Counter(
            p + "tcp_connections", "Access TCP connections (ICE-TCP) by admission result", ["result"],
            registry=registry,
        )
        self.tcp_connections_active = Gauge(
            p + "tcp_connections_active", "Open access TCP connections", registry=registry
        )
        self.tcp_errors = Counter(
            p + "tcp_errors", "Access TCP framing and admission errors by reason", ["reason"], registry=registry
        )

        self.traffic: dict[tuple[str, str, str], PacketCounters] = {
            (side, direction, kind): PacketCounters(
                self.packets.labels(side, direction, kind), self.bytes.labels(side, direction, kind)
            )
            for side in SIDES for direction in DIRECTIONS for kind in PACKET_KINDS
        }
        self.drop = {reason: self.drops.labels(reason) for reason in DROP_REASONS}
        for role in ROLES:
            for result in HANDSHAKE_RESULTS:
                self.handshakes.labels(role, result)
        for side in SIDES:
            self.terminations_active.labels(side)
        self.tcp_result = {result: self.tcp_connections.labels(result) for result in TCP_RESULTS}
        self.tcp_error = {reason: self.tcp_errors.labels(reason) for reason in TCP_ERRORS}

    def dropped(self, reason: str) -> None:
        child = self.drop.get(reason)
        if child is None:
            child = self.drop["unexpected"]
        child.inc()

    def control(self, command: str, result: str, seconds: float) -> None:
        command = command if command in COMMANDS else "unknown"
        self.control_requests.labels(command, result).inc()
        self.control_seconds.labels(command).observe(seconds)
