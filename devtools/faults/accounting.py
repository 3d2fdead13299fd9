"""What came back from a fault scenario, and the figures drawn from it.

Every scenario returns a :class:`FaultResult`:

``events_in``         input records produced
``outputs``           ``recommendations`` records read back (duplicates included)
``dlq``               ``events-dlq`` records read back (duplicates included)
``lost``              inputs with neither a recommendation nor a DLQ record
``duplicated``        outputs beyond the first per input (consumers dedupe on ``event_id``)
``recovery_seconds``  per scenario, see its docstring (``None`` where nothing is recovered)

:class:`Outputs` holds the read-back outputs matched to their inputs
(:meth:`devtools.faults.harness.Harness.collect`); the functions below check order and
recovered sessions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from devtools.faults.inputs import Input
from stream_app.sessions import EVENT_ID

__all__ = [
    "FaultResult",
    "Outputs",
    "account",
    "first_output_after",
    "order_examples",
    "order_violations",
    "session_mismatches",
]


@dataclass
class FaultResult:
    scenario: str
    events_in: int
    outputs: int
    dlq: int
    lost: int
    duplicated: int
    recovery_seconds: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        if d["recovery_seconds"] is not None:
            d["recovery_seconds"] = round(d["recovery_seconds"], 2)
        return d


@dataclass
class Outputs:
    """What came back, per input."""

    counts: dict[int, int]
    n_recs: int
    n_dlq: int
    by_user: dict[str, list[dict[str, Any]]]
    """User -> recommendation values in output order (partition offset order); the harness
    adds ``_out``: ``[partition, offset]`` of the output record."""
    dlq_values: list[dict[str, Any]]
    unmatched: int
    produced_at: list[float]
    dlq_max_bytes: int = 0
    """The largest DLQ record value read."""
    group_committed: dict[str, int] | None = None
    """Where some input went unanswered: the workers' group's committed offset per input
    partition (``"topic[partition]"``) when collecting ended; ``None`` otherwise."""

    def lost(self, n: int) -> int:
        return sum(1 for i in range(n) if self.counts.get(i, 0) == 0)

    def duplicated(self) -> int:
        return sum(c - 1 for c in self.counts.values() if c > 1)


def account(
    name: str, inputs: list[Input], out: Outputs, recovery_s: float | None, **details: Any
) -> FaultResult:
    details.setdefault("unmatched_outputs", out.unmatched)
    if details.get("order_violations"):
        details.setdefault("order_examples", order_examples(inputs, out))
    unanswered = [i for i in range(len(inputs)) if out.counts.get(i, 0) == 0]
    if unanswered:  # where the unanswered inputs sit: (topic, partition, offset), first 50
        details.setdefault("lost_positions", [inputs[i].pos for i in unanswered[:50]])
        if out.group_committed is not None:  # committed past them, or never read?
            details.setdefault("group_committed", out.group_committed)
    return FaultResult(
        name,
        len(inputs),
        out.n_recs,
        out.n_dlq,
        out.lost(len(inputs)),
        out.duplicated(),
        recovery_s,
        details,
    )


def first_output_after(out: Outputs, t: float) -> float | None:
    later = [p for p in out.produced_at if p > t]
    return (min(later) - t) if later else None


def order_violations(inputs: list[Input], out: Outputs) -> int:
    """Users whose first answers are not in their input order (per input topic: the two
    topics are separate logs, so only each topic's order is defined). The input order is
    the log's (partition offset) where the produce reported it, else the order of sending:
    a producer retry may write two records in the other order."""
    return len(_out_of_order(inputs, out))


def order_examples(
    inputs: list[Input], out: Outputs, limit: int = 3, around: int = 4
) -> list[dict[str, Any]]:
    """For the first ``limit`` users out of order, their answers in output order around the
    first one out of place, each as ``[event, input topic, input partition, input offset,
    output partition, output offset, model version, produced_at]`` (a fault report's
    detail: who answered what, when, and where it landed)."""
    bad = _out_of_order(inputs, out)
    pos = {inp.event_id: (inp.topic, *(inp.pos[1:] if inp.pos else (None, None))) for inp in inputs}
    rank = {inp.event_id: i for i, inp in enumerate(_log_order(inputs))}
    rows = []
    for user in sorted(bad)[:limit]:
        values = out.by_user.get(user, [])
        first = 0
        last: dict[str, int] = {}
        for i, v in enumerate(values):
            topic = pos.get(v["event_id"], ("?",))[0]
            r = rank.get(v["event_id"], -1)
            if r < last.get(topic, -1):
                first = i
                break
            last[topic] = r
        rows.append(
            {
                "user": user,
                "first_out_of_place": first,
                "answers": [
                    [
                        v["event_id"],
                        *pos.get(v["event_id"], (None, None, None)),
                        *(v.get("_out") or [None, None]),
                        v.get("model_version"),
                        v.get("produced_at"),
                    ]
                    for v in values[max(0, first - around) : first + around]
                ],
            }
        )
    return rows


def _log_order(inputs: list[Input]) -> list[Input]:
    if all(inp.pos is not None for inp in inputs):
        return sorted(inputs, key=lambda inp: inp.pos or ("", 0, 0))
    return inputs


def _out_of_order(inputs: list[Input], out: Outputs) -> set[str]:
    want: dict[tuple[str, str], list[str]] = defaultdict(list)
    topic_of: dict[str, str] = {}
    for inp in _log_order(inputs):
        if inp.event_id and inp.user:
            want[(inp.user, inp.topic)].append(inp.event_id)
            topic_of[inp.event_id] = inp.topic
    bad = set()
    for user, values in out.by_user.items():
        seen: dict[str, list[str]] = defaultdict(list)
        firsts = set()
        for v in values:
            e = v["event_id"]
            if e in topic_of and e not in firsts:
                firsts.add(e)
                seen[topic_of[e]].append(e)
        for topic, got in seen.items():
            if got != want[(user, topic)][: len(got)] or len(got) != len(want[(user, topic)]):
                bad.add(user)
    return bad


def session_mismatches(
    sessions: dict[str, Any],
    inputs: list[Input],
    users: set[str],
    max_history: int = 50,
    examples: list[dict[str, Any]] | None = None,
) -> int:
    """Users whose recovered session (``sessions``: the table's last changelog value per
    user) is not the replay of their inputs: no entry twice, ``min(max_history, inputs)``
    entries, and per input topic exactly the newest of that topic's events (the two topics
    are separate logs, so a user's clicks and purchases may interleave either way: the
    session is the newest ``max_history`` of *some* merge of the two, and which older ones
    it dropped depends on that merge). Each mismatch is described in ``examples``."""
    want: dict[str, list[Input]] = defaultdict(list)
    for inp in inputs:
        if inp.user in users:
            want[inp.user].append(inp)
    bad = 0
    for user in users:
        got = sessions.get(user) or []
        ids = [e[EVENT_ID] for e in got if len(e) > EVENT_ID]
        mine = want[user]
        topic_of = {inp.event_id: inp.topic for inp in mine}
        held = set(ids)
        ok = len(ids) == len(held) == min(max_history, len(mine)) and held <= set(topic_of)
        missing: set[str] = set()
        for topic in {inp.topic for inp in mine}:
            seq = [inp.event_id for inp in mine if inp.topic == topic]
            n = sum(1 for i in ids if topic_of.get(i) == topic)
            newest = set(seq[len(seq) - n :]) if n else set()
            missing |= newest - held
            if {i for i in ids if topic_of.get(i) == topic} != newest:
                ok = False
        if not ok:
            bad += 1
            if examples is not None:
                examples.append(
                    {
                        "user": user,
                        "want": min(max_history, len(mine)),
                        "got": len(ids),
                        "repeated": len(ids) - len(held),
                        "missing": sorted(missing)[:5],
                        "extra": sorted(held - set(topic_of))[:5],
                    }
                )
    return bad
