"""Web views of the worker: ``/metrics``, ``/healthz``, ``/ready``, ``/recommend/{user_id}``.

* ``/healthz`` -- liveness (:class:`stream_app.health.Health`): 503 when input has waited
  ``liveness_after_s`` with no batch processed while the worker is consuming.
* ``/ready`` -- readiness to serve ``/recommend``: a model is loaded and the consumer
  group's assignment is known (requests can be routed); a pod that owns no partition (a
  surge pod of a rolling update) is ready. ``/ready?partitions=1`` answers for partition
  ownership as well: input partitions assigned, tables recovered, flow on, none stalled.
  Both bodies carry every field, stalled partitions included.
* ``/recommend/{user_id}?k=`` -- the user's recommendations from the owner of the user's
  partition (:mod:`stream_app.routing`: forwarded one hop when another worker owns it),
  ranked on the worker's ranking thread, never on the consumer's event loop. The answer has
  the same fields for every user -- ``user_id``, ``items``, ``fallback``, ``model_version``
  -- and says nothing of the user's history (no length, no cold-start flag): it does not
  tell whether a user exists. ``fallback``: ``null`` for known and unknown users alike, or
  why the owner did not rank (``"owner_unreachable"``, ``"no_owner"``, ``"overloaded"``).
  With ``api_token_file`` set it requires ``Authorization: Bearer <token>`` (401 without).
  Rankings have a budget per second and wait together (:class:`RankQueue`): the API cannot
  take more of the worker than ``recommend_max_rps`` single-user rankings.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from coldstream.core.events import MAX_ID_LEN
from coldstream.core.topics import load_topics
from stream_app.agents import Wiring
from stream_app.health import Health, consuming, input_partitions
from stream_app.health import attach as attach_health
from stream_app.metrics import CONTENT_TYPE
from stream_app.routing import (
    HOP_HEADER,
    OVERLOADED,
    OWNER_UNREACHABLE,
    Route,
    advertised_url,
    owners,
    route,
)
from stream_app.sessions import load_session

log = logging.getLogger(__name__)

MAX_K = 100
LOCAL = "local"
FORWARDED = "forwarded"


def answer_body(
    user_id: str,
    items: list[tuple[str, float]],
    fallback: str | None,
    model_version: str,
    title: Callable[[str], str | None] = lambda item_id: None,
) -> dict[str, Any]:
    """The one shape of a ``/recommend`` answer (known and unknown users alike); each item
    with its catalogue title (``None`` for an item that came without one)."""
    return {
        "user_id": user_id,
        "items": [{"item_id": i, "score": s, "title": title(i)} for i, s in items],
        "fallback": fallback,
        "model_version": model_version,
    }


def title_of(recommender: Any) -> Callable[[str], str | None]:
    """Item id -> title in the served checkpoint's catalogue (``None``: no title)."""
    ck = recommender.model.checkpoint
    rows, titles = ck.index_of, ck.item_titles

    def title(item_id: str) -> str | None:
        row = rows.get(item_id)
        return (titles[row] or None) if row is not None and row < len(titles) else None

    return title


def is_answer(body: Any) -> bool:
    """Whether a forwarded worker's reply has the shape of :func:`answer_body`."""
    return (
        isinstance(body, dict)
        and set(body) == {"user_id", "items", "fallback", "model_version"}
        and isinstance(body["items"], list)
    )


