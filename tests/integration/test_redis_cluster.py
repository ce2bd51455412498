"""The edge on a real 3-master Redis Cluster: every script of a call runs there, none CROSSSLOT.

Three ``redis-server --cluster-enabled yes`` on loopback joined by ``redis-cli
--cluster create``; the plugin, mediad and e2ae-ctl use ``[redis] cluster =
on``.  The plugin's scripts (with both tags' keys) and mediad's batches run
over dialogs spread on the masters; a call with a re-INVITE goes through
Kamailio + plugin + mediad; calls held on several masters are listed by
e2ae-ctl, restored by a restarted mediad (SCAN on every master) and end
cleanly.
"""

from __future__ import annotations

import time

import pytest

import asyncio

from mediad.config import load_config, parse_config
from mediad.redis_client import connect, settings
from mediad.redis_keys import AGW_DIALOG, ALG_DIALOG, Component, dialog_of
from mediad.state import StateStore
from plugin.ctl import Edge as CtlEdge
from plugin.state import TAKEN, DialogRecord, DialogStore, dialog_id
from tests.integration.edge_harness import Edge, Sipp, running_edge
from tests.integration.redis_ha import ClusterSet

pytestmark = pytest.mark.integration

CALLS = 8
HOLD_MS = 6000


@pytest.fixture(scope="module")
def cluster():
    c = ClusterSet().start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def edge(cluster):
    # SIPp sends no DTLS: calls held past mediad's handshake timeout stay up ("keep")
    with running_edge(cluster, redis_extra=cluster.redis_extra, dtls_failure="keep") as e:
        yield e


def test_the_plugins_scripts_and_mediads_writer_run_on_every_master(cluster):
    """Store level (no Kamailio): every script with both tags' keys, and mediad's batches,
    over dialogs spread on the three masters."""
    config = parse_config("[edge]\naccess_sip = 127.0.0.1:5060\ncore_sip = 127.0.0.2:5060\n[redis]\n"
                          f"url = {cluster.url}\n{cluster.redis_extra}\n")
    store = DialogStore(settings(config, Component.PLUGIN), 60)
    ids = [dialog_id(f"store-{n}", "ftag") for n in range(12)]
    try:
        store.load_scripts()  # on every master
        for n, ident in enumerate(ids):
            assert store.create(DialogRecord(ident, f"store-{n}", "ftag", "access")) == (True, None)
            claim = store.claim(f"store-{n}", ("ftag", "ttag"), create=False)  # keys of both tags
            claim.record.callee_tag = "ttag"
            claim.commit(claim.record)
            assert store.touch(f"store-{n}", "ttag", "ftag")

        async def mediad() -> list:
            state = StateStore(settings(config, Component.MEDIAD), 60)
            try:
                await state.write([], [(ident, {"dialog": ident, "v": 1}) for ident in ids])
                await state.write(ids[:4], [(ids[4], {"dialog": ids[4], "v": 2})])
                return await state.load_all()
            finally:
                await state.close()

        documents = asyncio.run(mediad())
        assert sorted(d["dialog"] for d, _ in documents) == sorted(ids[4:])
        assert [d["v"] for d, _ in documents if d["dialog"] == ids[4]] == [2]
        spread = {port for port, keys in cluster.keys_per_node("e2ae:agw:dialog:{*").items() if keys}
        assert len(spread) >= 2
        assert [store.take(f"store-{n}", ("ttag", "ftag"))[0] for n in range(12)] == [TAKEN] * 12
    finally:
        store.close()
        admin = cluster.client()
        for key in admin.scan_iter(match="e2ae:*:dialog:*"):
            admin.delete(key)
        admin.close()


def test_a_call_with_a_reinvite_on_a_cluster(edge, cluster):
    uas = Sipp("core_uas_reinvite.xml", "127.0.0.3", timeout=30)
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_reinvite_uac.xml", "127.0.0.1", remote=edge.access, timeout=30, extra=["-s", "callee"],
               keys={"reinvite_tls_id": "6ba1e1b4d7c5a3f2e0d9c8b7a6f5e4d3"})
    try:
        uas.start()
        time.sleep(0.2)
        assert uac.run() == 0, uac.diagnostics() + "\n" + uas.diagnostics()
        assert uas.wait(15) == 0, uas.diagnostics()
        assert len(uas.received("INVITE ")) == 2 and len(uas.received("BYE ")) == 1
    finally:
        uac.stop()
        uas.stop()
    assert edge.wait_no_dialogs() == [] and edge.mediad_dialogs() == []


