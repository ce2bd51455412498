"""Every Prometheus metric of mediad, defined against an injected registry.

Theory of operation: :class:`Metrics` creates the metric families once and
binds the label children it needs up front.  The packet path does not touch
prometheus-client at all (each ``inc()`` takes a lock): packet and byte
counts are plain integers on one :class:`PacketCounters` per (side,
direction, kind), which the packet path adds to in place, and drops are plain
integers per reason; :class:`TrafficCollector` reads them when the registry is
scraped and yields them as the counter families ``e2ae_mediad_packets``,
``e2ae_mediad_bytes`` and ``e2ae_mediad_drops`` (same names, labels and
``_created`` samples as ``Counter`` would give).  Reading an int is atomic
under the GIL, so the scrape thread needs no lock.  Labels are
bounded sets (side, direction, kind, reason, role, result, command); never a
dialog or Call-ID.  Names start with ``e2ae_mediad_``; counters end in
``_total`` (prometheus-client adds the suffix to the exposed name).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

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
    """The packet and byte counts of one (side, direction, kind): plain integers.

    The packet path adds to ``packets`` and ``bytes`` in place (or calls
    :meth:`count`); :class:`TrafficCollector` exports them.
    """

    __slots__ = ("packets", "bytes")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0

    def count(self, size: int) -> None:
        self.packets += 1
        self.bytes += size


class TrafficCollector:
    """Exports the integer packet, byte and drop counts as Prometheus counter families."""

    def __init__(self, prefix: str, traffic: dict[tuple[str, str, str], PacketCounters],
                 drops: dict[str, int]) -> None:
        self.prefix = prefix
        self.traffic = traffic
        self.drops = drops
        self.native: list = []  # mediad.fastpath.Engine counter blocks, added in
        self.created = time.time()

    def describe(self):
        return self._families(empty=True)

    def collect(self):
        return self._families(empty=False)

    def _families(self, empty: bool):
        p, created = self.prefix, self.created
        labels = ["side", "direction", "kind"]
        packets = CounterMetricFamily(p + "packets", "Packets by side, direction and kind", labels=labels)
        bytes_ = CounterMetricFamily(p + "bytes", "Bytes by side, direction and kind", labels=labels)
        drops = CounterMetricFamily(p + "drops", "Dropped packets by reason", labels=["reason"])
        native = CounterMetricFamily(
            p + "native_packets", "Packets relayed by the native packet path (also counted in packets)"
        )
        if not empty:
            engines = list(self.native)
            for key, counters in list(self.traffic.items()):
                n_packets, n_bytes = counters.packets, counters.bytes
                for engine in engines:
                    extra = engine.traffic(key)
                    n_packets += extra[0]
                    n_bytes += extra[1]
                packets.add_metric(key, n_packets, created=created)
                bytes_.add_metric(key, n_bytes, created=created)
            for reason, count in list(self.drops.items()):
                drops.add_metric((reason,), count + sum(e.drops(reason) for e in engines), created=created)
            native.add_metric([], sum(e.fast_packets for e in engines), created=created)
        return [packets, bytes_, drops, native]


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
        # Packets, bytes and drops: plain integers, exported by TrafficCollector (see above).
        self.traffic: dict[tuple[str, str, str], PacketCounters] = {
            (side, direction, kind): PacketCounters()
            for side in SIDES for direction in DIRECTIONS for kind in PACKET_KINDS
        }
        self.drop_counts: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.collector = TrafficCollector(p, self.traffic, self.drop_counts)
        registry.register(self.collector)
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
        # Read at scrape time from the port pools (watch_pool); set by the daemon's Redis ping.
        self.ports = Gauge(p + "ports", "Media ports in the configured range, by side", ["side"], registry=registry)
        self.ports_free = Gauge(
            p + "ports_free", "Media ports of the range held by no stream, by side", ["side"], registry=registry
        )
        self.redis_up = Gauge(p + "redis_up", "1 when the last periodic Redis ping succeeded, else 0",
                              registry=registry)

        for role in ROLES:
            self.handshake_seconds.labels(role)  # from 0, so that rate() sees the first handshake
            for result in HANDSHAKE_RESULTS:
                self.handshakes.labels(role, result)
        # Per side, bound once: reserve and release change them on every call.
        self.terminations = {side: self.terminations_active.labels(side) for side in SIDES}
        self.tcp_result = {result: self.tcp_connections.labels(result) for result in TCP_RESULTS}
        # control() runs on every Iq request: each child is looked up once (labels() hashes and
        # locks each time), on first use, so the exposition shows what was counted, as before.
        self.control_count: dict[tuple[str, str], Any] = {}
        self.control_latency: dict[str, Any] = {}
        self.tcp_error = {reason: self.tcp_errors.labels(reason) for reason in TCP_ERRORS}

    def watch_pool(self, side: str, pool) -> None:
        """Export the size and free ports of ``pool`` (a mediad.ports.PortPool) under ``side``."""
        size = len(pool.range)
        self.ports.labels(side).set(size)
        self.ports_free.labels(side).set_function(lambda: size - len(pool.in_use))

    def add_native(self, engine) -> None:
        """Count what the native packet path (mediad.fastpath.Engine) relays and drops, too."""
        self.collector.native.append(engine)

    def dropped(self, reason: str) -> None:
        counts = self.drop_counts
        if reason not in counts:
            reason = "unexpected"
        counts[reason] += 1

    def control(self, command: str, result: str, seconds: float) -> None:
        command = command if command in COMMANDS else "unknown"
        count = self.control_count.get((command, result))
        if count is None:
            count = self.control_count[(command, result)] = self.control_requests.labels(command, result)
        latency = self.control_latency.get(command)
        if latency is None:
            latency = self.control_latency[command] = self.control_seconds.labels(command)
        count.inc()
        latency.observe(seconds)
