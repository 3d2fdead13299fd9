"""``processing_guarantee=exactly_once`` against both brokers: refused at start on Tansu
(no transactions: one line naming the setting and the broker, exit 2), accepted on Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from coldstream.core.preflight import transactions_unsupported
from devtools.brokers import free_port


@pytest.mark.tansu
def test_tansu_refuses_exactly_once_at_start_in_one_line(
    tansu_bootstrap: str,
    topic_prefix: str,
    make_topics: Callable[..., dict[str, str]],
    tmp_path,
) -> None:
    make_topics(tansu_bootstrap, topic_prefix)
    env = {
        **os.environ,
        "COLDSTREAM_PROCESSING_GUARANTEE": "exactly_once",
        "COLDSTREAM_TOPIC_PREFIX": topic_prefix,
    }
    argv = [sys.executable, "-m", "coldstream", "worker", "--bootstrap", tansu_bootstrap]
    argv += ["--model-store", str(tmp_path / "store"), "--web-port", str(free_port())]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "COLDSTREAM_PROCESSING_GUARANTEE=exactly_once" in lines[0]
    assert tansu_bootstrap in lines[0] and "transactions" in lines[0]


@pytest.mark.tansu
def test_tansu_has_no_transactions(tansu_bootstrap: str) -> None:
    assert transactions_unsupported(tansu_bootstrap, transactional_id="t-eos-probe") is not None


def test_kafka_runs_transactions(kafka_bootstrap: str, topic_prefix: str) -> None:
    assert transactions_unsupported(kafka_bootstrap, transactional_id=topic_prefix + "eos") is None
