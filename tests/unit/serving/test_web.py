"""The web views' logic (``stream_app.web.Views``): the answer's one shape, ranking off the
event loop, forwarding to the owner with a timeout and a fallback, the two readinesses.

The worker around the views is a stand-in (consumer assignment, the group's distribution,
table recovery); the recommender, metrics, settings and the owner's HTTP server are real.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web as aioweb
from faust.types import TP
from prometheus_client import CollectorRegistry

from devtools.brokers.probe import free_port
from devtools.checkpoints import make_checkpoint
from stream_app.health import Health
from stream_app.metrics import Metrics
from stream_app.recommender import Recommender
from stream_app.routing import HOP_HEADER, partition_for
from stream_app.settings import Settings
from stream_app.web import Views, answer_body, parse_k

PARTITIONS = 6
SELF = "http://127.0.0.1:1"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("store"), n_items=50, dim=16, text_dim=8)


def _user_on(partition: int, start: int = 0) -> str:
    return next(
        f"u{i}"
        for i in range(start, start + 10_000)
        if partition_for(f"u{i}".encode(), PARTITIONS) == partition
    )


class _Event:
    def __init__(self, flag: bool) -> None:
        self.flag = flag

    def is_set(self) -> bool:
        return self.flag

    def is_active(self) -> bool:
        return self.flag


def _worker(
    ckpt: Path,
    *,
    owned: set[int],
    dist: dict[str, dict[str, list[int]]],
    sessions: dict[str, Any] | None = None,
    recovered: bool = True,
    **settings: Any,
) -> SimpleNamespace:
    names = {"clicks": "clicks", "purchases": "purchases", "recommendations": "recommendations"}
    consumer = SimpleNamespace(
        assignment=lambda: {TP("clicks", p) for p in owned} | {TP("purchases", p) for p in owned}
    )
    app = SimpleNamespace(
        consumer=consumer,
        router=SimpleNamespace(external_topics_metadata=lambda: dist),
        tables=SimpleNamespace(recovery=SimpleNamespace(completed=_Event(recovered))),
        flow_control=_Event(True),
        http_client=None,
    )
    return SimpleNamespace(
        app=app,
        settings=Settings(web_bind="127.0.0.1", web_port=1, **settings),
        names=names,
        logical={v: k for k, v in names.items()},
        recommender=Recommender.from_checkpoint(ckpt, device="cpu", prefer_gpu_index=False),
        sessions=SimpleNamespace(data=sessions or {}),
        metrics=Metrics(CollectorRegistry()),
        progress={},
        batches=0,
    )


def _views(w: SimpleNamespace) -> Views:
    return Views(w, Health(stall_after_s=10, liveness_after_s=30, interval_s=1))  # type: ignore[arg-type]


def _count(w: SimpleNamespace, outcome: str) -> float:
    value = w.metrics.registry.get_sample_value(
        "coldstream_recommend_requests_total", {"outcome": outcome}
    )
    return float(value or 0.0)


async def test_known_and_unknown_users_get_answers_of_one_shape(ckpt: Path) -> None:
    known = _user_on(0)
    session = [["3", 0, 1.0, "e1"], ["7", 1, 2.0, "e2"]]
    w = _worker(ckpt, owned={0}, dist={SELF: {"clicks": [0]}}, sessions={known: session})
    views = _views(w)
    a = await views.recommend(known, 5, forwarded=False)
    b = await views.recommend(_user_on(0, start=50_000), 5, forwarded=False)
    assert set(a) == set(b) == {"user_id", "items", "fallback", "model_version"}
    assert "history_length" not in a and "cold_start" not in a  # no existence oracle
    assert a["fallback"] is None and b["fallback"] is None  # "popular" told who exists
    assert len(a["items"]) == len(b["items"]) == 5
    titles = dict(
        zip(
            w.recommender.model.checkpoint.item_ids,
            w.recommender.model.checkpoint.item_titles,
            strict=True,
        )
    )
    assert all(i["title"] == (titles[i["item_id"]] or None) for i in a["items"] + b["items"])
    assert not {"3", "7"} & {i["item_id"] for i in a["items"]}  # seen items excluded
    assert _count(w, "local") == 2


async def test_a_forget_marker_is_read_as_its_newer_history(ckpt: Path) -> None:
    user = _user_on(1)
    marker = {"forgotten_at": 5.0, "h": [["9", 0, 6.0, "e9"]]}
    w = _worker(ckpt, owned={1}, dist={SELF: {"clicks": [1]}}, sessions={user: marker})
    body = await _views(w).recommend(user, 3, forwarded=False)
    assert body["fallback"] is None and "9" not in {i["item_id"] for i in body["items"]}


async def test_ranking_runs_off_the_event_loop(ckpt: Path) -> None:
    user = _user_on(2)
    w = _worker(ckpt, owned={2}, dist={SELF: {"clicks": [2]}}, sessions={user: [["4", 0]]})
    rec = w.recommender
    threads: list[threading.Thread] = []
    rank = rec.rank_batch

    def spy(histories: Any, k: int) -> Any:
        threads.append(threading.current_thread())
        return rank(histories, k)

    rec.rank_batch = spy
    await _views(w).recommend(user, 3, forwarded=False)
    assert threads and all(t is not threading.main_thread() for t in threads)
    assert threads[0].name.startswith("recommend")


async def test_too_many_queued_rankings_are_answered_from_popularity(ckpt: Path) -> None:
    user = _user_on(0)
    w = _worker(
        ckpt,
        owned={0},
        dist={SELF: {"clicks": [0]}},
        sessions={user: [["4", 0]]},
        recommend_max_pending=1,
    )
    views = _views(w)
    views.pending = 1  # one ranking already queued
    body = await views.recommend(user, 3, forwarded=False)
    assert body["fallback"] == "overloaded" and len(body["items"]) == 3


async def _owner(handler: Any) -> tuple[aioweb.AppRunner, str]:
    app = aioweb.Application()
    app.router.add_get("/recommend/{user_id}", handler)
    runner = aioweb.AppRunner(app)
    await runner.setup()
    port = free_port()
    await aioweb.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def test_a_request_for_another_owner_is_forwarded_once(ckpt: Path) -> None:
    user = _user_on(3)
    seen: list[dict[str, Any]] = []

    async def handler(request: aioweb.Request) -> aioweb.Response:
        seen.append({"hop": request.headers.get(HOP_HEADER), "k": request.query.get("k")})
        uid = request.match_info["user_id"]
        return aioweb.json_response(answer_body(uid, [("42", 0.9)], None, "1"))

    runner, url = await _owner(handler)
    try:
        w = _worker(ckpt, owned={0}, dist={SELF: {"clicks": [0]}, url: {"clicks": [3]}})
        async with aiohttp.ClientSession() as session:
            w.app.http_client = session
            body = await _views(w).recommend(user, 4, forwarded=False)
    finally:
        await runner.cleanup()
    assert body == answer_body(user, [("42", 0.9)], None, "1")
    assert seen == [{"hop": SELF, "k": "4"}]
    assert _count(w, "forwarded") == 1


async def test_a_forwarded_request_is_answered_where_it_lands(ckpt: Path) -> None:
    user = _user_on(3)
    w = _worker(ckpt, owned={0}, dist={"http://elsewhere:1": {"clicks": [3]}})
    body = await _views(w).recommend(user, 2, forwarded=True)  # never a second hop
    assert body["fallback"] == "no_owner" and len(body["items"]) == 2


@pytest.mark.parametrize("failure", ["slow", "refused", "malformed", "error"])
async def test_an_owner_that_does_not_answer_gives_a_local_fallback(
    ckpt: Path, failure: str
) -> None:
    user = _user_on(4)

    async def handler(request: aioweb.Request) -> aioweb.Response:
        if failure == "slow":
            await asyncio.sleep(2)
        if failure == "error":
            return aioweb.json_response({"error": "boom"}, status=500)
        return aioweb.json_response({"user_id": user, "history_length": 3})

    runner, url = await _owner(handler)
    if failure == "refused":
        await runner.cleanup()
    try:
        w = _worker(ckpt, owned={0}, dist={url: {"clicks": [4]}}, route_timeout_s=0.3)
        async with aiohttp.ClientSession() as session:
            w.app.http_client = session
            body = await _views(w).recommend(user, 3, forwarded=False)
    finally:
        if failure != "refused":
            await runner.cleanup()
    assert body["fallback"] == "owner_unreachable"
    assert set(body) == {"user_id", "items", "fallback", "model_version"}
    assert len(body["items"]) == 3
    assert _count(w, "owner_unreachable") == 1


def test_no_known_owner_is_a_fallback_and_not_ready(ckpt: Path) -> None:
    w = _worker(ckpt, owned=set(), dist={})
    state = _views(w).ready_state()
    assert state["ready"] is False and state["routing_known"] is False


def test_a_surge_pod_without_partitions_is_ready_to_serve(ckpt: Path) -> None:
    # the 7th replica for 6 partitions: model loaded, group joined, nothing owned
    dist = {f"http://10.0.0.{p}:6066": {"clicks": [p]} for p in range(PARTITIONS)}
    w = _worker(ckpt, owned=set(), dist=dist)
    state = _views(w).ready_state()
    assert state["ready"] is True  # what the Kubernetes readiness probe asks
    assert state["partitions_ready"] is False and state["owned_partitions"] == []


def test_partition_readiness_needs_ownership_recovery_and_no_stall(ckpt: Path) -> None:
    dist = {SELF: {"clicks": [0, 1]}}
    w = _worker(ckpt, owned={0, 1}, dist=dist)
    views = _views(w)
    state = views.ready_state()
    assert state["ready"] and state["partitions_ready"] and state["owned_partitions"] == [0, 1]
    assert not _views(_worker(ckpt, owned={0}, dist=dist, recovered=False)).ready_state()[
        "partitions_ready"
    ]
    # clicks[1] has had 6 records waiting without progress for longer than stall_after_s
    h = views.health
    h.assign({("clicks", 0): 10, ("clicks", 1): 0}, now=h.clock())
    t0 = h.clock()
    h.observe({("clicks", 0): 10, ("clicks", 1): 6}, {}, consuming=True, now=t0 - 11)
    h.observe({("clicks", 0): 10, ("clicks", 1): 6}, {}, consuming=True, now=t0)
    h.partitions[("clicks", 1)].assigned_at = t0 - 11
    state = views.ready_state()
    assert state["ready"] is True  # still serves the API
    assert state["partitions_ready"] is False
    assert [(s["topic"], s["partition"], s["lag"]) for s in state["stalled"]] == [("clicks", 1, 6)]


def test_k_is_checked() -> None:
    assert parse_k(None, 10) == 10
    assert parse_k("3", 10) == 3
    assert isinstance(parse_k("0", 10), str) and isinstance(parse_k("x", 10), str)
    assert isinstance(parse_k("101", 10), str)
