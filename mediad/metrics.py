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

import bisect
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from mediad.proto.bundle_demux import Drop

SIDES = ("access", "core")
DIRECTIONS = ("in", "out")
PACKET_KINDS = ("rtp", "rtcp", "udptl", "stun", "dtls", "sctp", "t140", "msrp")
DROP_REASONS = (
    "malformed", "unknown_kind", "not_established", "auth_fail", "replay", "bad_packet",
    "dtls_failed", "no_peer", "consent_expired", "wrong_source", "send_error", "unexpected",
    "stun_rejected", "too_many_ssrcs", "no_dtls_session", "inbound_ssrc_cap", "retired_ssrc",
)
ROLES = ("client", "server")
HANDSHAKE_RESULTS = ("ok", "fingerprint_mismatch", "timeout", "protocol_error")
TCP_RESULTS = ("accepted", "rejected")
# Why an access TCP connection was closed or a frame not sent (mediad.io.tcp).
TCP_ERRORS = ("not_stun", "unauthenticated", "oversized", "unknown_frame", "idle_timeout", "busy", "congested")
COMMANDS = ("reserve", "modify", "release", "query", "list", "unknown")
CONTROL_RESULTS = ("ok", "400", "401", "404", "488", "500", "501", "503")
# Why the control endpoint closed a connection (mediad.proto.controlwire.Reason, and the endpoint's own).
CONTROL_REJECTIONS = (
    "malformed", "too_large", "version", "unexpected", "bad_proof", "bad_mac", "replay", "refused",
    "handshake_timeout", "stalled", "busy",
)


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
        self.native: list = []  # mediad.io.fastpath.Engine counter blocks, added in
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


