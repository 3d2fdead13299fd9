"""Session state: user -> last events, a Faust table on a coldstream store.

The fast path (:mod:`stream_app.transport`) writes sessions outside a Faust stream (there is
no "current event" to take a partition from), so it writes through two public doors instead
of around the table:

* the **store**: :class:`MemorySessionStore` is Faust's in-memory store with writes that name
  their partition (:meth:`MemorySessionStore.put`, :meth:`MemorySessionStore.remove`), so
  Faust's own key -> partition bookkeeping holds and the keys of revoked partitions are
  dropped when the worker loses them. It is registered in Faust's ``faust.stores``
  entry-point namespace as ``coldstream-memory`` (pyproject.toml), Faust's documented way
  to add a store, and selected with the table's ``store="coldstream-memory://"``;
* the **changelog**: :meth:`faust.Table.send_changelog` (the table's codec, its producer
  buffer and its persisted-offset callback), with the event's input partition (the
  changelog is co-partitioned with ``clicks``/``purchases``).

:func:`write_sessions` applies one micro-batch's session updates through both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.stores.memory import Store as FaustMemoryStore

STORE_URL = "coldstream-memory://sessions"
"""The table's store (entry point ``coldstream-memory`` in the ``faust.stores`` namespace)."""

History = list[list[Any]]
"""A session: ``[item_id, event_type, ts, event_id]`` entries, oldest first."""


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


def write_sessions(table: Any, updates: Mapping[str, tuple[int, History | None]]) -> None:
    """Apply ``{user: (partition, history or None)}`` to the table's store and changelog.
    ``None`` deletes the user (a forget request): the store drops it and the changelog gets
    a tombstone."""
    store = table.data
    send = table.send_changelog
    for user, (partition, hist) in updates.items():
        if hist is None:
            store.remove(partition, user)
            send(partition, user, None, value_serializer="raw")
        else:
            store.put(partition, user, hist)
            send(partition, user, hist)
