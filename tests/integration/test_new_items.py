"""Item cold start end to end: ``items`` -> trainer (teacher) -> ``item-vectors`` -> worker index.

Apache Kafka, a trainer subprocess (``coldstream trainer``, cycles off) and a worker
subprocess share a model store. The served student is a *text-similarity* student (item
vector = teacher text vector, user = mean of their items: weights set by hand) so that
"similar in text" has an exact meaning. A brand-new item "Star Wars: Episode I" is
published on ``items``; users then click the three original Star Wars films. Bound: the
new item is in such a user's top-10 within ``BOUND_S`` seconds of its catalog record.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import torch

from coldstream.core.model_updates import verify_item_vector
from coldstream.core.signing import Signer
from devtools.brokers import free_port
from devtools.checkpoints import key_env, point_store
from devtools.kafka_io import new_event, produce, read_until
from devtools.processes import WorkerProcess, start_process, stop_process, wait_for_log

SIGNER = Signer.generate()
BOUND_S = 15.0
N_ITEMS = 300
NEW_ID = "new-episode-1"
NEW_RECORD = {
    "item_id": NEW_ID,
    "title": "Star Wars: Episode I - The Phantom Menace (1999)",
    "category": ["Action", "Adventure", "Sci-Fi"],
    "ts": 0,
}
CLICKS = ("50", "172", "181")  # Star Wars (1977), Empire Strikes Back, Return of the Jedi


def text_student_checkpoint(root: Path) -> Path:
    from coldstream.core.checkpoint import save_checkpoint
    from coldstream.core.student import Student, StudentConfig
    from trainer.data import load_movielens
    from trainer.teacher.encoder import Teacher

    _, items = load_movielens()
    teacher = Teacher(device="cpu")
    vecs = teacher.encode(items.texts[:N_ITEMS])
    d = teacher.dim
    model = Student(
        StudentConfig(
            n_items=N_ITEMS,
            text_dim=d,
            dim=d,
            encoder="mean",
            id_embeddings=False,
            dropout=0.0,
            max_len=20,
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.text_proj.weight.copy_(torch.eye(d))
        model.out.weight.copy_(torch.eye(d))
    path = save_checkpoint(
        root,
        model=model,
        item_ids=items.ids[:N_ITEMS],
        item_text_vecs=vecs,
        item_titles=items.titles[:N_ITEMS],
        metrics={},
        teacher=teacher.describe(),
        signer=SIGNER,
    )
    point_store(path, SIGNER)
    return path


def _recommended_clicks(worker: WorkerProcess) -> float:
    """``coldstream_events_total{outcome="recommended",topic="clicks"}`` of the worker."""
    for line in worker.get_text("/metrics").splitlines():
        if line.startswith('coldstream_events_total{outcome="recommended",topic="clicks"} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_new_item_recommended_within_bound(
    kafka_bootstrap, topic_prefix, make_topics, tmp_path, monkeypatch
):
    import sys

    topics = make_topics(kafka_bootstrap, topic_prefix)
    store = tmp_path / "store"
    text_student_checkpoint(store)
    for name, value in key_env(tmp_path / "keys", SIGNER).items():  # both subprocesses
        monkeypatch.setenv(name, value)
    trainer_log = tmp_path / "trainer.log"
    trainer = start_process(
        [
            sys.executable,
            "-m",
            "coldstream",
            "trainer",
            "--bootstrap",
            kafka_bootstrap,
            "--topic-prefix",
            topic_prefix,
            "--group-id",
            topic_prefix + "trainer",
            "--model-store",
            str(store),
            "--cycle-events",
            "0",
            "--cycle-seconds",
            "0",
            "--metrics-port",
            str(free_port()),
            "--threads",
            "1",
        ],
        log_path=trainer_log,
    )
    worker = WorkerProcess(
        log_path=tmp_path / "worker.log",
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        app_id=topic_prefix + "app",
        model_store=store,
        threads=1,
    )
    try:
        with worker:
            wait_for_log(
                trainer_log,
                r"trainer: consuming",
                proc=trainer,
                timeout_s=60,
                interval_s=0.2,
                name="trainer",
            )
            # a user clicking the Star Wars films before the new item exists: it is not there
            eids = []
            recs = []
            for item in CLICKS:
                eid, v = new_event("early", item)
                recs.append((topics["clicks"], b"early", v))
                eids.append(eid)
            asyncio.run(produce(kafka_bootstrap, recs))
            t0 = time.time()
            asyncio.run(
                produce(
                    kafka_bootstrap,
                    [
                        (
                            topics["items"],
                            NEW_ID.encode(),
                            json.dumps({**NEW_RECORD, "ts": t0}).encode(),
                        )
                    ],
                )
            )
            found_at = None
            n = 0
            while time.time() - t0 < BOUND_S + 10 and found_at is None:
                n += 1
                user = f"fan-{n}"
                batch = [
                    (topics["clicks"], user.encode(), new_event(user, item)[1]) for item in CLICKS
                ]
                asyncio.run(produce(kafka_bootstrap, batch))
                deadline = time.time() + 5
                while time.time() < deadline:
                    # every click so far answered (early's 3, then 3 per fan): the fan's
                    # session holds their 3 clicks (/recommend never says a history length)
                    if _recommended_clicks(worker) < len(CLICKS) * (n + 1):
                        time.sleep(0.1)
                        continue
                    status, body = worker.get_json(f"/recommend/{user}?k=10")
                    if status == 200 and body["fallback"] is None:
                        if NEW_ID in [i["item_id"] for i in body["items"]]:
                            found_at = time.time()  # upper bound: seen by a query
                        break
                    time.sleep(0.1)
                if found_at is None:
                    time.sleep(0.5)
            # one more fan: the recommendation *record* of their third click carries the item
            final_ids = [new_event("final-fan", item) for item in CLICKS]
            final = [(topics["clicks"], b"final-fan", v) for _, v in final_ids]
            asyncio.run(produce(kafka_bootstrap, final))
            out = asyncio.run(
                read_until(
                    kafka_bootstrap,
                    [topics["recommendations"], topics["item-vectors"]],
                    count=3 * (n + 2) + 1,
                    timeout_s=20,
                    idle_s=1.0,
                )
            )
            metrics = worker.get_text("/metrics")
    finally:
        stop_process(trainer, deadline_s=10)
    tail = trainer_log.read_text(errors="replace")[-2000:]
    assert found_at is not None, f"new item never recommended\n{tail}"
    latency = found_at - t0
    assert latency < BOUND_S, latency
    print(f"new item recommended {latency:.2f} s after its catalog record")
    vectors = [json.loads(r.value) for r in out if r.topic == topics["item-vectors"]]
    assert [v["item_id"] for v in vectors] == [NEW_ID] and vectors[0]["model_version"] == "1"
    assert len(vectors[0]["vector"]) == 384 and np.isfinite(vectors[0]["vector"]).all()
    signed = verify_item_vector(
        next(r.value for r in out if r.topic == topics["item-vectors"]), keys=SIGNER.keyring
    )
    assert signed.key_id == SIGNER.key_id  # signed by the trainer's private key
    by_event = {
        json.loads(r.value)["event_id"]: json.loads(r.value)
        for r in out
        if r.topic == topics["recommendations"]
    }
    early = by_event[eids[-1]]  # produced before the item existed
    assert NEW_ID not in [i["item_id"] for i in early["items"]]
    last = [v for v in by_event.values() if v["user_id"] == "final-fan"]
    assert len(last) == 3 and all(v["model_version"] == "1" for v in last)
    third = by_event[final_ids[-1][0]]
    assert third["items"][0]["item_id"] == NEW_ID, third  # the most similar item in text
    assert f"coldstream_index_items {N_ITEMS + 1}.0" in metrics
