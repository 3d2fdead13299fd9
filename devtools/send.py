"""``coldstream send``: send your own events -- one from flags, or JSON lines on stdin -- checked
first with the worker's own rules (:func:`coldstream.core.events.validate_event`), so a bad
event is refused here with the reason the DLQ would give, and nothing of the batch is sent.

    coldstream send --user alice --item 50                  # a click, now
    coldstream send --user alice --item 50 --type purchase --wait 10
    printf '%s\\n' '{"user_id": "bob", "item_id": "181", "ts": 1700000000}' | coldstream send

Each event is built by :func:`coldstream.core.records.event_payload` (a fresh ``event_id``
and the current time unless given; ``ts`` in seconds), keyed by its ``user_id`` and sent to
``clicks``, ``purchases`` (``event_type: purchase``) or ``forget-requests``
(``event_type: forget``) with the one producer of the dev tooling
(:func:`devtools.kafka_io.produce`). An item the served model does not know is sent, with a
warning: the worker answers it from the popularity fallback. ``--wait S`` waits for each
event's answer (a recommendation or a DLQ record) and prints it like ``coldstream tail``.
Broker and security: the shared settings (``COLDSTREAM_BOOTSTRAP``, ``--bootstrap``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode, UsageError
from devtools.console import connection_arguments

__all__ = ["add_arguments", "build_events", "run"]

TOPIC_OF = {"click": "clicks", "purchase": "purchases", "forget": "forget-requests"}
"""Logical topic of each ``event_type``."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--user",
        default=None,
        help="user_id of one event (default: none, read JSON lines on stdin)",
    )
    p.add_argument(
        "--item",
        default=None,
        help="item_id of that event, a catalogue id (default: none; a forget needs none)",
    )
    p.add_argument(
        "--type",
        dest="event_type",
        choices=sorted(TOPIC_OF),
        default="click",
        help="event type: the topic it goes to",
    )
    p.add_argument(
        "--ts", type=float, default=None, help="event time, seconds since the epoch (default: now)"
    )
    p.add_argument("--event-id", default=None, help="event id (default: a fresh uuid)")
    p.add_argument("--price", type=float, default=None, help="purchase price (default: none)")
    p.add_argument("--quantity", type=int, default=None, help="purchase quantity (default: none)")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for each event's answer and print it (0: do not wait)",
    )
    p.add_argument("--json", action="store_true", help="print answers as JSON lines")
    p.add_argument(
        "--file",
        type=Path,
        default=None,
        help="send the events of a file (CSV, JSON lines, Parquet) through the adapters of "
        "coldstream train: --columns, --event-map, ISO-8601 or epoch s/ms times (default: none)",
    )
    from trainer.commands import add_input_options

    add_input_options(p)
    connection_arguments(p)


def _one_event(args: argparse.Namespace) -> dict[str, Any]:
    if args.item is None and args.event_type != "forget":
        raise UsageError("--user needs --item (or --type forget)")
    obj: dict[str, Any] = {"user_id": args.user}
    if args.item is not None:
        obj["item_id"] = args.item
    if args.event_type != "click":
        obj["event_type"] = args.event_type
    for name in ("ts", "event_id", "price", "quantity"):
        if getattr(args, name) is not None:
            obj[name] = getattr(args, name)
    return obj


def _stdin_events() -> list[tuple[int, dict[str, Any]]]:
    out = []
    if sys.stdin.isatty():
        raise UsageError("no --user given and stdin is a terminal: pipe JSON lines, or use --user")
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UsageError(f"stdin line {n}: not JSON ({e}); nothing sent") from None
        if not isinstance(obj, dict):
            raise UsageError(f"stdin line {n}: expected a JSON object; nothing sent")
        out.append((n, obj))
    if not out:
        raise UsageError("stdin held no events; nothing sent")
    return out


