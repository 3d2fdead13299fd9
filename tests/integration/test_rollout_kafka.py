"""A bad canary, rolled back by the judge by itself, on Apache Kafka with two worker processes
and the judge process (``coldstream judge``), both with real Ed25519 keys.

Users here like what the live model (v1) ranks first: each user's next event is v1's top
item for their history (computed offline from the same checkpoint). The candidate v2 is
another model (another seed): it recommends other items. ``coldstream rollout start 2
--share 0.3`` puts it beside v1; the workers serve it to the users its keyed hash picks
(every record names its arm and version), the judge reads recommendations and events,
rolls the canary back with a signed decision, both workers drop the candidate and serve
everyone v1 again; ``CURRENT.json`` never left v1."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from coldstream.core.pointer import read_pointer
from coldstream.core.rollout import assign
from coldstream.core.signing import Signer
from devtools.checkpoints import make_checkpoint
from devtools.kafka_io import new_event, produce, read_until, run_coro
from devtools.processes import WorkerProcess, start_process, stop_process
from devtools.waiting import wait_until
from stream_app.recommender import Recommender
from tests.cli_errors import run_cli

N_ITEMS, N_USERS, ROUNDS, SHARE = 80, 240, 4, 0.3


def _top1(rec: Recommender, history: list[str]) -> str:
    return rec.recommend_batch([[[i, 0, 0.0] for i in history]], 1)[0][0][0]


def test_a_bad_canary_is_rolled_back_by_the_judge(
    kafka_bootstrap, topic_prefix, make_topics, tmp_path
):
    topics = make_topics(kafka_bootstrap, topic_prefix)
    signer = Signer.generate()
    priv, pub = signer.write(tmp_path / "keys")
    store = tmp_path / "store"
    v1 = make_checkpoint(store, n_items=N_ITEMS, seed=1, signer=signer)
    make_checkpoint(store, n_items=N_ITEMS, seed=2, signer=signer, point=False)  # v2
    env = {
        "COLDSTREAM_BOOTSTRAP": kafka_bootstrap,
        "COLDSTREAM_TOPIC_PREFIX": topic_prefix,
        "COLDSTREAM_MODEL_STORE": str(store),
        "COLDSTREAM_TRAINER_SIGNING_KEY_FILE": str(priv),
        "COLDSTREAM_VERIFY_KEYS_FILE": str(pub),
    }
    live = Recommender.from_checkpoint(v1, prefer_gpu_index=False)
    users = [f"user-{i}" for i in range(N_USERS)]
    rng = np.random.default_rng(0)
    histories = {u: [str(1 + int(rng.integers(N_ITEMS)))] for u in users}
    workers = [
        WorkerProcess(
            log_path=tmp_path / name / "worker.log",
            bootstrap=kafka_bootstrap,
            topic_prefix=topic_prefix,
            app_id=topic_prefix + "app",
            model_store=store,
            log_level="warning",
            threads=1,
            env={**os.environ, "COLDSTREAM_VERIFY_KEYS_FILE": str(pub)},
        )
        for name in ("a", "b")
    ]
    judge = None

    def held(arm_version: str) -> bool:
        want = f'coldstream_rollout_candidate_version{{arm="canary"}} {arm_version}'
        return all(want in w.get_text("/metrics") for w in workers)

    with workers[0], workers[1]:
        started = run_cli(["rollout", "start", "2", "--share", str(SHARE)], env, cwd=tmp_path)
        assert started.code == 0, started.stderr
        rid = started.stdout.split()[1].rstrip(":")
        canary = {u for u in users if assign(u, SHARE, rid)}
        wait_until(lambda: held("2.0"), timeout_s=30, what="both workers to hold the canary")
        judge_env = (
            {k: v for k, v in os.environ.items() if not k.startswith("COLDSTREAM_")}
            | env
            | {"COLDSTREAM_TRAINER_PROGRESS": "false"}
        )
        judge = start_process(
            [sys.executable, "-m", "coldstream", "judge", "--min-candidate", "30",
             "--guard-min", "15", "--metrics-port", "0"],
            log_path=tmp_path / "judge.log", env=judge_env, cwd=tmp_path,
        )  # fmt: skip
        t0 = time.time()
        for step in range(ROUNDS):
            batch = []
            for u in users:
                if step:  # what this user likes next: v1's first pick for their history
                    histories[u].append(_top1(live, histories[u]))
                batch.append((topics["clicks"], u.encode(), new_event(u, histories[u][-1])[1]))
            run_coro(produce(kafka_bootstrap, batch, acks="all"))
            time.sleep(2.5)
            if not (store / "ROLLOUT.json").exists():
                break
        wait_until(
            lambda: not (store / "ROLLOUT.json").exists(),
            timeout_s=60,
            what="the judge to decide (judge.log)",
        )
        decided_s = time.time() - t0
        wait_until(lambda: held("0.0"), timeout_s=30, what="both workers to drop the canary")
        after = time.time()
        run_coro(
            produce(
                kafka_bootstrap,
                [(topics["clicks"], u.encode(), new_event(u, "3")[1]) for u in users],
                acks="all",
            )
        )
        recs = run_coro(
            read_until(kafka_bootstrap, [topics["recommendations"]], idle_s=2.0, to_end=True)
        )
    stop_process(judge)
    vals = [(r.timestamp / 1000.0, json.loads(r.value)) for r in recs]
    report = json.loads(
        next((tmp_path / "reports" / "rollout-decisions").glob("*.json")).read_text()
    )
    assert report["decision"] == "rollback", report
    cold = report["figures"]["cold"]
    assert cold["hit_candidate"] < cold["hit_incumbent"]
    served_canary = {v["user_id"] for _, v in vals if v["arm"] == "canary"}
    assert served_canary and served_canary <= canary  # never more than its share
    assert all(v["model_version"] == ("2" if v["arm"] == "canary" else "1") for _, v in vals)
    late = [v for ts, v in vals if ts > after]
    assert len(late) == N_USERS and {v["arm"] for v in late} == {"live"}
    assert read_pointer(store, signer.keyring).version == 1
    log = (tmp_path / "judge.log").read_text()
    assert "rollback" in log and "Traceback" not in log
    print(f"rollback after {decided_s:.1f} s; {len(served_canary)} users saw the canary")
