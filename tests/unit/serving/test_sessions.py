"""The session table's store and changelog (:mod:`stream_app.sessions`), on a real Faust
table (no broker: the changelog sends are recorded, not produced)."""

from __future__ import annotations

import asyncio
import types

from faust.types import TP

from stream_app.app import create_app
from stream_app.sessions import STORE_URL, MemorySessionStore, write_sessions
from stream_app.settings import Settings


def _table():
    app = create_app(Settings(topic_prefix="unit-"))
    return app.Table("sessions", default=None, partitions=6, store=STORE_URL)


def test_the_table_uses_the_coldstream_store_from_the_entry_point():
    table = _table()
    assert type(table.data) is MemorySessionStore


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
