"""Web views of the worker: ``/metrics``, ``/healthz``, ``/ready``, ``/recommend/{user_id}``."""

from __future__ import annotations

import time
from typing import Any

from stream_app.agents import Wiring
from stream_app.metrics import CONTENT_TYPE

MAX_K = 100


def ready_state(w: Wiring) -> dict[str, Any]:
    app = w.app
    try:
        assigned = len(app.consumer.assignment())
    except Exception:  # noqa: BLE001 - consumer not started yet
        assigned = 0
    recovered = bool(app.tables.recovery.completed.is_set()) if hasattr(app, "tables") else False
    flowing = bool(app.flow_control.is_active())
    model = w.recommender.model is not None
    return {
        "ready": assigned > 0 and recovered and flowing and model,
        "assigned_partitions": assigned,
        "tables_recovered": recovered,
        "flowing": flowing,
        "model_loaded": model,
        "model_version": w.recommender.model.version if model else None,
    }


def register_views(w: Wiring) -> None:
    app = w.app

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        return web.bytes(w.metrics.exposition(), content_type=CONTENT_TYPE)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        # answering at all proves the event loop runs (the web server shares it)
        return web.json(
            {
                "status": "ok",
                "batches": w.batches,
                "last_batch_age_s": round(time.time() - w.last_batch_at, 3) if w.batches else None,
            }
        )

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        state = ready_state(w)
        return web.json(state, status=200 if state["ready"] else 503)

    @app.page("/recommend/{user_id}")
    async def recommend(web: Any, request: Any, user_id: str) -> Any:
        try:
            k = int(request.query.get("k", w.settings.k))
        except ValueError:
            return web.json({"error": "k must be an integer"}, status=400)
        if not 1 <= k <= MAX_K:
            return web.json({"error": f"k must be in 1..{MAX_K}"}, status=400)
        hist = w.sessions.data.get(user_id) or []
        ranked = w.recommender.rank_batch([hist], k)
        return web.json(
            {
                "user_id": user_id,
                "history_length": len(hist),
                "items": [{"item_id": i, "score": s} for i, s in ranked.items[0]],
                "fallback": ranked.fallback[0],
                "model_version": w.recommender.model.version,
                "cold_start": len(hist) <= w.settings.cold_start_events,
            }
        )
