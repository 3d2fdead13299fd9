"""The ``redistilled`` scenario of ``coldstream bench rollout``: the trainer's next
re-distilled student, rolled out as a canary and judged on real MovieLens users.

Apache Kafka, a trainer subprocess (``coldstream trainer``: the real MiniLM teacher on CPU,
``COLDSTREAM_TRAINER_ROLLOUT_SHARE`` set, its judge inside) and a worker subprocess share a
model store holding v1, a random student over the first ``items`` MovieLens items (as in
``tests/integration/test_redistill_e2e.py``). The first ``train_events`` interactions (time
order) fill the trainer's buffer; its cycle distils v2, the gate passes it, and instead of a
promotion the trainer starts a canary. Then users who were not in that stream arrive: each
sends their own first events, in their own order, one per round (real next events: the
judge's observations are real users' next items). The judge promotes or rolls back.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any


def scenario(args: Any, bootstrap: str, work: Path) -> dict[str, Any]:
    from coldstream.core.pointer import read_pointer
    from coldstream.core.rollout import assign
    from coldstream.core.topics import create_topics, topic_names
    from devtools.brokers import free_port
    from devtools.checkpoints import dev_signer, key_env, movielens_random_student
    from devtools.kafka_io import new_event, produce, read_until
    from devtools.processes import WorkerProcess, start_process, stop_process, wait_for_log
    from devtools.waiting import wait_until

    n_items, n_train, share = 300, 3000, args.redistill_share
    root = work / "redistilled"
    store = root / "store"
    prefix = f"bench-rollout-redistilled-{int(time.time())}-"
    asyncio.run(create_topics(bootstrap, replication_factor=1, prefix=prefix))
    topics = topic_names(prefix)
    signer = dev_signer()
    _, stream = movielens_random_student(store, signer, n_items=n_items)
    train, rest = stream[:n_train], stream[n_train:]
    seen = {u for u, _ in train}
    firsts: dict[str, list[str]] = {}
    for u, i in rest:  # users who arrive after the training stream: their own first events
        if u not in seen and len(firsts.setdefault(u, [])) < args.redistill_events:
            firsts[u].append(i)
    users = [u for u, ev in firsts.items() if len(ev) >= 2]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COLDSTREAM_")},
        **key_env(root / "keys", signer),
        "HF_HUB_OFFLINE": "1",
        "COLDSTREAM_TRAINER_PROGRESS": "false",
        "COLDSTREAM_TRAINER_DEVICE": "cpu",
        "COLDSTREAM_TRAINER_CYCLE_EPOCHS": "4",
        "COLDSTREAM_TRAINER_ROLLOUT_SHARE": str(share),
        "COLDSTREAM_TRAINER_ROLLOUT_MIN_SAMPLE": str(args.redistill_min_sample),
        "COLDSTREAM_TRAINER_ROLLOUT_MAX_SECONDS": str(args.max_seconds * 4),
    }
    trainer_log, port = root / "trainer.log", free_port()
    trainer = start_process(
        [sys.executable, "-m", "coldstream", "trainer", "--bootstrap", bootstrap,
         "--topic-prefix", prefix, "--group-id", prefix + "trainer", "--model-store", str(store),
         "--cycle-events", str(n_train - 200), "--cycle-seconds", "0",
         "--min-buffer-events", "500", "--teacher-prefixes", "64",
         "--metrics-port", str(port), "--threads", "1"],
        log_path=trainer_log, env=env, cwd=root,
    )  # fmt: skip
    out: dict[str, Any] = {"share": share, "replayed_users": len(users)}
    try:
        with WorkerProcess(
            log_path=root / "worker.log", bootstrap=bootstrap, topic_prefix=prefix,
            app_id=prefix + "app", model_store=store, threads=1, env=env,
        ) as worker:  # fmt: skip
            wait_for_log(trainer_log, r"trainer: consuming", proc=trainer, timeout_s=120)
            asyncio.run(
                produce(
                    bootstrap,
                    [
                        (topics["clicks"], u.encode(), new_event(u, i, ts=880_000_000.0 + n)[1])
                        for n, (u, i) in enumerate(train)
                    ],
                )
            )
            m = wait_for_log(
                trainer_log, r"canary (r-\S+) to", proc=trainer, timeout_s=300, name="trainer"
            )
            rid = m.group(1)
            wait_until(
                lambda: (
                    'coldstream_rollout_candidate_version{arm="canary"} 2.0'
                    in worker.get_text("/metrics")
                ),
                timeout_s=60,
                what="the worker to hold v2 as the canary",
            )
            t0, sent, decided = time.time(), 0, None
            for k in range(args.redistill_events):
                batch = [
                    (topics["clicks"], u.encode(), new_event(u, firsts[u][k])[1])
                    for u in users
                    if k < len(firsts[u])
                ]
                asyncio.run(produce(bootstrap, batch, acks="all"))
                sent += len(batch)
                time.sleep(3.0)
                if not (store / "ROLLOUT.json").exists():
                    decided = time.time()
                    break
            if decided is None:
                wait_until(
                    lambda: not (store / "ROLLOUT.json").exists(),
                    timeout_s=args.max_seconds * 4 + 30,
                    what="the judge's decision",
                )
                decided = time.time()
            recs = asyncio.run(
                read_until(bootstrap, [topics["recommendations"]], idle_s=2.0, to_end=True)
            )
    finally:
        stop_process(trainer, deadline_s=15)
    report = json.loads(next((root / "reports" / "rollout-decisions").glob("*.json")).read_text())
    vals = [json.loads(r.value) for r in recs]
    saw = {v["user_id"] for v in vals if v.get("arm") == "canary"}
    in_share = {u for u in {v["user_id"] for v in vals} if assign(u, share, rid)}
    log = trainer_log.read_text(errors="replace")
    gate = re.search(r"cycle 1 in [\d.]+ s: (\{.*\})", log)
    out.update(
        decision=report["decision"],
        rule=report["rule"],
        seconds_to_decision=round(decided - t0, 1),
        events_sent_before_decision=sent,
        users_served_candidate=len(saw),
        served_outside_share=len(saw - in_share),
        pointer_version=read_pointer(store, signer.keyring).version,
        gate=gate.group(1) if gate else None,
        figures={k: report["figures"][k] for k in ("cold", "warm", "elapsed_s")},
    )
    return out
