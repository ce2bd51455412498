"""mediad's control concurrency and write-behind state, without sockets or Redis.

``DialogLocks`` serves one dialog's requests one at a time, in order, and different
dialogs side by side; ``WriteBehind`` decides what the one writer sends to Redis next.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from mediad.config import parse_config
from mediad.io.control import DialogLocks
from mediad.daemon import WRITE_GATHER, Daemon
from mediad.state import StateError, StateStore, WriteBehind, dialog_key
from sdp_rules.errors import UsageError


def test_write_behind_saves_each_changed_dialog_once_per_batch():
    pending = WriteBehind()
    assert not pending
    for dialog in ("a", "b", "a", "a"):
        pending.changed(dialog)
    assert pending
    assert pending.batch() == ([], ["a", "b"])
    assert not pending and pending.batch() == ([], [])


def test_write_behind_release_drops_the_pending_save():
    pending = WriteBehind()
    pending.changed("a")
    pending.changed("b")
    pending.released("a")
    assert pending.batch() == (["a"], ["b"])


def test_write_behind_reserved_again_after_release_is_deleted_then_saved():
    pending = WriteBehind()
    pending.changed("a")
    pending.released("a")
    pending.changed("a")  # the same dialog id reserved again (an INVITE retried after a 407)
    assert pending.batch() == (["a"], ["a"])


def test_write_behind_release_after_the_batch_is_taken_comes_in_the_next_one():
    pending = WriteBehind()
    pending.changed("a")
    assert pending.batch() == ([], ["a"])  # the writer is sending this one
    pending.released("a")
    assert pending.batch() == (["a"], [])  # written after it, never before


def test_write_behind_a_failed_batch_is_pending_again_under_what_changed_since():
    pending = WriteBehind()
    pending.changed("a")
    pending.changed("b")
    pending.released("c")
    pending.changed("d")
    pending.released("d")
    pending.changed("d")  # released and reserved again
    batch = pending.batch()
    assert batch == (["c", "d"], ["a", "b", "d"]) and len(pending) == 0
    pending.released("b")  # while the batch fails: b released, a changed again, c reserved again
    pending.changed("a")
    pending.changed("c")
    pending.retry(*batch)
    assert len(pending) == 4
    # c's deletion still goes before its new document; b is deleted, not saved again.
    assert pending.batch() == (["b", "c", "d"], ["a", "c", "d"])
    assert not pending


def test_write_behind_counts_dialogs_not_operations():
    pending = WriteBehind()
    pending.changed("a")
    pending.released("a")
    pending.changed("a")
    pending.changed("b")
    assert len(pending) == 2


class _Dialog:
    def __init__(self, ident: str) -> None:
        self.id = ident

    def document(self) -> dict:
        return {"dialog": self.id}


class _Store:
    """What the writer sent, batch by batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[str], list[str]]] = []

    async def write(self, deletes: list[str], documents: list[tuple[str, dict]]) -> None:
        self.batches.append((deletes, [dialog for dialog, _ in documents]))


def test_an_idle_writer_gathers_the_changes_of_several_dialogs_into_one_batch():
    async def scenario() -> list[tuple[list[str], list[str]]]:
        daemon = Daemon(parse_config("[mediad]\npacket_path = python\n"))
        daemon.loop = asyncio.get_running_loop()
        daemon.store = store = _Store()
        for ident in ("a", "b", "c"):
            daemon.dialogs[ident] = _Dialog(ident)
        daemon.changed(daemon.dialogs["a"])
        await asyncio.sleep(WRITE_GATHER / 3)
        assert store.batches == []  # still gathering
        daemon.changed(daemon.dialogs["b"])
        daemon.changed(daemon.dialogs["c"])
        del daemon.dialogs["c"]
        daemon.pending.released("c")  # as a release does
        await daemon.flush()
        return store.batches

    assert asyncio.run(scenario()) == [(["c"], ["a", "b"])]


def test_one_dialog_is_served_in_order_and_others_go_on_meanwhile():
    async def scenario() -> list[str]:
        locks = DialogLocks()
        trace: list[str] = []
        gate = asyncio.Event()

        async def request(dialog: str, name: str, wait: bool = False) -> None:
            async with locks.hold(dialog):
                trace.append(f"{name} in")
                if wait:
                    await gate.wait()
                trace.append(f"{name} out")

        first = asyncio.ensure_future(request("d1", "reserve", wait=True))
        retransmission = asyncio.ensure_future(request("d1", "retransmission"))
        other = asyncio.ensure_future(request("d2", "other"))
        await asyncio.sleep(0.01)
        assert trace == ["reserve in", "other in", "other out"]
        assert len(locks) == 1  # d2's lock is gone with its last user
        gate.set()
        await asyncio.gather(first, retransmission, other)
        assert len(locks) == 0
        return trace

    assert asyncio.run(scenario()) == ["reserve in", "other in", "other out", "reserve out",
                                       "retransmission in", "retransmission out"]


def test_a_cancelled_waiter_leaves_no_lock_behind():
    async def scenario() -> None:
        locks = DialogLocks()
        gate = asyncio.Event()

        async def holder() -> None:
            async with locks.hold("d1"):
                await gate.wait()

        async def waiter() -> None:
            async with locks.hold("d1"):
                pass

        held = asyncio.ensure_future(holder())
        await asyncio.sleep(0)
        waiting = asyncio.ensure_future(waiter())
        await asyncio.sleep(0)
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        gate.set()
        await held
        assert len(locks) == 0

    asyncio.run(scenario())


