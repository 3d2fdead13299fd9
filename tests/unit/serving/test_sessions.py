"""The session table's store and changelog (:mod:`stream_app.sessions`), on a real Faust
table (no broker: the changelog sends are recorded, not produced)."""

from __future__ import annotations

import asyncio
import types

from faust.types import TP

from stream_app.app import create_app
from stream_app.sessions import (
    MemorySessionStore,
    RocksDBSessionStore,
    expired_sessions,
    last_activity,
    write_sessions,
)
from stream_app.settings import Settings


def _table():
    app = create_app(Settings(topic_prefix="unit-"))
    return app.Table("sessions", default=None, partitions=6)


def test_the_table_uses_the_coldstream_store_from_the_entry_point():
    table = _table()
    assert type(table.data) is MemorySessionStore  # dev profile: memory
    prod = create_app(Settings(profile="prod", data_dir="/nonexistent-not-opened"))
    assert type(prod.Table("s", default=None, partitions=6).data) is RocksDBSessionStore


class _Producer:
    """Records sends (a unit test of one function: the real producer is covered by the
    integration suite's restart-from-changelog test)."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.futures: list[asyncio.Future] = []

    async def send(self, topic, key, value, partition, timestamp, headers):
        self.sent.append((topic, key, value, partition))
        fut = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


async def test_writes_go_to_the_store_with_their_partition_and_to_the_changelog(monkeypatch):
    table = _table()
    producer = _Producer()
    persisted = []
    monkeypatch.setattr(
        table.data, "set_persisted_offset", lambda tp, off: persisted.append((tp, off))
    )
    futures = await write_sessions(
        table, {"u1": (1, [["i1", 0, 1.0, "e1"]]), "u2": (2, [["i2", 1, 2.0, "e2"]])}, producer
    )
    assert table.data.get("u1") == [["i1", 0, 1.0, "e1"]]
    assert (table.data.partition_of("u1"), table.data.partition_of("u2")) == (1, 2)
    changelog = table.changelog_topic.get_topic_name()
    # the table's own codec: Faust's recovery decodes exactly these bytes
    assert producer.sent[0] == (changelog, b'"u1"', b'[["i1",0,1.0,"e1"]]', 1)
    assert [s[3] for s in producer.sent] == [1, 2] and futures == producer.futures
    # a delivered record's offset becomes the store's persisted offset of its partition
    futures[0].set_result(types.SimpleNamespace(offset=41))
    futures[1].set_exception(RuntimeError("broker down"))
    await asyncio.sleep(0)
    assert persisted == [(TP(changelog, 1), 41)]
    # a forget: the key leaves the store and the changelog gets a tombstone
    await write_sessions(table, {"u1": (1, None)}, producer)
    assert table.data.get("u1") is None and table.data.partition_of("u1") is None
    assert producer.sent[-1] == (changelog, b'"u1"', None, 1)
    # Faust's own bookkeeping now works: keys of partitions this worker lost are dropped
    await table.data.on_recovery_completed({TP(changelog, 1)}, set())
    assert table.data.get("u2") is None


def _rocks_table(tmp_path):
    settings = Settings(topic_prefix="unit-", data_dir=tmp_path, session_store="rocksdb")
    app = create_app(settings)
    return app.Table("sessions", default=None, partitions=6)


def test_the_rocksdb_store_writes_per_partition_and_scans_in_key_order(tmp_path):
    table = _rocks_table(tmp_path)
    store = table.data
    assert type(store) is RocksDBSessionStore
    for i in range(25):
        store.put(i % 2, f"u{i:02d}", [["1", 0, float(i), f"e{i}"]])
    assert store.get("u03") == [["1", 0, 3.0, "e3"]] and store.partition_of("u03") == 1
    # partition 0 holds the even users, each partition its own database under the data dir
    assert sorted(p.name for p in tmp_path.rglob("*.db"))[:1] and store.partition_of("u04") == 0
    seen, cursor = [], None
    while True:
        chunk, cursor = store.scan(0, cursor, 5)
        seen += [k for k, _ in chunk]
        if cursor is None:
            break
    assert seen == [f"u{i:02d}" for i in range(0, 25, 2)]
    store.remove(0, "u04")
    assert store.get("u04") is None


def test_expiry_finds_idle_sessions_by_event_time_and_goes_on_where_it_stopped():
    table = _table()
    store = table.data
    for i in range(10):  # u0..u9 last active at event time i; u1 also has a forget marker
        value = {"forgotten_at": 100.0, "h": []} if i == 1 else [["1", 0, float(i), f"e{i}"]]
        store.put(0, f"u{i}", value)
    cursors: dict = {}
    first = expired_sessions(store, [0], cursors, older_than=5.0, limit=4)
    rest = expired_sessions(store, [0], cursors, older_than=5.0, limit=100)
    assert set(first) | set(rest) == {"u0", "u2", "u3", "u4"}  # u1's marker is recent (100)
    assert all(v == (0, None) for v in {**first, **rest}.values())
    assert len(first) <= 4 and cursors[0] is None  # the second pass reached the end
    assert (
        last_activity([["1", 0, 3.0, "e"], ["2", 0, 7.5, "f"]]) == 7.5 and last_activity([]) is None
    )
