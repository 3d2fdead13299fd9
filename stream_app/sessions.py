"""Session state: user -> last events, a Faust table on a coldstream store.

The fast path (:mod:`stream_app.transport`) writes sessions outside a Faust stream (there is
no "current event" to take a partition from), so it writes through the table's public parts
instead of around them:

* the **store**: :class:`MemorySessionStore` is Faust's in-memory store with writes that name
  their partition (:meth:`MemorySessionStore.put`, :meth:`MemorySessionStore.remove`), so
  Faust's own key -> partition bookkeeping holds and the keys of revoked partitions are
  dropped when the worker loses them. It is registered in Faust's ``faust.stores``
  entry-point namespace as ``coldstream-memory`` (pyproject.toml), Faust's documented way
  to add a store, and selected with the app's ``store`` setting; :class:`RocksDBSessionStore`
  (``coldstream-rocksdb``) is the same on Faust's RocksDB store, for user bases that do not
  fit in memory;
* the **changelog**: records encoded by the table's changelog topic
  (``prepare_key``/``prepare_value``: the table's codec) and sent with the app's producer to
  the event's input partition (the changelog is co-partitioned with ``clicks``/``purchases``);
  a delivered record's offset becomes the store's persisted offset, which is what
  ``Table.send_changelog``'s callback does. ``Table.send_changelog`` itself goes through
  Faust's producer buffer (a ``FutureMessage`` and a queue hop per record): measured with
  ``coldstream bench serve`` on 2 cores, it cut the worker from 11.0k to 7.4k events/s, so
  the fast path does the same steps without the buffer.

:func:`write_sessions` applies one micro-batch's session updates through both (one send per
record); :func:`stage_sessions` queues the changelog records into the micro-batch's
:class:`~stream_app.produce.OutputBatch` instead (one send per partition batch).

What a session holds is defined here too, for every module that reads or builds one: a
:data:`History` of :data:`SessionEntry` lists, read by position through the names
:data:`ITEM_ID`, :data:`EVENT_TYPE`, :data:`TS`, :data:`EVENT_ID` (built by
:func:`session_entry`), or a forget marker (:func:`load_session`, :func:`dump_session`).
Entries stay plain lists: the table's JSON codec writes them, and the changelog carries them,
as they always were, so a store or changelog written before reads the same.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from faust.stores.memory import Store as FaustMemoryStore
from faust.stores.rocksdb import Store as FaustRocksDBStore
from faust.types import TP

if TYPE_CHECKING:
    from stream_app.produce import OutputBatch

MEMORY_URL = "coldstream-memory://"
"""The in-memory store (entry point ``coldstream-memory`` in ``faust.stores``): tests, demo.
It is the app's ``store`` setting (a table-level store URL would need a path, and Faust's
RocksDB store takes its file name from the path)."""
ROCKSDB_URL = "coldstream-rocksdb://"
"""The disk-backed store (entry point ``coldstream-rocksdb``, Faust's RocksDB store through
``rocksdict``): a user base larger than memory; its persisted changelog offsets make a
restart replay only what it has not seen."""
STORE_URL = MEMORY_URL

SessionEntry = list[Any]
"""One event of a session, as stored: ``[item_id, event_type, ts, event_id]``, a JSON list.

* ``[ITEM_ID]`` (0): the item's id (``str``);
* ``[EVENT_TYPE]`` (1): the event type's code (``int``, :data:`coldstream.core.events.EVENT_TYPES`);
* ``[TS]`` (2): the event time (``float``, seconds since the epoch): session expiry and the
  forget marker run on it;
* ``[EVENT_ID]`` (3): the event's id (``str``): a redelivered event is recognised by it.

