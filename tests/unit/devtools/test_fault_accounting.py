"""The fault suite's session check (``devtools.faults.accounting.session_mismatches``): a
recovered session is the replay of the user's inputs -- with clicks and purchases in two
logs, the newest ``max_history`` of *some* merge of the two."""

from __future__ import annotations

import pytest

from devtools.faults.accounting import order_violations, session_mismatches
from devtools.faults.inputs import Input

INPUTS = [
    Input("clicks", b"u", b"", "c1", "u", pos=("clicks", 0, 0)),
    Input("purchases", b"u", b"", "p1", "u", pos=("purchases", 0, 0)),
    Input("clicks", b"u", b"", "c2", "u", pos=("clicks", 0, 1)),
    Input("clicks", b"u", b"", "c3", "u", pos=("clicks", 0, 2)),
    Input("purchases", b"u", b"", "p2", "u", pos=("purchases", 0, 1)),
]


def _session(*ids: str) -> list[list]:
    return [[1, 0, 0.0, i] for i in ids]


@pytest.mark.parametrize(
    ("held", "max_history", "bad"),
    [
        (("c2", "c3", "p2"), 3, 0),  # the newest three in input order
        (("p1", "c3", "p2"), 3, 0),  # purchases read first: another valid merge
        (("c1", "c3", "p2"), 3, 1),  # c1 kept, c2 dropped: not a suffix of the clicks
        (("c2", "c3", "c3"), 3, 1),  # an entry twice
        (("c3", "p2"), 3, 1),  # one missing
        (("c1", "p1", "c2", "c3", "p2"), 50, 0),
        (("c1", "p1", "c2", "c3", "x"), 50, 1),  # an event nobody sent
    ],
)
def test_a_session_is_a_suffix_of_a_merge_of_the_topics(held, max_history, bad) -> None:
    examples: list[dict] = []
    got = session_mismatches({"u": _session(*held)}, INPUTS, {"u"}, max_history, examples)
    assert got == bad
    assert len(examples) == bad


def test_order_is_the_log_order_of_the_inputs() -> None:
    """Answers follow the partition offsets, even where the producer wrote two records in
    the other order than it was asked to (a retry)."""
    from devtools.faults.accounting import Outputs

    swapped = [INPUTS[0], INPUTS[3], INPUTS[2]]  # c1, c3, c2 sent; logged c1, c2, c3
    answers = [{"event_id": e} for e in ("c1", "c2", "c3")]
    out = Outputs({}, 3, 0, {"u": answers}, [], 0, [])
    assert order_violations(swapped, out) == 0
    out_bad = Outputs({}, 3, 0, {"u": [answers[0], answers[2], answers[1]]}, [], 0, [])
    assert order_violations(swapped, out_bad) == 1
