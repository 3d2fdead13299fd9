"""docs/privacy.md holds: its commands run as written against Apache Kafka and a real worker,
the retentions it states are the topics', and a refused record of a user is keyed by the
user in ``events-dlq`` (before, DLQ records were unkeyed: a user's could not be found)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coldstream.core.records import event_payload
from coldstream.core.topics import load_topics
from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import produce, read_until
from devtools.processes import WorkerProcess

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "privacy.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```$", DOC, re.M | re.S)
USER = "u42"  # the user id the page's commands use


def _run_block(text: str, env: dict[str, str], cwd: Path) -> str:
    res = subprocess.run(
        [sys.executable, "-c", text], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_the_page_states_the_topics_retention() -> None:
    topics = load_topics()
    days = {
        name: int(spec.configs["retention.ms"]) / 86_400_000
        for name, spec in topics.items()
        if "retention.ms" in spec.configs
    }
    assert days["clicks"] == days["purchases"] == days["forget-requests"] == 7
    assert "**7 days** (`kafka/topics.yaml`)" in DOC
    assert days["recommendations"] == 1 and "**1 day** (`retention.ms` 86400000)" in DOC
    assert days["events-dlq"] == 14
    assert f"**14 days** (`retention.ms` {topics['events-dlq'].configs['retention.ms']})" in DOC
    assert len(BLOCKS) == 2 and all(f'USER_ID = "{USER}"' in b for b in BLOCKS)


def test_the_pages_commands_and_the_dlq_key(
    kafka_bootstrap: str, make_topics, topic_prefix: str, tmp_path: Path
) -> None:
    topics = make_topics(kafka_bootstrap, topic_prefix)
    store = tmp_path / "store"
    make_checkpoint(store, n_items=50, signer=dev_signer())
    worker = WorkerProcess(
        env={**os.environ, **verify_env()},
        log_path=tmp_path / "worker.log",
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=store,
        threads=1,
        ready_timeout_s=90,
    )
    now = time.time()
    good = event_payload(USER, "7", event_id="p-1", ts=now - 10)
    refused = json.dumps({"event_id": "p-2", "user_id": USER, "item_id": "8"}).encode()  # no ts
    other = json.dumps({"event_id": "p-3", "user_id": "someone", "item_id": "8"}).encode()
    env = {
        **os.environ,
        "COLDSTREAM_BOOTSTRAP": kafka_bootstrap,
        "COLDSTREAM_TOPIC_PREFIX": topic_prefix,
    }
    with worker:
        records = [
            (topics["clicks"], USER.encode(), good),
            (topics["clicks"], USER.encode(), refused),
            (topics["clicks"], b"someone", other),
        ]
        asyncio.run(produce(kafka_bootstrap, records))
        dlq = asyncio.run(
            read_until(kafka_bootstrap, [topics["events-dlq"]], count=2, timeout_s=60)
        )
        # the DLQ record of a user's refused event is keyed by the user
        assert sorted(r.key for r in dlq) == [b"someone", USER.encode()]
        assert {json.loads(r.value)["event_id"]: r.key for r in dlq}["p-2"] == USER.encode()

        # the page's DLQ lookup finds exactly the user's refused record
        out = _run_block(BLOCKS[1], env, tmp_path)
        lines = out.strip().splitlines()
        assert len(lines) == 1 and "missing_field" in lines[0] and '"p-2"' in lines[0], out

        # the page's forget request is acknowledged by the worker that owns the user
        assert "forget request sent for u42" in _run_block(BLOCKS[0], env, tmp_path)
        recs = asyncio.run(
            read_until(kafka_bootstrap, [topics["recommendations"]], count=2, timeout_s=60)
        )
        values = [json.loads(r.value) for r in recs if r.key == USER.encode()]
        assert [v["fallback"] for v in values] == [None, "forgotten"], values
        assert values[1]["items"] == [] and values[1]["event_id"].startswith("forget-u42-")
        status, body = worker.get_json(f"/recommend/{USER}?k=3")
        # answered like any user without events; the answer does not say so (no oracle)
        assert status == 200 and body["fallback"] is None and body["items"], body
        assert set(body) == {"user_id", "items", "fallback", "model_version"}


@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_every_block_of_the_page_is_run_above(block: int) -> None:
    # the two blocks are the forget request and the DLQ lookup, in that order
    assert ("forget-requests" in BLOCKS[block]) == (block == 0)
    assert ("events-dlq" in BLOCKS[block]) == (block == 1)