class TokenBucket:
    """``rate`` takes per second, bursts up to ``rate``."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.tokens, self.at = rate, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


Ranking = tuple[list[tuple[str, float]], str | None]


class RankQueue:
    """``/recommend`` rankings that wait together are ranked together: one
    ``rank_batch`` call on the ranking thread per drain, so the API takes the recommender's
    lock once per batch of requests, not once per request."""

    def __init__(self, rank: Callable[[list[Any], int], Any], executor: ThreadPoolExecutor):
        self.rank, self.executor = rank, executor
        self.waiting: list[tuple[list[Any], int, asyncio.Future[Ranking]]] = []
        self.task: asyncio.Task[None] | None = None
        self.batches = 0

    async def ranked(self, history: list[Any], k: int) -> Ranking:
        fut: asyncio.Future[Ranking] = asyncio.get_running_loop().create_future()
        self.waiting.append((history, k, fut))
        if self.task is None:
            self.task = asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                k = max(k for _, k, _ in batch)
                try:
                    ranked = await loop.run_in_executor(
                        self.executor, self.rank, [h for h, _, _ in batch], k
                    )
                except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                self.batches += 1
                for i, (_, want, fut) in enumerate(batch):
                    if not fut.done():
                        fut.set_result((ranked.items[i][:want], ranked.fallback[i]))
        finally:
            self.task = None


class Views:
    """What the views need: the wiring, the health state, the ranking thread, routing."""

    def __init__(self, w: Wiring, health: Health, *, executor: ThreadPoolExecutor | None = None):
        self.w = w
        self.health = health
        self.executor = executor or ThreadPoolExecutor(1, thread_name_prefix="recommend")
        self.queue = RankQueue(lambda h, k: w.recommender.rank_batch(h, k), self.executor)
        self.budget = TokenBucket(w.settings.recommend_max_rps)
        self.token = read_token(w.settings.api_token_file)
        self.pending = 0
        self.self_url = advertised_url(w.settings)
        self.source_topic = w.names["clicks"]
        self.partitions = load_topics()["clicks"].partitions

    # -- routing -------------------------------------------------------------------------
    def owner_of(self) -> dict[int, str]:
        """``partition -> URL`` of the group's current assignment (Faust's assignor)."""
        try:
            dist = self.w.app.router.external_topics_metadata()
        except Exception:  # noqa: BLE001 - no assignment yet
            return {}
        return owners(dist, self.source_topic)

    def owned(self) -> set[int]:
        return {
            tp.partition
            for tp in input_partitions(self.w.app, self.w.logical)
            if tp.topic == self.source_topic
        }

    def route(self, user_id: str, *, forwarded: bool) -> Route:
        return route(
            user_id,
            partitions=self.partitions,
            owned=self.owned(),
            owner_of=self.owner_of(),
            self_url=self.self_url,
            forwarded=forwarded,
        )

    # -- answers -------------------------------------------------------------------------
    def count(self, outcome: str) -> None:
        self.w.metrics.recommend_requests.labels(outcome).inc()

    async def popular(self, user_id: str, k: int, reason: str) -> dict[str, Any]:
        """A popularity answer made here (no session is read), ``fallback: reason``."""
        rec = self.w.recommender
        items = rec.popular(k)
        self.count(reason)
        return answer_body(user_id, items, reason, rec.model.version, title_of(rec))

    async def local(self, user_id: str, k: int) -> dict[str, Any]:
        """The owner's answer: the user's session ranked on the ranking thread (with the
        other requests waiting), within the worker's ranking budget."""
        if self.pending >= self.w.settings.recommend_max_pending or not self.budget.take():
            return await self.popular(user_id, k, OVERLOADED)
        hist, _ = load_session(self.w.sessions.data.get(user_id))
        rec = self.w.recommender
        self.pending += 1
        try:
            items, _fallback = await self.queue.ranked(hist, k)
        finally:
            self.pending -= 1
        self.count(LOCAL)
        # ``fallback`` stays null for known and unknown users alike: the answer must not
        # tell whether a user exists (docs/privacy.md); it names only operational reasons
        return answer_body(user_id, items, None, rec.model.version, title_of(rec))

    async def forward(self, url: str, user_id: str, k: int) -> dict[str, Any] | None:
        """The owner's answer, or ``None`` when it did not give one in time."""
        import aiohttp

        target = f"{url}/recommend/{urllib.parse.quote(user_id, safe='')}"
        timeout = aiohttp.ClientTimeout(total=self.w.settings.route_timeout_s)
        try:
            headers = {HOP_HEADER: self.self_url}
            if self.token is not None:
                headers["Authorization"] = f"Bearer {self.token}"
            async with self.w.app.http_client.get(
                target, params={"k": str(k)}, headers=headers, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    log.info("recommend: owner %s answered %d", url, resp.status)
                    return None
                body = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            log.info("recommend: owner %s unreachable (%r)", url, e)
            return None
        if not is_answer(body) or body["user_id"] != user_id:
            log.warning("recommend: owner %s gave a malformed answer", url)
            return None
        self.count(FORWARDED)
        return dict(body)

    async def recommend(self, user_id: str, k: int, *, forwarded: bool) -> dict[str, Any]:
        r = self.route(user_id, forwarded=forwarded)
        if r.forward_to is not None:
            body = await self.forward(r.forward_to, user_id, k)
            return body if body is not None else await self.popular(user_id, k, OWNER_UNREACHABLE)
        if r.fallback is not None:
            return await self.popular(user_id, k, r.fallback)
        return await self.local(user_id, k)

    # -- health --------------------------------------------------------------------------
    def ready_state(self) -> dict[str, Any]:
        """Both readinesses and what they are made of (``ready``: serving the API)."""
        w, app = self.w, self.w.app
        try:
            assigned = len(app.consumer.assignment())
        except Exception:  # noqa: BLE001 - consumer not started yet
            assigned = 0
        recovered = (
            bool(app.tables.recovery.completed.is_set()) if hasattr(app, "tables") else False
        )
        flowing = bool(app.flow_control.is_active())
        model = w.recommender.model is not None
        owned = sorted(self.owned())
        routing_known = bool(self.owner_of())
        stalled = self.health.stalled(dict(w.progress))
        ready = model and routing_known
        return {
            "ready": ready,
            "partitions_ready": ready and bool(owned) and recovered and flowing and not stalled,
            "model_loaded": model,
            "model_version": w.recommender.model.version if model else None,
            "routing_known": routing_known,
            "advertised_url": self.self_url,
            "owned_partitions": owned,
            "assigned_partitions": assigned,
            "tables_recovered": recovered,
            "flowing": flowing,
            "stalled": [s.as_dict() for s in stalled],
        }

    def live_state(self) -> dict[str, Any]:
        w = self.w
        live, waited = self.health.liveness(dict(w.progress), consuming=consuming(w.app))
        return {
            "status": "ok" if live else "wedged",
            "live": live,
            "input_waited_s": round(waited, 1) if waited is not None else None,
            "liveness_after_s": w.settings.liveness_after_s,
            "batches": w.batches,
        }


def read_token(path: Path | None) -> str | None:
    """The API token from ``api_token_file`` (``None``: no token required)."""
    if path is None:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ValueError(
            f"COLDSTREAM_API_TOKEN_FILE={path}: cannot read the API token ({e.strerror})"
        ) from None
    if len(token) < 16:
        raise ValueError(
            f"COLDSTREAM_API_TOKEN_FILE={path}: the token must be at least 16 characters"
        )
    return token


def authorised(token: str | None, header: str | None) -> bool:
    """Whether an ``Authorization`` header carries the token (constant-time compare)."""
    if token is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


def parse_k(raw: str | None, default: int) -> int | str:
    """``k`` from the query, or the error message."""
    try:
        k = int(raw) if raw is not None else default
    except ValueError:
        return "k must be an integer"
    if not 1 <= k <= MAX_K:
        return f"k must be in 1..{MAX_K}"
    return k


def register_views(w: Wiring) -> Views:
    """Publish the advertised URL to the group, start the health timer, add the views."""
    app, s = w.app, w.settings
    health = Health(
        stall_after_s=s.stall_after_s,
        liveness_after_s=s.liveness_after_s,
        interval_s=s.health_interval_s,
    )
    views = Views(w, health)
    # Faust publishes canonical_url in the member metadata: the group's assignment then
    # names this worker by the address the others can reach (not 127.0.0.1)
    app.conf.canonical_url = views.self_url
    attach_health(w, health)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(w.metrics.exposition(), content_type=CONTENT_TYPE)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        # answering at all proves the event loop runs (the web server shares it)
        state = views.live_state()
        return web.json(state, status=200 if state["live"] else 503)

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        state = views.ready_state()
        want = request.query.get("partitions", "") in ("1", "true", "yes")
        ok = state["partitions_ready"] if want else state["ready"]
        return web.json(state, status=200 if ok else 503)

    @app.page("/recommend/{user_id}")
    async def recommend(web: Any, request: Any, user_id: str) -> Any:
        if not authorised(views.token, request.headers.get("Authorization")):
            views.count("unauthorised")
            return web.json(
                {"error": "a bearer token is required (Authorization: Bearer <token>)"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="coldstream"'},
            )
        k = parse_k(request.query.get("k"), s.k)
        if isinstance(k, str):
            return web.json({"error": k}, status=400)
        if not 1 <= len(user_id) <= MAX_ID_LEN:
            return web.json({"error": f"user_id must be 1..{MAX_ID_LEN} characters"}, status=400)
        forwarded = HOP_HEADER in request.headers
        return web.json(await views.recommend(user_id, k, forwarded=forwarded))

    return views