def test_store_write_deletes_then_saves_and_reconnects_after_a_lost_connection(redis_server, redis_url):
    """StateStore.write against a real Redis: order, TTL, and a connection Redis dropped."""
    async def scenario(check) -> None:
        store = StateStore(redis_url, dialog_ttl=60)
        try:
            await store.write([], [("a", {"version": 1}), ("b", {"version": 1})])
            check.set(dialog_key("c"), "old")
            await store.write(["a", "c"], [("c", {"version": 2})])  # c: deleted, then saved again
            assert check.get(dialog_key("a")) is None
            assert json.loads(check.get(dialog_key("c"))) == {"version": 2}
            assert 0 < check.ttl(dialog_key("b")) <= 60
            check.client_kill_filter(_type="normal", skipme=True)  # Redis drops the writer's connection
            await asyncio.sleep(0.1)  # ... and its FIN reaches the client
            try:
                await store.write([], [("b", {"version": 2})])
            except StateError:  # the batch that finds the connection gone may fail (redis-py's pool: same)
                await store.write([], [("b", {"version": 2})])  # the next one reconnects
            assert json.loads(check.get(dialog_key("b"))) == {"version": 2}
            await store.write([], [])
        finally:
            await store.close()

    _run_with_check(redis_server, scenario, "abc")


def test_store_write_error_reply_is_state_error_and_the_connection_stays_usable(redis_server, redis_url):
    """A command Redis refuses fails the batch (StateError) after every reply is read."""
    async def scenario(check) -> None:
        store = StateStore(redis_url, dialog_ttl=60)
        try:
            store.dialog_ttl = -5  # SET ... EX -5: Redis answers an error
            with pytest.raises(StateError):
                await store.write(["x"], [("y", {"v": 1})])
            store.dialog_ttl = 60
            await store.write([], [("y", {"v": 2})])
            assert check.get(dialog_key("y")) == b'{"v":2}'
        finally:
            await store.close()

    _run_with_check(redis_server, scenario, "y")


def test_store_load_all_reads_every_document_with_its_ttl(redis_server, redis_url):
    """Every dialog document, in one round trip per SCAN page; unreadable ones skipped."""
    async def scenario(check) -> None:
        store = StateStore(redis_url, dialog_ttl=60)
        try:
            await store.write([], [(f"l{i}", {"dialog": f"l{i}"}) for i in range(1200)])
            check.set(dialog_key("l-bad"), "not json")
            check.set(dialog_key("l-forever"), '{"dialog": "l-forever"}')
            loaded = {doc["dialog"]: ttl for doc, ttl in await store.load_all() if doc["dialog"].startswith("l")}
            assert len(loaded) == 1201 and loaded["l-forever"] is None
            assert all(0 < loaded[f"l{i}"] <= 60 for i in range(1200))
        finally:
            await store.close()

    _run_with_check(redis_server, scenario, [f"l{i}" for i in range(1200)] + ["l-bad", "l-forever"])


def _run_with_check(redis_server, scenario, dialogs) -> None:
    """Run ``scenario(check)`` with a client of its own on the test Redis; delete ``dialogs``' keys after."""
    check = redis_server.client()
    try:
        asyncio.run(scenario(check))
    finally:
        check.delete(*(dialog_key(d) for d in dialogs))
        check.close()


def test_store_load_all_skips_json_that_is_no_document(redis_server, redis_url):
    """JSON that is not an object, and nesting too deep to read, are unreadable documents: skipped,
    never a restart's or a survivor's crash (``document.get`` on a list, RecursionError)."""
    async def scenario(check) -> None:
        store = StateStore(redis_url, dialog_ttl=60)
        try:
            check.set(dialog_key("n-list"), "[1]")
            check.set(dialog_key("n-text"), '"n-text"')
            check.set(dialog_key("n-deep"), "[" * 100_000 + "]" * 100_000)
            check.set(dialog_key("n-good"), '{"dialog": "n-good"}')
            loaded = [doc for doc, _ in await store.load_all()]
            assert all(isinstance(doc, dict) for doc in loaded)
            assert "n-good" in [doc.get("dialog") for doc in loaded]
        finally:
            await store.close()

    _run_with_check(redis_server, scenario, ["n-list", "n-text", "n-deep", "n-good"])


@pytest.mark.parametrize("broken", [{"version": float("inf")}, {"streams": [{"stream_id": 1e999, "kind": "srtp"}]},
                                    {"streams": "srtp"}, {"transports": [{"spec": []}]}])
def test_a_malformed_document_is_not_adopted_and_adopt_does_not_raise(broken):
    """A restart or a survivor reading a malformed document (JSON numbers 1e999 read as infinity
    among them) logs it and goes on: ``adopt`` returns None, nothing is held."""
    async def scenario():
        daemon = Daemon(parse_config("[mediad]\npacket_path = python\n"))
        daemon.loop = asyncio.get_running_loop()
        document = {"dialog": "m1", "version": 1, "streams": [], **broken}
        return await daemon.adopt(document, None), daemon.dialogs, daemon.access_pool.in_use

    assert asyncio.run(scenario()) == (None, {}, set())


def test_a_daemon_used_before_start_is_a_usage_error():
    """Redis and the loop come with start(): using them before is our defect, said so (not an assert)."""
    daemon = Daemon(parse_config("[mediad]\npacket_path = python\n"))
    with pytest.raises(UsageError, match="before start"):
        asyncio.run(daemon.restore())
    with pytest.raises(UsageError, match="before start"):
        asyncio.run(daemon.adopt({"dialog": "u1", "streams": []}, None))