def test_held_calls_survive_a_mediad_restart_on_a_cluster(edge, cluster):
    uas = Sipp("core_uas.xml", "127.0.0.3", calls=CALLS, timeout=60)
    uas.port = edge.conf.next_hop_port
    uac = Sipp("wic_call_uac.xml", "127.0.0.1", remote=edge.access, calls=CALLS, rate=20, limit=CALLS,
               timeout=60, extra=["-s", "callee", "-d", str(HOLD_MS)])
    try:
        uas.start()
        time.sleep(0.2)
        uac.start()
        deadline = time.monotonic() + 15
        per_node: dict[int, list[str]] = {}
        while time.monotonic() < deadline:
            per_node = cluster.keys_per_node("e2ae:*:dialog:{*")
            if sum(len(k) for k in per_node.values()) == 2 * CALLS:
                break
            time.sleep(0.05)
        # both sides' keys of each dialog on the same node; the dialogs spread over the masters
        held: dict[str, set[int]] = {}
        for port, keys in per_node.items():
            for key in keys:
                prefix = ALG_DIALOG if key.startswith(ALG_DIALOG) else AGW_DIALOG
                held.setdefault(dialog_of(prefix, key), set()).add(port)
        assert len(held) == CALLS and all(len(ports) == 1 for ports in held.values()), per_node
        assert len({p for ports in held.values() for p in ports}) >= 2, per_node

        # e2ae-ctl reads the records of every master
        config = load_config(edge.config_path)
        ctl = CtlEdge(connect(settings(config, Component.CTL), 2.0), [], None)
        try:
            assert {r.id for r in ctl.records()} == set(held)
        finally:
            ctl.redis.close()

        # mediad restarted mid-call: it restores every dialog, from every master
        edge.stop_mediad()
        edge.start_mediad()
        assert set(edge.mediad_dialogs()) == set(held)

        assert uac.wait(60) == 0, uac.diagnostics() + "\n" + uas.diagnostics()
        assert uas.wait(20) == 0, uas.diagnostics()
        assert len(uas.received("BYE ")) == CALLS
    finally:
        uac.stop()
        uas.stop()
    assert edge.wait_no_dialogs(10) == [] and edge.mediad_dialogs() == []
    assert "CROSSSLOT" not in edge.kamailio_log_text() + edge.mediad_log.read_text()


def test_fenced_writes_and_events_run_on_every_master(cluster):
    """A pool node's fenced batches (mediad.fence) over dialogs spread on the masters: the
    script loaded on each master at first use, a survivor's document refused to the paused
    node, a fenced event published."""
    import json

    from tests.unit.test_fence import Node

    config = parse_config(f"[redis]\nurl = {cluster.url}\n{cluster.redis_extra}\n")
    ids = [dialog_id(f"fence-{n}", "ftag") for n in range(12)]
    admin = cluster.client()

    async def run() -> None:
        x = Node(settings(config, Component.MEDIAD), "x")
        y = Node(settings(config, Component.MEDIAD), "y")
        try:
            for ident in ids:
                x.hold(ident)
            await x.save(*ids)  # every master answers NOSCRIPT first
            y.fence.adopted(ids[0], json.loads(admin.get(f"{AGW_DIALOG}{{{ids[0][:16]}}}{ids[0][16:]}")))
            y.hold(ids[0])
            await y.save(ids[0])
            await x.save(*ids)
            assert x.dropped == [ids[0]] and y.dropped == []
            await x.fence.publish({"dialog": ids[1], "event": "e"})
            await x.fence.publish({"dialog": ids[0], "event": "e"})  # not x's: refused, nothing sent
            assert x.sample("e2ae_mediad_fenced_refusals_total", op="pub") == 1
        finally:
            await x.store.close()
            await y.store.close()

    try:
        asyncio.run(run())
        owners = {}
        for key in admin.scan_iter(match="e2ae:agw:dialog:*"):
            owners[dialog_of(AGW_DIALOG, key)] = json.loads(admin.get(key))["node"]
        assert owners == {ident: ("y" if ident == ids[0] else "x") for ident in ids}
        assert len({port for port, keys in cluster.keys_per_node("e2ae:agw:dialog:{*").items() if keys}) >= 2
    finally:
        for key in admin.scan_iter(match="e2ae:agw:dialog:*"):
            admin.delete(key)
        admin.close()