Read an entry through these names, build one with :func:`session_entry`."""
ITEM_ID, EVENT_TYPE, TS, EVENT_ID = 0, 1, 2, 3

History = list[SessionEntry]
"""A session: its entries, oldest first (at most ``max_history``)."""


def session_entry(item_id: str, event_type: int, ts: float, event_id: str) -> SessionEntry:
    """The stored entry of one event (positions: :data:`SessionEntry`)."""
    return [item_id, event_type, ts, event_id]


def load_session(stored: Any) -> tuple[History, float | None]:
    """``(history, forgotten_at)`` of a stored session value (a list, or a forget marker
    ``{"forgotten_at": ts, "h": history}``, :mod:`stream_app.batch`)."""
    if isinstance(stored, dict):
        hist = stored.get("h") or []
        at = stored.get("forgotten_at")
        return list(hist), float(at) if isinstance(at, int | float) else None
    return (list(stored) if stored else []), None


def dump_session(hist: History, forgotten_at: float | None) -> Any:
    """The stored value: the history, or the forget marker holding the newer history."""
    if forgotten_at is None:
        return hist
    return {"forgotten_at": forgotten_at, "h": hist}


def store_url(kind: str) -> str:
    """The table's store URL for ``Settings.session_store`` (``memory`` or ``rocksdb``)."""
    return {"memory": MEMORY_URL, "rocksdb": ROCKSDB_URL}[kind]


class MemorySessionStore(FaustMemoryStore):
    """Faust's memory store, plus writes that say which partition the key belongs to."""

    def put(self, partition: int, key: Any, value: Any) -> None:
        """Set ``key`` (a key of ``partition``) to ``value``."""
        self.data[key] = value
        self._key_partition[key] = partition

    def remove(self, partition: int, key: Any) -> None:
        """Delete ``key`` (a key of ``partition``) if present."""
        self.data.pop(key, None)
        self._key_partition.pop(key, None)

    def partition_of(self, key: Any) -> int | None:
        """The partition ``key`` was last written for (``None``: unknown key)."""
        return self._key_partition.get(key)

    def scan(self, partition: int, after: Any, limit: int) -> tuple[list[tuple[Any, Any]], Any]:
        """Up to ``limit`` ``(key, value)`` of ``partition`` after the cursor ``after``
        (``None``: from the start); returns them and the next cursor (``None``: done)."""
        keys = [k for k, p in self._key_partition.items() if p == partition]
        keys.sort(key=str)
        start = 0
        if after is not None:
            import bisect

            start = bisect.bisect_right([str(k) for k in keys], str(after))
        chunk = keys[start : start + limit]
        out = [(k, self.data[k]) for k in chunk if k in self.data]
        return out, (chunk[-1] if len(chunk) == limit else None)


class RocksDBSessionStore(FaustRocksDBStore):
    """Faust's RocksDB store (one database per partition under the app's data dir), plus
    writes that say which partition the key belongs to; reads, recovery, revocation and
    persisted offsets are Faust's."""

    def put(self, partition: int, key: Any, value: Any) -> None:
        k = self._encode_key(key)
        self._db_for_partition(partition).put(k, self._encode_value(value))
        self._key_index[k] = partition

    def remove(self, partition: int, key: Any) -> None:
        k = self._encode_key(key)
        self._db_for_partition(partition).delete(k)
        self._key_index.pop(k, None)

    def partition_of(self, key: Any) -> int | None:
        return self._key_index.get(self._encode_key(key))

    def scan(self, partition: int, after: Any, limit: int) -> tuple[list[tuple[Any, Any]], Any]:
        """Like :meth:`MemorySessionStore.scan`, walking the partition's database in key
        order (nothing is loaded beyond ``limit`` entries)."""
        db = self._dbs.get(partition)
        if db is None:
            return [], None
        start = self._encode_key(after) if after is not None else None
        out: list[tuple[Any, Any]] = []
        last = None
        for k, v in db.items(from_key=start):
            if start is not None and k == start:
                continue
            out.append((self._decode_key(k), self._decode_value(v)))
            last = k
            if len(out) == limit:
                break
        return out, (self._decode_key(last) if len(out) == limit else None)


def last_activity(value: Any) -> float | None:
    """The event time of a session's newest entry (or of its forget request)."""
    hist, at = load_session(value)
    times = [] if at is None else [at]
    times += [
        float(e[TS])
        for e in hist
        if isinstance(e, list) and len(e) > TS and isinstance(e[TS], int | float)
    ]
    return max(times) if times else None


