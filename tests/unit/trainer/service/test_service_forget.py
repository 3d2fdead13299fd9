"""Forget requests in the trainer service: the buffer is purged of the user, and a cycle
whose snapshot held the user publishes nothing (the next checkpoint is not trained on them).
No broker: the service's consumer is a stand-in; the buffer, the cycle and its thread are
the real ones (the re-distillation itself is replaced by one that waits for the test)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from coldstream.core.checkpoint import load_checkpoint
from coldstream.core.events import Forget
from tests.unit.trainer._world import FakeTeacher, make_world, random_checkpoint
from trainer.service import loop as service_module
from trainer.service.loop import TrainerService
from trainer.settings import TrainerSettings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("COLDSTREAM_"):
            monkeypatch.delenv(name)


class OneBatchConsumer:
    def __init__(self, batches: list[dict[Any, list[Any]]]) -> None:
        self.batches = list(batches)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        return self.batches.pop(0) if self.batches else {}


def _event(user: str, n: int, ts: float) -> Any:
    value = json.dumps({"event_id": f"{user}-{n}", "user_id": user, "item_id": "it1", "ts": ts})
    return SimpleNamespace(key=user.encode(), value=value.encode(), offset=n)


def _forget(user: str, ts: float) -> Any:
    value = json.dumps({"event_id": f"del-{user}", "user_id": user, "ts": ts})
    return SimpleNamespace(key=user.encode(), value=value.encode(), offset=0)


def _service(tmp_path: Any, **over: Any) -> TrainerService:
    return TrainerService(
        TrainerSettings(model_store=tmp_path, topic_prefix="t-", **over), teacher=FakeTeacher()
    )


async def test_a_forget_request_purges_the_user_from_the_buffer(clean_env, tmp_path) -> None:
    service = _service(tmp_path)
    clicks = TopicPartition("t-clicks", 0)
    forgets = TopicPartition("t-forget-requests", 0)
    service.consumer = OneBatchConsumer(
        [
            {clicks: [_event("gone", n, 100.0 + n) for n in range(5)] + [_event("kept", 0, 100.0)]},
            {forgets: [_forget("gone", 200.0)]},
            # a late copy from before the request, then the user's next visit
            {clicks: [_event("gone", 99, 150.0), _event("gone", 100, 300.0)]},
        ]
    )
    for _ in range(3):
        await service.consume_batch()
    by_user = [(e.user, e.ts) for e in service.buffer.events()]
    assert by_user == [("kept", 100.0), ("gone", 300.0)]
    assert "t-forget-requests" in service.logical  # the trainer's group reads the requests


async def _start_cycle_that_waits(
    service: TrainerService, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, list[Any]]:
    """Start a real cycle (in its thread) whose re-distillation promotes once released."""
    release = threading.Event()
    published: list[Any] = []

    def redistill(ck: Any, buffer: Any, **kwargs: Any) -> Any:
        assert release.wait(30)
        gate = SimpleNamespace(promote=True, as_dict=lambda: {})
        return SimpleNamespace(metrics={}, gate=gate, seconds=0.1)

    def publish_checkpoint(root: Any, res: Any, **kwargs: Any) -> Any:
        published.append(res)
        return tmp_path_marker

    tmp_path_marker = object()
    monkeypatch.setattr(service_module, "redistill", redistill)
    monkeypatch.setattr(service_module, "publish_checkpoint", publish_checkpoint)
    service.start_cycle()
    return release, published


@pytest.mark.parametrize("forgotten", ["in-snapshot", "elsewhere"])
async def test_a_cycle_trained_on_a_forgotten_user_is_not_published(
    clean_env, tmp_path, monkeypatch: pytest.MonkeyPatch, forgotten: str
) -> None:
    ids, text = make_world()
    service = _service(tmp_path)
    service.ck = load_checkpoint(random_checkpoint(tmp_path / "store", ids, text))
    for n in range(20):
        service.buffer.add(f"u{n % 4}", ids[n], 0, float(n), event_id=f"e{n}")
    release, published = await _start_cycle_that_waits(service, monkeypatch)
    user = "u1" if forgotten == "in-snapshot" else "someone-else"
    service.forget(Forget(event_id="del-1", user_id=user, ts=50.0))  # while the cycle trains
    release.set()
    res, path = await asyncio.wait_for(service.running_cycle, 30)  # type: ignore[arg-type]
    assert res.gate.promote
    if forgotten == "in-snapshot":
        assert path is None and published == []  # the candidate saw u1's events: discarded
    else:
        assert path is not None and len(published) == 1
    assert "u1" not in service.buffer.users() or forgotten == "elsewhere"
