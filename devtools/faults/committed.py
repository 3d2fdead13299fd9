"""The exactly-once checker: what a ``read_committed`` reader of ``recommendations`` and
``events-dlq`` sees, input by input.

Independent of the worker: it knows only the inputs that were produced (event id and the
broker position each got) and reads the two output topics with its own consumer, no group,
``isolation_level=read_committed`` (aborted transactions and open ones are invisible, as to
any downstream consumer). :func:`tally` is the pure part (tested with fake records): every
input must have exactly one committed output -- a recommendation naming its ``event_id``,
or a DLQ record naming its ``(source_topic, partition, offset)``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CommittedOutputs", "read_committed_changelog", "read_committed_outputs", "tally"]

Position = tuple[str, int, int]
"""``(topic, partition, offset)`` of an input record on the broker."""


@dataclass
class CommittedOutputs:
    """Per input: how many committed outputs name it."""

    inputs: int
    counts: dict[int, int]
    """Input index -> committed outputs naming it (inputs with none are absent)."""
    recommendations: int = 0
    dlq: int = 0
    unmatched: int = 0
    """Committed outputs that name no input of the run."""
    lost_examples: list[int] = field(default_factory=list)
    duplicated_examples: list[int] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Inputs with no committed output."""
        return self.inputs - len(self.counts)

    @property
    def duplicated(self) -> int:
        """Committed outputs beyond the first per input."""
        return sum(n - 1 for n in self.counts.values() if n > 1)

    @property
    def exactly_once(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unmatched == 0

    def row(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "recommendations": self.recommendations,
            "dlq": self.dlq,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "unmatched": self.unmatched,
            "lost_examples": self.lost_examples,
            "duplicated_examples": self.duplicated_examples,
        }


def tally(
    event_ids: Iterable[str | None],
    positions: Iterable[Position | None],
    records: Iterable[Any],
    *,
    rec_topic: str,
    dlq_topic: str,
    examples: int = 5,
) -> CommittedOutputs:
    """Match committed output ``records`` (anything with ``topic`` and ``value``) to the
    inputs, given per input (same order) its ``event_id`` and its logical position
    ``(logical topic, partition, offset)``: a recommendation names its input by
    ``event_id``, a DLQ record by ``source_topic``, ``partition``, ``offset`` (its payload may
    have no event id at all); only for an input whose position is not known (``None``) is a
    DLQ record matched by the ``event_id`` it carries."""
    ids = list(event_ids)
    pos_list = list(positions)
    by_eid = {eid: i for i, eid in enumerate(ids) if eid}
    by_pos = {pos: i for i, pos in enumerate(pos_list) if pos is not None}
    unplaced = {eid: i for eid, i in by_eid.items() if pos_list[i] is None}
    counts: Counter[int] = Counter()
    out = CommittedOutputs(inputs=len(ids), counts={})
    for r in records:
        try:
            v = json.loads(r.value)
        except (TypeError, ValueError):
            out.unmatched += 1
            continue
        i: int | None = None
        if r.topic == rec_topic:
            out.recommendations += 1
            i = by_eid.get(v.get("event_id")) if isinstance(v, dict) else None
        elif r.topic == dlq_topic:
            out.dlq += 1
            if isinstance(v, dict):
                i = by_pos.get((v.get("source_topic"), v.get("partition"), v.get("offset")))
                if i is None:
                    i = unplaced.get(v.get("event_id"))
        if i is None:
            out.unmatched += 1
        else:
            counts[i] += 1
    out.counts = dict(counts)
    out.lost_examples = [i for i in range(len(ids)) if i not in counts][:examples]
    out.duplicated_examples = [i for i, n in counts.items() if n > 1][:examples]
    return out


async def read_committed_outputs(
    bootstrap: str,
    topics: Mapping[str, str],
    event_ids: list[str | None],
    positions: list[Position | None],
    *,
    timeout_s: float,
    idle_s: float = 2.0,
    **consumer_kwargs: Any,
) -> CommittedOutputs:
    """Read ``recommendations`` and ``events-dlq`` (physical names in ``topics``; input
    ``positions`` with logical topic names) from the start with ``read_committed`` until
    every input has a committed output (then ``idle_s`` more, for duplicates) or
    ``timeout_s``; :func:`tally` what was read."""
    from devtools.kafka_io import read_until

    rec_t, dlq_t = topics["recommendations"], topics["events-dlq"]
    records: list[Any] = []

    def keep(batch: list[Any], _now: float) -> None:
        records.extend(batch)

    await read_until(
        bootstrap,
        [rec_t, dlq_t],
        until=lambda: (
            len(records) >= len(event_ids)
            and tally(event_ids, positions, records, rec_topic=rec_t, dlq_topic=dlq_t).lost == 0
        ),
        timeout_s=timeout_s,
        idle_s=idle_s,
        on_records=keep,
        keep=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=100,
        poll_ms=200,
        max_records=10_000,
        **consumer_kwargs,
    )
    return tally(event_ids, positions, records, rec_topic=rec_t, dlq_topic=dlq_t)


async def read_committed_changelog(bootstrap: str, topic: str, timeout_s: float) -> dict[str, Any]:
    """Last committed value per key of a table changelog, read to its current end with
    ``read_committed`` (``None``: tombstone): the state a recovering worker rebuilds."""
    from devtools.kafka_io import read_until

    last: dict[str, Any] = {}
    for r in await read_until(
        bootstrap,
        [topic],
        to_end=True,
        timeout_s=timeout_s,
        fetch_max_wait_ms=100,
        poll_ms=200,
        isolation_level="read_committed",
    ):
        last[json.loads(r.key)] = None if r.value is None else json.loads(r.value)
    return last