def expired_sessions(
    store: Any, partitions: list[int], cursors: dict[int, Any], *, older_than: float, limit: int
) -> dict[str, tuple[int, None]]:
    """Scan up to ``limit`` sessions per partition from the cursors on, and return the ones
    idle since before ``older_than`` (event time) as deletions ``{user: (partition, None)}``
    for :func:`write_sessions`. Each call goes on where the last one stopped; memory is
    O(limit), not O(users)."""
    out: dict[str, tuple[int, None]] = {}
    for p in partitions:
        chunk, cursors[p] = store.scan(p, cursors.get(p), limit)
        for key, value in chunk:
            t = last_activity(value)
            if t is not None and t < older_than:
                out[key] = (p, None)
    return out


def _changelog_records(
    table: Any, updates: Mapping[str, tuple[int, History | None]]
) -> Iterator[tuple[str, bytes | None, bytes | None, int]]:
    """Apply ``{user: (partition, history or None)}`` to the table's store; yields each
    changelog record ``(topic, key, value, partition)`` (``None`` value: a tombstone),
    encoded with the table's own codec."""
    topic = table.changelog_topic
    name = topic.get_topic_name()
    store = table.data
    key_codec, value_codec = table.key_serializer, table.value_serializer
    for user, (partition, hist) in updates.items():
        key, _ = topic.prepare_key(user, key_codec)
        if hist is None:
            store.remove(partition, user)
            value = None
        else:
            store.put(partition, user, hist)
            value, _ = topic.prepare_value(hist, value_codec)
        yield name, key, value, partition


async def write_sessions(
    table: Any, updates: Mapping[str, tuple[int, History | None]], producer: Any
) -> list[asyncio.Future]:
    """Apply ``{user: (partition, history or None)}`` to the table's store and changelog;
    returns the changelog sends' futures (the caller tracks their delivery). ``None``
    deletes the user (a forget request): the store drops it and the changelog gets a
    tombstone. Records are encoded with the table's own codec (its changelog topic's
    ``prepare_key``/``prepare_value``) and sent with the app's producer; when one is
    delivered, its offset becomes the store's persisted offset for that partition (what
    ``Table.send_changelog``'s callback does), so recovery resumes from it."""
    store = table.data
    futures = []
    last: dict[int, asyncio.Future] = {}  # offsets grow within a partition: the last send wins
    name = table.changelog_topic.get_topic_name()
    for _, key, value, partition in _changelog_records(table, updates):
        fut = await producer.send(name, key, value, partition, None, None)
        futures.append(fut)
        last[partition] = fut
    for partition, fut in last.items():
        fut.add_done_callback(functools.partial(_persisted, store, TP(name, partition)))
    return futures


def stage_sessions(
    table: Any,
    updates: Mapping[str, tuple[int, History | None]],
    batch: OutputBatch,
    send: Callable[[str, bytes | None, bytes | None, int], Awaitable[asyncio.Future]],
) -> None:
    """:func:`write_sessions` into an :class:`~stream_app.produce.OutputBatch` (the caller
    flushes it; :func:`persisted_offsets` is the batch's ``on_delivered``). ``send`` sends
    one changelog record alone (a batch refused for size is sent again record by record)."""
    for name, key, value, partition in _changelog_records(table, updates):
        batch.add(name, key, value, functools.partial(send, name, key, value, partition), partition)


def persisted_offsets(table: Any) -> Callable[[str, int, int], None]:
    """An ``on_delivered(topic, partition, last_offset)`` that makes a delivered changelog
    batch's last offset the store's persisted offset for its partition."""
    name = table.changelog_topic.get_topic_name()
    store = table.data

    def delivered(topic: str, partition: int, last_offset: int) -> None:
        if topic == name:
            store.set_persisted_offset(TP(name, partition), last_offset)

    return delivered


def _persisted(store: Any, tp: TP, fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is None:
        store.set_persisted_offset(tp, fut.result().offset)
