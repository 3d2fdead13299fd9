"""Table recovery under ``exactly_once``: Faust's recovery service with two additions, through
Faust's ``TableManager`` setting (installed by :func:`stream_app.app.create_app` only under
``exactly_once``; at-least-once runs Faust's own classes).

1. **Fence first.** :meth:`Recovery.on_rebalance` starts the transactional producers of the
   newly owned input partitions (:meth:`stream_app.transactions.TransactionalOutputs.
   on_assignment`) before Faust's recovery runs; recovery ends by seeking the input
   partitions to their committed offsets (``Consumer.perform_seek``), so those are read
   after every previous owner of the partitions was fenced and its open transaction aborted.

2. **Commit markers.** The worker consumer reads with ``read_committed``
   (:mod:`stream_app.transport`), so recovery sees only committed changelog records, and the
   changelog's end offset (the last stable offset) is one past a transaction's commit
   marker, which no consumer ever receives. Faust waits until it applied the record at
   end offset - 1 and would wait forever; its own fix-up for this runs only in Faust's
   ``exactly_once`` mode, which coldstream does not use. :meth:`Recovery._skip_markers`
   does the same, only when it is safe: once the consumer's position for an active
   changelog partition is at its end offset, the changelog queue is empty and the applied
   offset did not move for two checks, the partition counts as recovered.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.tables.manager import TableManager as FaustTableManager
from faust.tables.recovery import Recovery as FaustRecovery
from mode import Service

log = logging.getLogger(__name__)

MARKER_CHECK_INTERVAL_S = 0.5


class Recovery(FaustRecovery):
    """Faust's recovery, fencing before it runs and stepping over trailing commit markers."""

    _stuck: dict[Any, int] | None = None

    async def on_rebalance(
        self, assigned: Any, revoked: Any, newly_assigned: Any, generation_id: int = 0
    ) -> None:
        outputs = getattr(self.app, "transactional_outputs", None)
        fast = getattr(self.app, "fast_path", None)
        if outputs is not None and fast is not None:
            await outputs.on_assignment(
                {tp.partition for tp in assigned if tp.topic in fast.topics}
            )
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    @Service.timer(MARKER_CHECK_INTERVAL_S)
    async def _skip_markers(self) -> None:
        if not self.in_recovery:
            self._stuck = None
            return
        stuck = self._stuck if self._stuck is not None else {}
        if not self.tables.changelog_queue.empty():
            self._stuck = {}
            return
        now: dict[Any, int] = {}
        for tp, highwater in list(self.active_highwaters.items()):
            applied = self.active_offsets.get(tp)
            if highwater is None or highwater < 0 or applied is None or applied >= highwater:
                continue
            position = await self.app.consumer.position(tp)
            if position is None or position <= highwater:  # not read to the end offset yet
                continue
            now[tp] = applied
            if stuck.get(tp) == applied:  # nothing left to apply: the rest are markers
                log.info("changelog %s recovered to %d (the rest: commit markers)", tp, applied)
                self.active_offsets[tp] = highwater
        self._stuck = now


class TableManager(FaustTableManager):
    """Faust's table manager with :class:`Recovery` (Faust's ``TableManager`` setting)."""

    @property
    def recovery(self) -> FaustRecovery:
        if self._recovery is None:
            self._recovery = Recovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
