"""The trainer service loop without a broker: its cycle configuration, the cycle trigger,
new items, finishing a cycle, and :meth:`TrainerService.run` end to end on fake Kafka clients
(the synthetic world of :mod:`tests.unit.trainer._world`, a fake teacher)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict
from types import SimpleNamespace

import pytest
from aiokafka.structs import TopicPartition

from coldstream.core.checkpoint import list_versions, load_checkpoint, sign_checkpoint
from coldstream.core.model_updates import verify_item_vector, verify_update
from coldstream.core.pointer import read_pointer
from coldstream.core.signing import Signer
from tests.unit.trainer._world import FakeTeacher, make_world, random_checkpoint, session_events
from trainer.service.gate import GateResult
from trainer.service.loop import TrainerService
from trainer.settings import TrainerSettings
from trainer.student.training import TrainConfig
from trainer.teacher.heads import load_teacher_head

SIGNER = Signer.generate()


@pytest.fixture
def clean_env(monkeypatch):
    """Settings from defaults and arguments only (no COLDSTREAM_* of the calling shell)."""
    for name in list(os.environ):
        if name.startswith("COLDSTREAM_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def world():
    return make_world()


def settings(store, **over) -> TrainerSettings:
    return TrainerSettings(model_store=store, topic_prefix="t-", **over)


def test_the_service_cycle_configuration_is_the_old_one(clean_env, tmp_path):
    """Field by field what ``TrainerService.cycle`` built before CycleConfig nested a
    TrainConfig: CycleConfig(holdout_share, margin, epochs=cycle_epochs, teacher_prefixes,
    seed=seed + cycles, device) with lr 1e-3, batch 256, max_prefix 20, extra_per_user 2,
    patience 2, id_dropout 0.25, max_seconds 600, KD alpha 1 and T 2."""
    service = TrainerService(settings(tmp_path))
    cfg = service.cycle_config()
    assert (cfg.holdout_share, cfg.margin, cfg.teacher_prefixes, cfg.alpha, cfg.temperature) == (
        0.2,
        0.01,
        1024,
        1.0,
        2.0,
    )
    old = TrainConfig(
        epochs=4,
        batch_size=256,
        lr=1e-3,
        patience=2,
        seed=0,
        max_prefix=20,
        extra_per_user=2,
        id_dropout=0.25,
        max_seconds=600.0,
        device="auto",
    )
    assert asdict(cfg.train_config(kd=False)) == asdict(old)
    old.teacher, old.alpha, old.temperature = "model", 1.0, 2.0
    assert asdict(cfg.train_config(kd=True)) == asdict(old)
    service.cycles = 3
    tuned = TrainerService(
        settings(
            tmp_path,
            cycle_epochs=7,
            seed=10,
            device="cpu",
            holdout_share=0.3,
            gate_margin=0.05,
            teacher_prefixes=64,
        )
    )
    tuned.cycles = 2
    t = tuned.cycle_config()
    assert service.cycle_config().train.seed == 3
    assert (
        t.train.epochs,
        t.train.seed,
        t.train.device,
        t.holdout_share,
        t.margin,
        t.teacher_prefixes,
    ) == (7, 12, "cpu", 0.3, 0.05, 64)
    assert asdict(t.train) == {**asdict(cfg.train), "epochs": 7, "seed": 12, "device": "cpu"}


def test_a_cycle_is_due_after_enough_new_events_or_time(clean_env, tmp_path):
    service = TrainerService(
        settings(tmp_path, min_buffer_events=10, cycle_events=5, cycle_seconds=0)
    )
    for n in range(9):
        service.buffer.add("u", f"i{n}")
    assert not service.cycle_due()  # fewer than min_buffer_events
    service.buffer.add("u", "i9")
    assert service.cycle_due()
    service.events_at_cycle = service.buffer.added
    assert not service.cycle_due()  # nothing new since the last cycle
    for n in range(4):
        service.buffer.add("u", f"j{n}")
    assert not service.cycle_due()  # 4 < cycle_events
    timed = TrainerService(
        settings(tmp_path, min_buffer_events=10, cycle_events=0, cycle_seconds=60)
    )
    for n in range(10):
        timed.buffer.add("u", f"i{n}")
    assert not timed.cycle_due()
    timed.last_cycle = time.monotonic() - 61
    assert timed.cycle_due()


def test_items_records_the_student_lacks_are_fresh(clean_env, world, tmp_path):
    ids, text = world
    service = TrainerService(settings(tmp_path))
    service.ck = load_checkpoint(random_checkpoint(tmp_path, ids, text))
    fresh: dict[str, str] = {}
    service.on_item(None, json.dumps({"item_id": "it3", "title": "Known"}).encode(), fresh)
    service.on_item(
        None, json.dumps({"item_id": "n1", "title": "New", "category": ["A", "B"]}).encode(), fresh
    )
    service.on_item(None, b"{not json", fresh)
    service.on_item(None, json.dumps({"title": "no id"}).encode(), fresh)
    service.on_item(None, json.dumps({"item_id": "n2", "title": ""}).encode(), fresh)
    assert fresh == {"n1": "New - A, B"} and service.texts["it3"] == "Known"
    service.new_items["n1"] = (text[0], "New - A, B")  # embedded
    again: dict[str, str] = {}
    service.on_item(
        None, json.dumps({"item_id": "n1", "title": "New", "category": ["A", "B"]}).encode(), again
    )
    assert again == {}
    service.on_item(
        None,
        json.dumps({"item_id": "n1", "title": "New", "description": "Now longer"}).encode(),
        again,
    )
    assert again == {"n1": "New. Now longer"}


async def test_finishing_a_failed_or_rejected_cycle_counts_it(clean_env, tmp_path):
    service = TrainerService(settings(tmp_path))
    get = service.metrics.registry.get_sample_value
    loop = asyncio.get_running_loop()
    service.running_cycle = failed = loop.create_future()
    failed.set_exception(RuntimeError("boom"))
    await service.finish_cycle()
    assert service.running_cycle is None and service.cycles == 1
    assert get("coldstream_trainer_cycles_total", {"outcome": "failed"}) == 1.0
    g = GateResult(promote=False, candidate_ndcg=0.1, current_ndcg=0.3, margin=0.01, n_users=20)
    service.running_cycle = rejected = loop.create_future()
    rejected.set_result((SimpleNamespace(seconds=2.0, gate=g, metrics={"distill_loss": 0.5}), None))
    await service.finish_cycle()
    assert service.cycles == 2
    assert get("coldstream_trainer_cycles_total", {"outcome": "rejected"}) == 1.0
    assert get("coldstream_trainer_cycles_total", {"outcome": "promoted"}) == 0.0
    assert get("coldstream_trainer_gate_ndcg", {"model": "current"}) == 0.3


class FakeConsumer:
    def __init__(self, batches):
        self.batches, self.stopped = list(batches), False

    async def start(self):
        pass

    async def stop(self):
        self.stopped = True

    async def getmany(self, timeout_ms=0, max_records=None):
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(0.02)
        return {}


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.stopped = False

    async def start(self):
        pass

    async def stop(self):
        self.stopped = True

    async def send(self, topic, value=None, key=None):
        self.sent.append((topic, key, value))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_and_wait(self, topic, value=None, key=None):
        self.sent.append((topic, key, value))


def _records(topic, values):
    return {TopicPartition(topic, 0): [SimpleNamespace(key=k, value=v) for k, v in values]}


async def test_run_buffers_embeds_redistils_and_announces(clean_env, world, tmp_path):
    ids, text = world
    store = tmp_path / "store"
    sign_checkpoint(random_checkpoint(store, ids, text), SIGNER)  # no pointer yet: fallback
    key_file, _ = SIGNER.write(tmp_path / "keys")
    # gate_margin 1: every candidate is promoted (the gate itself: test_redistill.py)
    s = settings(
        store,
        signing_key_file=key_file,
        min_buffer_events=10,
        cycle_events=2000,
        cycle_seconds=0,
        teacher_prefixes=200,
        cycle_epochs=2,
        device="cpu",
        gate_margin=1.0,
        buffer_events=5000,
    )
    service = TrainerService(s, teacher=FakeTeacher())
    events = [
        (
            user,
            json.dumps(
                {"event_id": f"e{n}", "user_id": user, "item_id": item, "ts": 1000.0 + n}
            ).encode(),
        )
        for n, (user, item) in enumerate(session_events(ids, n_users=300, seed=1))
    ]
    first = {
        **_records(
            "t-items",
            [(b"brand-new", json.dumps({"item_id": "brand-new", "title": "Brand new"}).encode())],
        ),
        **_records("t-clicks", [(u.encode(), v) for u, v in events] + [(b"x", b"{broken")]),
    }
    late = _records(
        "t-items", [(b"late", json.dumps({"item_id": "late", "title": "Late arrival"}).encode())]
    )
    consumer, producer = FakeConsumer([first, late]), FakeProducer()

    async def connect():
        service.consumer, service.producer = consumer, producer

    service.connect = connect
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    deadline = time.monotonic() + 120
    while (
        not any(t == "t-model-updates" for t, _, _ in producer.sent)
        or service.running_cycle is not None
    ):
        assert time.monotonic() < deadline and not task.done(), "no announced cycle"
        await asyncio.sleep(0.05)
    stop.set()  # read between steps: the step announcing v2 (and re-placing "late") completes
    await asyncio.wait_for(task, 30)

    assert consumer.stopped and producer.stopped
    assert len(service.buffer) == len(events)  # the broken record is not buffered
    vectors = [(k.decode(), json.loads(v)) for t, k, v in producer.sent if t == "t-item-vectors"]
    assert [(k, r["model_version"]) for k, r in vectors] == [
        ("brand-new", "1"),
        ("late", "1"),
        ("late", "2"),
    ]
    assert all(len(r["vector"]) == service.ck.config.dim for _, r in vectors)
    signed = [
        verify_item_vector(v, keys=SIGNER.keyring)
        for t, _, v in producer.sent
        if t == "t-item-vectors"
    ]
    assert [v.key_id for v in signed] == [SIGNER.key_id] * 3
    [update] = [v for t, _, v in producer.sent if t == "t-model-updates"]
    rec, where = verify_update(update, keys=SIGNER.keyring, store_root=store)
    assert rec.version == 2 and service.ck.version == 2 and where == service.ck.path.resolve()
    # the promotion moved the signed pointer first; the record carries its sequence number
    ptr = read_pointer(store, SIGNER.keyring)
    assert (ptr.version, ptr.seq, rec.seq) == (2, 1, 1) and service.seq == 1
    assert load_checkpoint(where, verify_keys=SIGNER.keyring).signed_by == SIGNER.key_id
    assert (
        "popular_items" not in rec.metrics
        and rec.metrics["new_items"] == 1
        and "snapshot_at" in rec.metrics
    )
    assert "brand-new" in service.ck.index_of and "late" not in service.ck.index_of
    assert (
        load_teacher_head(store, 2) is not None and service.head is not None
    )  # fitted in the first cycle
    get = service.metrics.registry.get_sample_value
    assert get("coldstream_trainer_cycles_total", {"outcome": "promoted"}) == 1.0
    assert get("coldstream_trainer_new_items_total") == 2.0
    assert get("coldstream_trainer_buffer_events") == float(len(events))
    assert get("coldstream_trainer_cycle_seconds_count") == 1.0


def _signed_service(tmp_path, ids, text, **over):
    store = tmp_path / "store"
    path = random_checkpoint(store, ids, text)
    sign_checkpoint(path, SIGNER)
    key_file = tmp_path / "keys" / "signing-key.pem"
    if not key_file.exists():
        SIGNER.write(tmp_path / "keys")
    service = TrainerService(settings(store, signing_key_file=key_file, **over))
    service.load()
    return service, store


async def test_one_bad_record_never_stops_the_trainer_consumers(clean_env, world, tmp_path):
    """200 KB of nested JSON on items (and on clicks), an oversize record, a non-object, a
    bad id and a None value: each counted and skipped, the good records of the same batch
    kept. Before: a RecursionError out of json.loads ended the service."""
    ids, text = world
    service, _ = _signed_service(tmp_path, ids, text)
    nested = b"[" * 200_000
    good_item = json.dumps({"item_id": "fresh", "title": "A fresh item"}).encode()
    good_event = json.dumps({"event_id": "e1", "user_id": "u", "item_id": ids[0], "ts": 1.0})
    batch = {
        **_records(
            "t-items",
            [
                (b"n", b"[" * 60_000),  # under the size cap: the parser's RecursionError
                (b"n", nested),
                (b"x", b"[1, 2]"),
                (b"b", json.dumps({"item_id": "a b", "title": "t"}).encode()),
                (b"z", None),
                (b"fresh", good_item),
            ],
        ),
        **_records("t-clicks", [(b"u", nested), (b"u", good_event.encode())]),
    }
    service.consumer = FakeConsumer([batch])
    fresh = await service.consume_batch()
    assert fresh == {"fresh": "A fresh item"} and len(service.buffer) == 1
    get = service.metrics.registry.get_sample_value
    skipped = {
        r: get("coldstream_trainer_records_skipped_total", {"topic": "items", "reason": r})
        for r in ("oversize", "nested_too_deeply", "not_an_object", "malformed")
    }
    assert skipped == {
        "oversize": 1.0,
        "nested_too_deeply": 1.0,
        "not_an_object": 1.0,
        "malformed": 2.0,
    }
    assert get(
        "coldstream_trainer_records_skipped_total", {"topic": "clicks", "reason": "oversize"}
    )


def test_item_texts_and_new_items_are_bounded(clean_env, world, tmp_path, monkeypatch):
    import trainer.service.loop as service_module

    ids, text = world
    service, _ = _signed_service(tmp_path, ids, text)
    monkeypatch.setattr(service_module, "MAX_NEW_ITEMS", 5)
    fresh: dict[str, str] = {}
    for n in range(20):
        service.on_item(None, json.dumps({"item_id": f"n{n}", "title": "x" * 5000}).encode(), fresh)
    assert len(fresh) == 5 and all(len(t) == service_module.MAX_TEXT_CHARS for t in fresh.values())
    assert len(service.texts) == len(ids) + 5
    get = service.metrics.registry.get_sample_value
    assert (
        get(
            "coldstream_trainer_records_skipped_total",
            {"topic": "items", "reason": "new_items_full"},
        )
        == 15.0
    )


async def test_the_service_follows_a_rollback_and_refuses_to_run_unsigned(
    clean_env, world, tmp_path
):
    from trainer.service.loop import NoSigningKey
    from trainer.service.promote import promote

    ids, text = world
    service, store = _signed_service(tmp_path, ids, text, keep_versions=2)
    v2 = random_checkpoint(store, ids, text)
    sign_checkpoint(v2, SIGNER)
    promote(service.s, 2, publish=False)  # seq 1 -> v2
    await service.follow_pointer()
    assert (service.ck.version, service.seq) == (2, 1)
    promote(service.s, 1, publish=False)  # the rollback: seq 2 -> v1
    await service.follow_pointer()
    assert (service.ck.version, service.seq) == (1, 2)
    for _ in range(3):
        sign_checkpoint(random_checkpoint(store, ids, text), SIGNER)
    service.prune(protect=1)
    assert list_versions(store) == [1, 4, 5]  # the newest 2 and the pointer's
    with pytest.raises(NoSigningKey, match="COLDSTREAM_TRAINER_SIGNING_KEY_FILE"):
        await TrainerService(settings(store)).run()


async def test_with_a_rollout_share_a_passing_cycle_starts_a_canary(clean_env, tmp_path):
    """COLDSTREAM_TRAINER_ROLLOUT_SHARE: the gate-passing checkpoint goes to a share of users
    as a canary for the judge; the pointer stays; a second one waits while it runs."""
    from devtools.checkpoints import make_checkpoint
    from trainer.service import rollout

    store = tmp_path / "store"
    key_file, _ = SIGNER.write(tmp_path / "keys")
    v1 = make_checkpoint(store, n_items=30, dim=8, text_dim=8, seed=1, signer=SIGNER)
    v2 = make_checkpoint(store, n_items=30, dim=8, text_dim=8, seed=2, signer=SIGNER, point=False)
    v3 = make_checkpoint(store, n_items=30, dim=8, text_dim=8, seed=3, signer=SIGNER, point=False)
    service = TrainerService(settings(store, signing_key_file=key_file, rollout_share=0.1))
    service.ck, service.seq, service.cycle_seq = load_checkpoint(v1), 1, 1
    service.producer = producer = FakeProducer()
    get = service.metrics.registry.get_sample_value
    g = GateResult(promote=True, candidate_ndcg=0.3, current_ndcg=0.2, margin=0.01, n_users=20)
    loop = asyncio.get_running_loop()
    for path in (v2, v3):
        service.running_cycle = done = loop.create_future()
        done.set_result((SimpleNamespace(seconds=1.0, gate=g, metrics={}), path))
        await service.finish_cycle()
    r = rollout.running(store)
    assert r is not None and (r.candidate, r.incumbent, r.share, r.arm) == (2, 1, 0.1, "canary")
    [record] = [v for t, _, v in producer.sent if t == "t-model-updates"]
    update, _ = verify_update(record, keys=SIGNER.keyring, store_root=store)
    assert (update.version, update.arm, update.share, update.rollout_id) == (
        2,
        "canary",
        0.1,
        r.rollout_id,
    )
    assert read_pointer(store, SIGNER.keyring).version == 1 and service.ck.version == 1
    assert get("coldstream_trainer_cycles_total", {"outcome": "canary"}) == 1.0
    assert get("coldstream_trainer_cycles_total", {"outcome": "rejected"}) == 1.0  # v3 waits
    assert get("coldstream_trainer_cycles_total", {"outcome": "promoted"}) == 0.0
