"""Signalling-side metrics of the Kamailio plugin (Prometheus).

Every metric is defined here, against an injected registry.  Kamailio's
workers are forked processes, so in Kamailio the plugin runs
``prometheus_client`` in multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` is
set (by :mod:`plugin.kemi`) before ``prometheus_client`` is imported, each
worker writes its own memory-mapped files there, and the HTTP handler (a
Kamailio xhttp route on ``[plugin] metrics``) aggregates them at scrape time
with :func:`exposition`.  Labels are bounded: never a Call-ID.

Names (documented in the README):

* ``e2ae_plugin_sdp_rewrites_total{direction, kind, result}``: SDP bodies
  handled; direction ``access_to_core`` / ``core_to_access``, kind ``offer`` /
  ``answer``, result ``rewritten`` / ``passthrough`` / ``cached`` / ``error``.
* ``e2ae_plugin_iq_latency_seconds{command}``: round trip of Iq requests to
  mediad (reserve, modify, release), failures included; a release at a
  dialog's end is not waited for, so ``release`` counts only the releases
  that are (retries, the undoing of a reservation).
* ``e2ae_plugin_sdp_seconds{direction}``: time the plugin spent on one SDP
  body (rules, Redis, Iq round trip): the latency it adds to that message.
* ``e2ae_plugin_sip_errors_total{status}``: SIP errors the plugin answered
  (400, 413, 415, 488, 500, 503).
* ``e2ae_plugin_releases_total{reason}``: dialogs released (bye, failure,
  timeout, operator, dtls_failed, media_lost, answer_failed, refused).
* ``e2ae_plugin_dtls_failures_total{reason}``: DTLS failure events received
  from mediad.
* ``e2ae_plugin_call_transitions_total{state, event, next}``: the call
  lifecycle's transitions (:mod:`plugin.lifecycle`);
  ``e2ae_plugin_lifecycle_errors_total{state, event}``: events the table has
  no transition for.
* ``e2ae_plugin_call_ends_total{result}``: calls the edge ended itself with a
  BYE to each side: ``bye`` (sent), ``gone`` (the dialog ended first),
  ``error`` (the dialog module refused).
* ``e2ae_plugin_drops_total{reason}``: requests left unanswered: ``bad_ack``
  (an ACK failing the sanity checks), ``unanswerable`` (not even the headers
  a response needs can be read), ``bad_reply`` (a reply discarded: its
  Content-Length does not frame its body, RFC 3261 18.3, or it is a 2xx to an
  INVITE without a To tag, RFC 3261 12.1.1).
* ``e2ae_plugin_reinvites_total{side, result}``: re-INVITEs the edge sent
  itself because a dialog's media moved to a survivor (:mod:`plugin.reinvite`):
  ``sent``, ``answered``, ``retry`` (491), ``failed`` (an error or no answer:
  the call is ended), ``refused`` (none could be built: the call is ended).
* ``e2ae_plugin_release_retries_total{result}``: releases that failed and were
  queued (``queued``), then ``done`` (the retry released), ``nothing`` (another
  path had released it), ``failed`` (tried again, still failing), ``abandoned``
  (after the last try) or ``dropped`` (the queue was full).
* ``e2ae_plugin_call_attempts_total{side}``: initial INVITEs taken in (a
  transaction created), by the side they came from.
* ``e2ae_plugin_call_outcomes_total{status}``: the final status of those
  INVITEs: ``200`` when the dialog module confirms the dialog, the code of the
  final error relayed or answered (by the plugin, or by Kamailio's
  transaction layer: 408).
* ``e2ae_plugin_dialogs{state}``: dialogs Kamailio's dialog module holds now
  (``active``, ``early``), read from its statistics at scrape time.
* ``e2ae_plugin_pool_calls_total{node}``: dialogs placed on each media node of
  a pool (``plugin.pool``; node ids are the operator's, a bounded set).
* ``e2ae_plugin_pool_nodes{state}``: media nodes by standing (``active``,
  ``draining``, ``full``, ``disabled``) in a worker's last read of the pool
  (the most recent worker's, in multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Label values shown (at 0) from the start, so that increase() and rate() see their first event
# (a series born at 1 shows no increase); others appear when first counted.
SIDES = ("access", "core")
ERROR_STATUSES = ("400", "413", "415", "488", "500", "503")
RELEASE_REASONS = ("bye", "failure", "timeout", "operator", "dtls_failed", "media_lost", "answer_failed",
                   "refused")
DTLS_FAILURE_REASONS = ("fingerprint_mismatch", "timeout", "protocol_error")
CALL_OUTCOMES = ("200",) + ERROR_STATUSES

SDP_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
               0.25, 0.5, 1.0, 2.5)
IQ_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        kw = {"registry": registry}
        self.rewrites = Counter(
            "e2ae_plugin_sdp_rewrites", "SDP bodies handled by the plugin",
            ["direction", "kind", "result"], **kw)
        self.iq_latency = Histogram(
            "e2ae_plugin_iq_latency_seconds", "Round trip of Iq requests to mediad",
            ["command"], buckets=IQ_BUCKETS, **kw)
        self.sdp_seconds = Histogram(
            "e2ae_plugin_sdp_seconds", "Time spent by the plugin on one SDP body",
            ["direction"], buckets=SDP_BUCKETS, **kw)
        self.sip_errors = Counter(
            "e2ae_plugin_sip_errors", "SIP error replies sent by the plugin", ["status"], **kw)
        self.releases = Counter(
            "e2ae_plugin_releases", "Dialogs released", ["reason"], **kw)
        self.dtls_failures = Counter(
            "e2ae_plugin_dtls_failures", "DTLS failure events received from mediad", ["reason"], **kw)
        self.call_attempts = Counter(
            "e2ae_plugin_call_attempts", "Initial INVITEs taken in, by side", ["side"], **kw)
        self.call_outcomes = Counter(
            "e2ae_plugin_call_outcomes", "Final status of initial INVITEs", ["status"], **kw)
        self.transitions = Counter(
            "e2ae_plugin_call_transitions", "Call lifecycle transitions", ["state", "event", "next"], **kw)
        self.lifecycle_errors = Counter(
            "e2ae_plugin_lifecycle_errors", "Call events without a transition", ["state", "event"], **kw)
        self.call_ends = Counter(
            "e2ae_plugin_call_ends", "Calls the edge ended with a BYE to each side", ["result"], **kw)
        self.drops = Counter(
            "e2ae_plugin_drops", "Requests the plugin could not answer, replies it discarded", ["reason"], **kw)
        self.release_retries = Counter(
            "e2ae_plugin_release_retries", "Releases queued for retry and their outcome", ["result"], **kw)
        self.reinvites = Counter(
            "e2ae_plugin_reinvites", "re-INVITEs the edge sent itself (media moved), by side and outcome",
            ["side", "result"], **kw)
        self.pool_placed = Counter(
            "e2ae_plugin_pool_calls", "Dialogs placed on each media node of the pool", ["node"], **kw)
        self.pool_nodes = Gauge(
            "e2ae_plugin_pool_nodes", "Media nodes of the pool by standing", ["state"],
            multiprocess_mode="livemostrecent", **kw)
        for counter, values in ((self.call_attempts, SIDES), (self.call_outcomes, CALL_OUTCOMES),
                                (self.sip_errors, ERROR_STATUSES), (self.releases, RELEASE_REASONS),
                                (self.dtls_failures, DTLS_FAILURE_REASONS)):
            for value in values:
                counter.labels(value)

    def rewrite(self, origin: str, kind: str, result: str) -> None:
        self.rewrites.labels(direction(origin), kind, result).inc()

    def pool_view(self, standings) -> None:
        """The pool as one worker read it last: {plugin.pool.Standing: count}."""
        for standing, count in standings.items():
            self.pool_nodes.labels(standing.value).set(count)


def direction(origin: str) -> str:
    return "access_to_core" if origin == "access" else "core_to_access"


DIALOG_STATES = ("active", "early")


class _DialogsCollector:
    """``e2ae_plugin_dialogs{state}`` from values read at scrape time (the dialog module's)."""

    def __init__(self, dialogs: dict[str, float]) -> None:
        self.dialogs = dialogs

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("e2ae_plugin_dialogs", "Dialogs held by the dialog module, by state",
                                   labels=["state"])
        for state, value in self.dialogs.items():
            family.add_metric([state], value)
        yield family


def exposition(path: str, dialogs: dict[str, float] | None = None) -> bytes:
    """The text exposition of every worker's metrics in the multiprocess directory ``path``,
    and ``dialogs`` (state -> count) as ``e2ae_plugin_dialogs`` when given."""
    from prometheus_client import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    if dialogs is not None:
        registry.register(_DialogsCollector(dialogs))
    return generate_latest(registry)


def reset_directory(path: str) -> None:
    """Empty the multiprocess directory at start (stale files from a previous run)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            try:
                os.unlink(os.path.join(path, name))
            except OSError:
                pass


__all__ = ["Metrics", "DIALOG_STATES", "direction", "exposition", "reset_directory", "IQ_BUCKETS", "SDP_BUCKETS"]
