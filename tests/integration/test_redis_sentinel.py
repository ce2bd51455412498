"""Calls through a Redis Sentinel set that loses its master twice: SENTINEL FAILOVER, then kill -9.

One master, one replica, three sentinels (quorum 2) on loopback; the edge
(Kamailio + plugin, mediad) finds the master through the sentinels
(``[redis] sentinels``).  Calls are up (SIPp) when the master is failed over,
then when the new master is killed; each switch is probed with new calls
(answered 200, or 503 with a Retry-After: nothing else) and with the plugin's
own store (a script every 20 ms: how long it fails, how long one attempt can
take).  Every call that was up ends with its BYE answered and nothing left in
Redis or mediad.  The figures are printed (``pytest -s``) and kept in
docs/redis.rst.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from mediad.config import load_config
from mediad.redis_client import settings
from mediad.redis_keys import ALG_DIALOG, Component
from plugin.state import DialogStore, dialog_key
from sdp_rules.errors import UnavailableError
from tests.integration.edge_harness import Edge, Sipp, running_edge
from tests.integration.redis_ha import SentinelSet

pytestmark = pytest.mark.integration

CALLS = 6  # held through both switches
HOLD_MS = 16000
PROBES = 40  # new calls during each switch, at PROBE_RATE per second
PROBE_RATE = 10


@pytest.fixture(scope="module")
def ha():
    s = SentinelSet().start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def edge(ha):
    # SIPp sends no DTLS: calls held past mediad's handshake timeout stay up ("keep")
    with running_edge(ha, redis_extra=ha.redis_extra, dtls_failure="keep") as e:
        yield e


class StoreProbe(threading.Thread):
    """The plugin's store, as a Kamailio worker uses it, one script every 20 ms: when it failed
    and how long each attempt took."""

    def __init__(self, edge: Edge) -> None:
        super().__init__(daemon=True)
        config = load_config(edge.config_path)
        self.store = DialogStore(settings(config, Component.PLUGIN), 60, timeout=config.plugin_iq_timeout_ms / 1000)
        self.samples: list[tuple[float, bool, float]] = []  # (start, ok, duration)
        self.done = threading.Event()

    def run(self) -> None:
        key = dialog_key("probe-" + "0" * 26)
        while not self.done.is_set():
            start = time.monotonic()
            try:
                self.store.script("touch", [key], 60)
                ok = True
            except UnavailableError:
                ok = False
            self.samples.append((start, ok, time.monotonic() - start))
            time.sleep(0.02)
        self.store.close()

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join(5)
        failed = [s for s in self.samples if not s[1]]
        outage = 0.0
        if failed:
            first = failed[0][0]
            after = [s for s in self.samples if s[0] > failed[-1][0] and s[1]]
            outage = (after[0][0] if after else self.samples[-1][0]) - first
        return {"outage_s": round(outage, 2), "failed_attempts": len(failed),
                "slowest_attempt_s": round(max(s[2] for s in self.samples), 3)}


def _switch(edge: Edge, ha: SentinelSet, kind: str) -> dict[str, float]:
    """New calls and the store probe while the master is switched by ``kind``."""
    probe = Sipp("wic_probe_uac.xml", "127.0.0.1", remote=edge.access, calls=PROBES, rate=PROBE_RATE, limit=10,
                 timeout=60, extra=["-s", "callee", "-d", "100"])
    store = StoreProbe(edge)
    try:
        store.start()
        probe.start()
        time.sleep(1.0)
        old = ha.master_port()
        started = time.monotonic()
        if kind == "failover":
            ha.failover()
        else:
            ha.kill_master()
        ha.wait_master_not(old)
        elected = time.monotonic() - started
        assert probe.wait(90) == 0, probe.diagnostics()
        figures = store.stop()
        refusals = probe.received("SIP/2.0 503")
        assert all(m.header("Retry-After") for m in refusals)
        refused = {m.header("Call-ID")[0] for m in refusals}
        answered = {m.header("Call-ID")[0] for m in probe.received("SIP/2.0 200") if m.header("CSeq") == ["1 INVITE"]}
        figures.update(sentinel_switch_s=round(elected, 2), new_calls=PROBES, new_calls_503=len(refused),
                       new_calls_answered=len(answered))
        return figures
    finally:
        store.done.set()
        probe.stop()


def test_calls_survive_a_sentinel_failover_then_a_kill_of_the_new_master(edge, ha):
    # the core waits for the held calls' BYEs longer than the harness's 10 s receive timeout
    uas = Sipp("core_uas.xml", "127.0.0.3", calls=CALLS + 2 * PROBES, timeout=90, extra=["-recv_timeout", "40000"])
    uas.port = edge.conf.next_hop_port
    held = Sipp("wic_call_uac.xml", "127.0.0.1", remote=edge.access, calls=CALLS, rate=20, limit=CALLS, timeout=90,
                extra=["-s", "callee", "-d", str(HOLD_MS)])
    admin = ha.client()
    figures = {}
    try:
        uas.start()
        time.sleep(0.2)
        held.start()
        deadline = time.monotonic() + 10
        # mediad writes its document at the reservation, the plugin its record with the answer:
        # wait for both of every call.
        while time.monotonic() < deadline and (len(admin.keys("e2ae:agw:dialog:{*")) < CALLS
                                               or len(admin.keys("e2ae:alg:dialog:{*")) < CALLS):
            time.sleep(0.05)
        assert len(admin.keys("e2ae:agw:dialog:{*")) == CALLS
        assert len(admin.keys("e2ae:alg:dialog:{*")) == CALLS
        admin.close()
        ha.wait_replica_synced()
        figures["failover"] = _switch(edge, ha, "failover")
        ha.wait_replica_synced()
        figures["kill"] = _switch(edge, ha, "kill")
        assert held.wait(90) == 0, held.diagnostics()
        print(f"\nSentinel switch figures: {figures}")
        # every call held through both switches ended with its BYE answered: 0 lost
        oks = {m.header("Call-ID")[0] for m in held.received("SIP/2.0 200") if m.header("CSeq") == ["2 BYE"]}
        assert len(oks) == CALLS
    finally:
        held.stop()
        uas.stop()
    # A call whose BYE came while no master answered is released by the plugin's retry queue
    # (1, 2, 4, ... s).  What may stay: the record of a new call whose write the killed master
    # ran (and replicated) without answering (the call was answered 503), and mediad's
    # document of it; never anything of a call that was up, never without its TTL.
    left = edge.wait_no_dialogs(30)
    queued = re.findall(r'e2ae_plugin_release_retries_total\{result="(\w+)"\} (\d+)', edge.plugin_metrics())
    admin = ha.client()
    try:
        orphans = {}
        for key in left:
            raw = admin.get(key) if key.startswith(ALG_DIALOG) else None
            orphans[key] = (json.loads(raw)["call_id"] if raw else None, admin.ttl(key))
    finally:
        admin.close()
    print(f"releases retried: {queued}; left after the kill (call, TTL s): {orphans}")
    assert edge.mediad_dialogs() == []
    assert not any(call in oks for call, _ in orphans.values()), orphans
    assert all(ttl > 0 for _, ttl in orphans.values()), orphans
    # at most the new calls in flight when the master died (the probe's limit)
    assert len([k for k in orphans if k.startswith(ALG_DIALOG)]) <= 10, orphans
    for kind, f in figures.items():
        assert f["new_calls_503"] + f["new_calls_answered"] == PROBES, (kind, f)
        # no hung worker: one attempt of the store never takes much past its timeout
        assert f["slowest_attempt_s"] < 2.0, (kind, f)
