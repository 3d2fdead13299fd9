"""The exactly-once checker (devtools.faults.committed) on fake committed records: it must
catch a planted duplicate and a planted loss, and match DLQ records by position."""

from __future__ import annotations

import json
from dataclasses import dataclass

from devtools.faults.committed import tally

REC, DLQ = "p-recommendations", "p-events-dlq"


@dataclass
class Rec:
    topic: str
    value: bytes


def _rec(event_id: str) -> Rec:
    return Rec(REC, json.dumps({"event_id": event_id, "user_id": "u", "items": []}).encode())


def _dlq(topic: str, partition: int, offset: int) -> Rec:
    value = {"source_topic": topic, "partition": partition, "offset": offset, "error": "x"}
    return Rec(DLQ, json.dumps(value).encode())


IDS = ["e0", "e1", "e2", None]  # the last input is a bad one (no event id): DLQ'd
POS = [("clicks", 0, 0), ("clicks", 0, 1), ("purchases", 3, 7), ("clicks", 1, 4)]


def _tally(records: list[Rec]):
    return tally(IDS, POS, records, rec_topic=REC, dlq_topic=DLQ)


def test_exactly_one_committed_output_per_input_passes() -> None:
    t = _tally([_rec("e0"), _rec("e1"), _rec("e2"), _dlq("clicks", 1, 4)])
    assert (t.lost, t.duplicated, t.unmatched) == (0, 0, 0)
    assert t.exactly_once and t.recommendations == 3 and t.dlq == 1


def test_a_planted_duplicate_is_caught() -> None:
    t = _tally([_rec("e0"), _rec("e1"), _rec("e1"), _rec("e2"), _dlq("clicks", 1, 4)])
    assert t.duplicated == 1 and t.lost == 0 and not t.exactly_once
    assert t.duplicated_examples == [1]


def test_a_planted_duplicate_across_topics_is_caught() -> None:
    # a recommendation and a DLQ record for the same input: two outputs
    t = _tally([_rec("e0"), _rec("e1"), _rec("e2"), _dlq("purchases", 3, 7), _dlq("clicks", 1, 4)])
    assert t.duplicated == 1 and not t.exactly_once


def test_a_planted_loss_is_caught() -> None:
    t = _tally([_rec("e0"), _rec("e2"), _dlq("clicks", 1, 4)])
    assert t.lost == 1 and t.duplicated == 0 and not t.exactly_once
    assert t.lost_examples == [1]


def test_outputs_of_no_input_are_counted_not_matched() -> None:
    t = _tally([_rec("e0"), _rec("e1"), _rec("e2"), _dlq("clicks", 1, 4), _rec("other")])
    assert t.unmatched == 1 and not t.exactly_once
    t = _tally([_rec("e0"), _rec("e1"), _rec("e2"), _dlq("clicks", 1, 4), Rec(REC, b"{")])
    assert t.unmatched == 1


def test_a_dlq_record_is_matched_by_event_id_only_where_the_position_is_unknown() -> None:
    ids, pos = ["e0", "e1"], [None, ("clicks", 0, 1)]
    dlq = Rec(
        DLQ,
        json.dumps(
            {"source_topic": "clicks", "partition": 9, "offset": 9, "event_id": "e0"}
        ).encode(),
    )
    wrong = Rec(
        DLQ,
        json.dumps(
            {"source_topic": "clicks", "partition": 9, "offset": 9, "event_id": "e1"}
        ).encode(),
    )  # e1's position is known
    t = tally(ids, pos, [dlq, wrong], rec_topic=REC, dlq_topic=DLQ)
    assert t.counts == {0: 1} and t.unmatched == 1 and t.lost == 1
