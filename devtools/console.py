"""What ``coldstream send`` and ``coldstream tail`` share: the connection flags and settings
(broker, topic prefix, model store, TLS/SASL from the shared settings), the catalogue titles
of the model store, and the one-line forms of a recommendation and of a DLQ record."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = [
    "catalogue_titles",
    "connection_arguments",
    "format_dlq",
    "format_recommendation",
    "shared_settings",
]


def connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bootstrap",
        default=None,
        help="brokers (default: 127.0.0.1:9092; the demo prints its own; env COLDSTREAM_BOOTSTRAP)",
    )
    p.add_argument(
        "--topic-prefix",
        default=None,
        help="topic prefix (default: none; env COLDSTREAM_TOPIC_PREFIX)",
    )
    p.add_argument(
        "--model-store",
        type=Path,
        default=None,
        help="catalogue of the newest checkpoint here: item ids are checked, titles shown "
        "(default: model-store, when it exists; env COLDSTREAM_MODEL_STORE)",
    )


def shared_settings(args: argparse.Namespace) -> Any:
    """Broker, prefix, model store and security from the environment and the flags."""
    from coldstream.core.settings import SharedSettings
    from coldstream.core.usage import load_settings

    names = ("bootstrap", "topic_prefix", "model_store")
    return load_settings(SharedSettings, flags=names, **{n: getattr(args, n, None) for n in names})


def catalogue_titles(store: Path) -> tuple[dict[str, str], str | None]:
    """``({item_id: title}, version)`` of the newest checkpoint in ``store`` (``items.json``
    only, nothing verified or loaded), or ``({}, None)`` without one."""
    from coldstream.core.checkpoint import latest_checkpoint

    path = latest_checkpoint(store) if store.is_dir() else None
    if path is None:
        return {}, None
    try:
        doc = json.loads((path / "items.json").read_text(encoding="utf-8"))
        return dict(zip(doc["ids"], doc["titles"], strict=True)), path.name
    except (OSError, ValueError, KeyError, TypeError):
        return {}, None


def format_recommendation(v: dict[str, Any], titles: dict[str, str], top: int = 5) -> str:
    """One line for a ``recommendations`` value."""
    items = v.get("items") or []
    shown = "; ".join(
        f"{titles.get(str(i.get('item_id')), str(i.get('item_id')))[:40]} "
        f"{float(i.get('score') or 0):.3f}"
        for i in items[:top]
    )
    more = f" (+{len(items) - top})" if len(items) > top else ""
    tags = (["cold"] if v.get("cold_start") else []) + (
        [str(v["fallback"])] if v.get("fallback") else []
    )
    tag = f" [{', '.join(tags)}]" if tags else ""
    return f"user {v.get('user_id')} <- v{v.get('model_version')}{tag}: {shown or '(none)'}{more}"


def format_dlq(v: dict[str, Any]) -> str:
    """One line for an ``events-dlq`` value."""
    payload = str(v.get("payload", ""))
    payload = payload if len(payload) <= 160 else payload[:157] + "..."
    return (
        f"{v.get('source_topic')}[{v.get('partition')}]@{v.get('offset')} {v.get('error')}: "
        f"{v.get('detail') or ''} | {payload}"
    )
