"""The session table's store and changelog doors (:mod:`stream_app.sessions`), on a real
Faust table (no broker: the changelog send is recorded, not produced)."""

from __future__ import annotations

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


async def test_writes_go_to_the_store_with_their_partition_and_to_the_changelog(monkeypatch):
    table = _table()
    sent = []
    monkeypatch.setattr(table, "send_changelog", lambda p, k, v, **kw: sent.append((p, k, v, kw)))
    write_sessions(table, {"u1": (1, [["i1", 0, 1.0, "e1"]]), "u2": (2, [["i2", 1, 2.0, "e2"]])})
    assert table.data.get("u1") == [["i1", 0, 1.0, "e1"]]
    assert (table.data.partition_of("u1"), table.data.partition_of("u2")) == (1, 2)
    assert [(p, k) for p, k, _, _ in sent] == [(1, "u1"), (2, "u2")]
    # a forget: the key leaves the store and the changelog gets a tombstone
    write_sessions(table, {"u1": (1, None)})
    assert table.data.get("u1") is None and table.data.partition_of("u1") is None
    assert sent[-1] == (1, "u1", None, {"value_serializer": "raw"})
    # Faust's own bookkeeping now works: keys of partitions this worker lost are dropped
    changelog = table.changelog_topic.get_topic_name()
    await table.data.on_recovery_completed({TP(changelog, 1)}, set())
    assert table.data.get("u2") is None