CONTROL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ControlCollector:
    """Control requests by (command, result) and their latency by command: plain integers.

    Every Iq request is counted: a prometheus-client Counter and Histogram took
    about 6 µs a request (a lock per update), an eighth of serving a LIST.  The
    counts are kept here as integers and exported at scrape time as the families
    ``e2ae_mediad_control_requests`` (counter) and
    ``e2ae_mediad_control_request_seconds`` (histogram, ``CONTROL_BUCKETS``).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.counts: dict[tuple[str, str], int] = {}
        self.latency: dict[str, list] = {}  # command -> [count per bucket (the last: +Inf), sum]
        self.created = time.time()

    def observe(self, command: str, result: str, seconds: float) -> None:
        key = (command, result)
        self.counts[key] = self.counts.get(key, 0) + 1
        buckets = self.latency.get(command)
        if buckets is None:
            buckets = self.latency[command] = [0] * (len(CONTROL_BUCKETS) + 1) + [0.0]
        buckets[bisect.bisect_left(CONTROL_BUCKETS, seconds)] += 1
        buckets[-1] += seconds

    def describe(self):
        return self._families(empty=True)

    def collect(self):
        return self._families(empty=False)

    def _families(self, empty: bool):
        p, created = self.prefix, self.created
        requests = CounterMetricFamily(p + "control_requests", "Control (Iq) requests by command and result",
                                       labels=["command", "result"])
        seconds = HistogramMetricFamily(p + "control_request_seconds", "Control request latency", labels=["command"])
        if not empty:
            for key, count in list(self.counts.items()):
                requests.add_metric(key, count, created=created)
            for command, buckets in list(self.latency.items()):
                cumulative, total = [], 0
                for bound, count in zip((*CONTROL_BUCKETS, float("inf")), buckets[:-1]):
                    total += count
                    cumulative.append((floatToGoString(bound), total))
                seconds.add_metric([command], cumulative, buckets[-1])
        return [requests, seconds]


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
        self.control_stats = ControlCollector(p)  # requests and their latency: integers (see there)
        registry.register(self.control_stats)
        self.control_rejections = Counter(
            p + "control_rejected", "Control connections closed by mediad, by reason (garbage, wrong secret, "
            "replayed or forged frames, timeouts)", ["reason"], registry=registry,
        )
        self.control_connections = Gauge(
            p + "control_connections_active", "Open control connections", registry=registry
        )
        self.events = Counter(p + "events", "Events sent to the ALG", ["event"], registry=registry)
        self.bundle_drops = Counter(
            p + "bundle_demux_dropped", "Packets of a BUNDLE transport given to no stream (RFC 9143 9.2), by reason",
            ["reason"], registry=registry,
        )
        self.bundle_drop = [self.bundle_drops.labels(reason.name.lower()) for reason in Drop]  # by Drop value
        self.sctp_setup_seconds = Histogram(
            p + "sctp_setup_seconds", "SCTP association setup (DTLS up to SCTP established)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry,
        )
        self.data_channels_active = Gauge(
            p + "data_channels_active", "Data channels bridged to a core stream", registry=registry
        )
        self.dialogs_expired = Counter(
            p + "dialogs_expired", "Dialogs released by mediad after dialog_ttl without a request or access traffic",
            registry=registry,
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
        self.state_pending = Gauge(
            p + "state_pending", "Dialogs whose document is changed or released in memory, not yet written "
            "to Redis", registry=registry,
        )
        self.state_written = Counter(
            p + "state_written", "Dialog documents written to Redis and deletions, by the write-behind writer",
            registry=registry,
        )
        self.state_retries = Counter(
            p + "state_write_retries", "Batches of dialog documents sent again after a Redis error",
            registry=registry,
        )
        self.redis_up = Gauge(p + "redis_up", "1 when the last periodic Redis ping succeeded, else 0",
                              registry=registry)
        # A pool node's fencing (mediad.fence) and takeovers (mediad.takeover); 0 on a mediad without
        # [mediad] node_id.  Their label children are bound by those modules (their enums name the values).
        self.dialogs_fenced = Counter(
            p + "dialogs_fenced", "Dialogs this node dropped because another node owns their document now "
            "(taken over while this node was paused or cut off)", registry=registry,
        )
        self.fenced_refusals = Counter(
            p + "fenced_refusals", "Writes of a dialog's document (set, del) or events (pub) the fence refused",
            ["op"], registry=registry,
        )
        self.takeover_dialogs = Counter(
            p + "takeover_dialogs", "Dead nodes' dialogs this node took over (result taken) or ended (why not)",
            ["result"], registry=registry,
        )
        self.takeover_seconds = Histogram(
            p + "takeover_seconds", "Time of one takeover, from its lock won to every dialog restored and written",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry,
        )

        for role in ROLES:
            self.handshake_seconds.labels(role)  # from 0, so that rate() sees the first handshake
            for result in HANDSHAKE_RESULTS:
                self.handshakes.labels(role, result)
        # Per side, bound once: reserve and release change them on every call.
        self.terminations = {side: self.terminations_active.labels(side) for side in SIDES}
        self.tcp_result = {result: self.tcp_connections.labels(result) for result in TCP_RESULTS}
        self.tcp_error = {reason: self.tcp_errors.labels(reason) for reason in TCP_ERRORS}
        self.control_rejected_by = {reason: self.control_rejections.labels(reason) for reason in CONTROL_REJECTIONS}

    def watch_pool(self, side: str, pool) -> None:
        """Export the size and free ports of ``pool`` (a mediad.io.ports.PortPool) under ``side``."""
        size = len(pool.range)
        self.ports.labels(side).set(size)
        self.ports_free.labels(side).set_function(lambda: size - len(pool.in_use))

    def watch_writer(self, pending) -> None:
        """Export ``pending()`` (the daemon's dialogs not yet written) as ``state_pending``, at scrape time."""
        self.state_pending.set_function(pending)

    def add_native(self, engine) -> None:
        """Count what the native packet path (mediad.io.fastpath.Engine) relays and drops, too."""
        self.collector.native.append(engine)

    def dropped(self, reason: str) -> None:
        counts = self.drop_counts
        if reason not in counts:
            reason = "unexpected"
        counts[reason] += 1

    def control_rejected(self, reason: str) -> None:
        counter = self.control_rejected_by.get(reason)
        if counter is not None:
            counter.inc()

    def control(self, command: str, result: str, seconds: float) -> None:
        self.control_stats.observe(command if command in COMMANDS else "unknown", result, seconds)