def _file_events(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """The events of ``--file`` through :func:`trainer.data.files.read_event_rows` (the
    ``ts`` of the file is kept)."""
    from trainer.commands import input_options_of
    from trainer.data.files import DataFileError, LoadNotes, read_event_rows

    notes = LoadNotes()
    try:
        rows = [
            (
                f"{args.file} row {n}",
                {k: v for k, v in obj.items() if k != "event_type" or v != "click"},
            )
            for n, obj in read_event_rows(args.file, input_options_of(args), notes)
        ]
    except DataFileError as e:
        raise DataFileError(f"{e}; nothing sent") from None
    for line in notes.lines:
        print(f"note: {line}", file=sys.stderr)
    if not rows:
        raise UsageError(f"{args.file} holds no events; nothing sent")
    return rows


def build_events(
    objs: list[tuple[str, dict[str, Any]]], *, now: float | None = None
) -> list[tuple[str, bytes, bytes, str]]:
    """``(logical topic, key, value, event_id)`` of each ``(where, event object)``, validated
    with the worker's rules; the first bad one raises :class:`UsageError` (``where``: its
    line or flags) and nothing is sent."""
    from coldstream.core.events import Rejection, validate_event
    from coldstream.core.records import event_payload

    out = []
    for where, raw in objs:
        obj = dict(raw)
        etype = obj.get("event_type") or "click"
        topic = TOPIC_OF.get(str(etype))
        if topic is None:
            raise UsageError(
                f"{where}: unknown_event_type: {etype!r} is not one of {', '.join(TOPIC_OF)}; "
                f"nothing sent"
            )
        user = obj.pop("user_id", None)
        item = obj.pop("item_id", None)
        event_id = obj.pop("event_id", None) or uuid.uuid4().hex
        ts = obj.pop("ts", None)
        ts = (time.time() if now is None else now) if ts is None else ts
        et = obj.pop("event_type", None)
        if topic == "forget-requests":
            fields: dict[str, Any] = {"event_id": event_id, "user_id": user, "ts": ts}
            if et is not None:
                fields["event_type"] = et
            value = json.dumps({**fields, **obj}, separators=(",", ":")).encode()
        else:
            kind = None if et in (None, "click") else et
            value = event_payload(user, item, event_id=event_id, ts=ts, event_type=kind, **obj)
        key = str(user).encode() if user is not None else b""
        verdict = validate_event(value, topic, key=key)
        if isinstance(verdict, Rejection):
            hint = ""
            if verdict.reason == "ts_future" and isinstance(ts, int | float) and ts > 1e11:
                hint = " (ts is seconds since the epoch, not milliseconds)"
            raise UsageError(
                f"{where}: {verdict.reason}: {verdict.detail}{hint}; nothing sent "
                f"(the worker would put it on events-dlq)"
            )
        out.append((topic, key, value, event_id))
    return out


def _answer_line(value: dict[str, Any], titles: dict[str, str], dlq: bool) -> str:
    from devtools.console import format_dlq, format_recommendation

    return format_dlq(value) if dlq else format_recommendation(value, titles)


def run(args: argparse.Namespace) -> int:
    """``coldstream send``."""
    import asyncio

    from coldstream.core.preflight import check_broker
    from coldstream.core.topics import topic_names
    from devtools.console import catalogue_titles, shared_settings
    from devtools.kafka_io import produce, read_until

    s = shared_settings(args)
    if args.file is not None:
        objs = _file_events(args)
    elif args.user is not None:
        objs = [("flags", _one_event(args))]
    elif args.item is not None:
        raise UsageError("--item needs --user")
    else:
        objs = [(f"stdin line {n}", o) for n, o in _stdin_events()]
    events = build_events(objs)
    names = topic_names(s.topic_prefix)
    check_broker(
        s.bootstrap,
        sorted({names[t] for t, *_ in events}),
        client_kwargs=s.kafka_client_kwargs(),
        prefix=s.topic_prefix,
    )
    titles, version = catalogue_titles(s.model_store)
    for topic, _, value, _ in events:
        item = json.loads(value).get("item_id")
        if titles and topic != "forget-requests" and str(item) not in titles:
            print(
                f"warning: item {item!r} is not in the catalogue of {s.model_store}/{version}: "
                f"the worker answers it from the popularity fallback",
                file=sys.stderr,
            )
    security = s.kafka_client_kwargs()
    records = [(names[t], k, v, eid) for t, k, v, eid in events]

    async def go() -> list[Any]:
        answers: dict[str, tuple[dict[str, Any], bool]] = {}
        reader = None
        positioned = asyncio.Event()
        watch = [names["recommendations"], names["events-dlq"]]
        wanted = {eid for *_, eid in records}
        if args.wait > 0:
            from coldstream.core.topics import load_topics

            specs = load_topics()
            parts = {names[t]: specs[t].partitions for t in ("recommendations", "events-dlq")}

            def on_records(rs: list[Any], _now: float) -> None:
                for r in rs:
                    try:
                        v = json.loads(r.value)
                    except (TypeError, ValueError):
                        continue
                    if v.get("event_id") in wanted:
                        answers[v["event_id"]] = (v, r.topic == names["events-dlq"])

            reader = asyncio.create_task(
                read_until(
                    s.bootstrap,
                    watch,
                    partitions=parts,
                    from_end=True,
                    positioned=positioned,
                    until=lambda: len(answers) >= len(wanted),
                    timeout_s=args.wait,
                    on_records=on_records,
                    keep=False,
                    **security,
                )
            )
            await positioned.wait()
        done = await produce(s.bootstrap, records, keep_metadata=True, **security)
        for (topic, _, value, eid), md in zip(records, done.metadata, strict=True):
            v = json.loads(value)
            print(
                f"sent {topic}[{md.partition}]@{md.offset} event_id={eid} "
                f"user={v.get('user_id')} item={v.get('item_id', '-')}"
            )
        if reader is not None:
            await reader
            for *_, eid in records:
                if eid not in answers:
                    print(f"no answer to {eid} within {args.wait:.0f} s", file=sys.stderr)
                    continue
                value, dlq = answers[eid]
                print(json.dumps(value) if args.json else _answer_line(value, titles, dlq))
            missing = [eid for *_, eid in records if eid not in answers]
            return missing
        return []

    missing = asyncio.run(go())
    return ExitCode.FAILURE if missing else ExitCode.OK
