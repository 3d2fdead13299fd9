"""The KRaft cluster id handed to ``kafka-storage format``."""

from __future__ import annotations

import re

from devtools.brokers import _cluster_id


def test_cluster_id_never_starts_with_a_dash() -> None:
    # about 1 raw id in 64 starts with "-": 5,000 draws would all but surely show one
    ids = [_cluster_id() for _ in range(5000)]
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)
    assert len(set(ids)) == len(ids)
