"""The serving pipeline against Apache Kafka: one worker subprocess, many assertions.

Each test gets unique topics (``topic_prefix``), its own consumer group (app id), a
tmp model store and a random web port. The worker is stopped by PID with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from collections import defaultdict

import pytest

from coldstream.core.records import event_payload
from devtools.checkpoints import dev_signer, make_checkpoint, verify_env
from devtools.kafka_io import new_event, produce, read_until
from devtools.processes import WorkerProcess
from stream_app.recommender import Recommender

N_ITEMS = 200


def malformed(now: float) -> list[tuple[str, bytes, bytes, str]]:
    """``(logical topic, key, value, expected reason)``: at least ten distinct reasons."""

    def ev(**over):
        body = {"user_id": "bad-user", "item_id": "3", "ts": now, **over}
        return event_payload(
            body.pop("user_id"),
            body.pop("item_id"),
            event_id=uuid.uuid4().hex,
            ts=body.pop("ts"),
            **body,
        )

    return [
        ("clicks", b"k", b"", "empty"),
        ("clicks", b"k", b"{" + b" " * 20_000 + b"}", "oversize"),
        ("clicks", b"k", b'{"event_id": "\xff"}', "invalid_utf8"),
        ("clicks", b"k", b"{not json", "invalid_json"),
        ("clicks", b"k", b'["a", "list"]', "not_object"),
        (
            "clicks",
            b"bad-user",
            b'{"event_id":"x1","user_id":"bad-user","item_id":"3","ts":NaN}',
            "non_finite",
        ),
        (
            "clicks",
            b"bad-user",
            json.dumps({"event_id": "x2", "user_id": "bad-user", "ts": now}).encode(),
            "missing_field",
        ),
        ("clicks", b"bad-user", ev(ts="now"), "wrong_type"),
        ("clicks", b"bad user", ev(user_id="bad user"), "bad_id"),
        ("clicks", b"bad-user", ev(ts=-1), "ts_negative"),
        ("clicks", b"bad-user", ev(ts=now + 30 * 86400), "ts_future"),
        ("purchases", b"bad-user", ev(quantity=0), "out_of_range"),
        ("clicks", b"bad-user", ev(event_type="like"), "unknown_event_type"),
        ("clicks", b"someone-else", ev(), "key_mismatch"),
        (
            "clicks",
            b"bad-user",
            b'{"event_id":"d","event_id":"e","user_id":"bad-user","item_id":"1","ts":1}',
            "duplicate_field",
        ),
    ]


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "faust-agent"])
def test_pipeline_end_to_end(kafka_bootstrap, topic_prefix, make_topics, tmp_path, fast_path):
    topics = make_topics(kafka_bootstrap, topic_prefix)
    store = tmp_path / "store"
    ck_path = make_checkpoint(store, n_items=N_ITEMS, signer=dev_signer())
    app_id = topic_prefix + "app"
    worker = WorkerProcess(
        env={**os.environ, **verify_env()},  # trusts dev_signer()
        log_path=tmp_path / "worker.log",
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=app_id,
        model_store=store,
        log_level="warning",
        threads=1,
        fast_path=fast_path,
    )
    now = time.time()
    # -- good events: 30 users x 4 events, mixed topics, some unknown items ----------------
    good: list[tuple[str, bytes, bytes]] = []
    expected_user: dict[str, str] = {}
    history: dict[str, list[str]] = defaultdict(list)
    for u in range(30):
        user = f"user-{u}"
        for j in range(4):
            item = str(1 + (u * 13 + j * 7) % N_ITEMS)
            if u % 10 == 3 and j == 1:
                item = "not-in-model-" + str(u)  # unknown item: kept in the history
            topic = "purchases" if j == 3 else "clicks"
            eid, value = new_event(user, item, ts=now + j * 0.001)
            good.append((topics[topic], user.encode(), value))
            expected_user[eid] = user
            history[user].append(item)
    only_unknown = "user-only-unknown"
    for j in range(2):
        eid, value = new_event(only_unknown, f"ghost-{j}")
        good.append((topics["clicks"], only_unknown.encode(), value))
        expected_user[eid] = only_unknown
        history[only_unknown].append(f"ghost-{j}")
    bad = malformed(now)
    records = []
    for i, g in enumerate(good):  # interleave bad with good: good events keep flowing
        records.append(g)
        if i % 8 == 0 and i // 8 < len(bad):
            t, k, v, _ = bad[i // 8]
            records.append((topics[t], k, v))
    assert len(records) == len(good) + len(bad)

    with worker:
        metas = run(produce(kafka_bootstrap, records, keep_metadata=True)).metadata
        out = run(
            read_until(
                kafka_bootstrap,
                [topics["recommendations"], topics["events-dlq"]],
                count=len(records),
                timeout_s=60,
                idle_s=1.5,
            )
        )
        recs = [r for r in out if r.topic == topics["recommendations"]]
        dlq = [r for r in out if r.topic == topics["events-dlq"]]

        # exactly one output per input
        assert len(out) == len(records), (len(recs), len(dlq), len(records))
        rec_values = [json.loads(r.value) for r in recs]
        assert sorted(v["event_id"] for v in rec_values) == sorted(expected_user)
        meta_by_pos = {(m.topic, m.partition, m.offset) for m in metas}
        dlq_values = [json.loads(r.value) for r in dlq]
        dlq_pos = {
            (topic_prefix + d["source_topic"], d["partition"], d["offset"]) for d in dlq_values
        }
        assert len(dlq_pos) == len(bad) and dlq_pos <= meta_by_pos
        reasons = {d["error"] for d in dlq_values}
        assert reasons == {b[3] for b in bad}
        assert len(reasons) >= 10

        # recommendations: keyed, never a seen item, in order per user, one partition per user
        by_user: dict[str, list] = defaultdict(list)
        for r, v in zip(recs, rec_values, strict=True):
            assert r.key.decode() == v["user_id"] == expected_user[v["event_id"]]
            by_user[v["user_id"]].append((r.partition, r.offset, v))
        order_in: dict[tuple[str, str], list[str]] = defaultdict(list)
        event_of: dict[str, tuple[str, int]] = {}
        for t, k, value in good:
            body = json.loads(value)
            order_in[(k.decode(), t)].append(body["event_id"])
            event_of[body["event_id"]] = (body["item_id"], 1 if t == topics["purchases"] else 0)
        processed: dict[str, list[tuple[str, int]]] = {}
        for user, rows in by_user.items():
            assert len({p for p, _, _ in rows}) == 1, user
            rows.sort(key=lambda x: x[1])
            got_order = [v["event_id"] for _, _, v in rows]
            for t in (topics["clicks"], topics["purchases"]):  # order kept per input topic
                assert [e for e in got_order if e in set(order_in[(user, t)])] == order_in[
                    (user, t)
                ]
            processed[user] = [event_of[e] for e in got_order]
            for n, (_, _, v) in enumerate(rows, start=1):
                seen = {item for item, _ in processed[user][:n]}
                got = [i["item_id"] for i in v["items"]]
                assert got and not seen & set(got), (user, n)
                assert v["cold_start"] is (n <= 3)
                assert v["model_version"] == "1"
                assert v["latency_ms"] >= 0
        assert all(v["fallback"] == "popular" for _, _, v in by_user[only_unknown])
        assert all(v["fallback"] is None for _, _, v in by_user["user-0"])

        # web views
        status, body = worker.get_json("/ready")
        assert status == 200 and body["ready"] is True
        status, body = worker.get_json("/recommend/user-5?k=3")
        assert status == 200 and body["fallback"] is None and len(body["items"]) == 3
        # one shape for every user: nothing tells whether a user exists (no history length)
        assert set(body) == {"user_id", "items", "fallback", "model_version"}
        assert not set(history["user-5"]) & {i["item_id"] for i in body["items"]}
        assert worker.get_json("/recommend/user-5?k=0")[0] == 400
        metrics = worker.get_text("/metrics")
        assert (
            f'coldstream_events_total{{outcome="recommended",topic="clicks"}} {len(good) - 30}.0'
            in metrics
        )
        assert 'coldstream_dlq_total{reason="invalid_json"} 1.0' in metrics
        assert f"coldstream_event_latency_seconds_count {len(good)}.0" in metrics
        assert "user-" not in metrics

        # a duplicate event_id is answered once only
        dup = good[0]
        run(produce(kafka_bootstrap, [dup]))
        time.sleep(1.0)
        assert 'coldstream_events_total{outcome="duplicate",topic="clicks"} 1.0' in worker.get_text(
            "/metrics"
        )

    # -- clean restart: state recovered from the changelog, offsets committed -------------
    user = "user-7"
    eid, value = new_event(user, "150")
    with worker:
        run(produce(kafka_bootstrap, [(topics["clicks"], user.encode(), value)]))
        out2 = run(
            read_until(
                kafka_bootstrap,
                [topics["recommendations"]],
                count=len(recs) + 1,
                timeout_s=45,
                idle_s=1.5,
            )
        )
    values = [json.loads(r.value) for r in out2]
    assert len(values) == len(recs) + 1  # nothing re-processed, the new event answered once
    new = [v for v in values if v["event_id"] == eid]
    assert len(new) == 1
    full = processed[user] + [("150", 0)]
    offline = Recommender.from_checkpoint(ck_path, device="cpu", prefer_gpu_index=False)
    expect = offline.recommend_batch([full], k=10)[0]
    assert [i["item_id"] for i in new[0]["items"]] == [i for i, _ in expect]
    assert new[0]["cold_start"] is False


def test_kcat_round_trip(kafka_bootstrap, topic_prefix, make_topics, tmp_path):
    assert shutil.which("kcat"), (
        "kcat missing: .ci/install-kafka.sh installs it (apt-get install -y kcat)"
    )
    topics = make_topics(
        kafka_bootstrap,
        topic_prefix,
    )
    store = tmp_path / "store"
    make_checkpoint(store, n_items=50, signer=dev_signer())
    eid = "kcat-" + uuid.uuid4().hex[:8]
    line = b"kcat-user:" + event_payload("kcat-user", "7", event_id=eid, ts=time.time()) + b"\n"
    with WorkerProcess(
        env={**os.environ, **verify_env()},  # trusts dev_signer()
        log_path=tmp_path / "worker.log",
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=store,
    ):
        subprocess.run(
            ["kcat", "-b", kafka_bootstrap, "-t", topics["clicks"], "-P", "-K:"],
            input=line,
            check=True,
            timeout=30,
        )
        deadline = time.time() + 30
        found = None
        while found is None and time.time() < deadline:
            res = subprocess.run(
                [
                    "kcat",
                    "-b",
                    kafka_bootstrap,
                    "-C",
                    "-t",
                    topics["recommendations"],
                    "-o",
                    "beginning",
                    "-e",
                    "-q",
                    "-f",
                    "%k\t%s\n",
                ],
                capture_output=True,
                timeout=30,
                check=True,
            )
            for row in res.stdout.decode().splitlines():
                key, _, value = row.partition("\t")
                if value and json.loads(value)["event_id"] == eid:
                    found = (key, json.loads(value))
            time.sleep(0.3)
    assert found is not None, "no recommendation for the kcat event"
    assert found[0] == "kcat-user"
    assert len(found[1]["items"]) == 10 and "7" not in {i["item_id"] for i in found[1]["items"]}
