"""``coldstream tail``: read ``recommendations`` (default) or the DLQ, pretty or as JSON lines.

    coldstream tail                      # follow new recommendations (Ctrl-C stops)
    coldstream tail dlq --from-beginning --count 20
    coldstream tail --user alice --json

A recommendation reads ``user alice <- v1 [cold]: Star Wars (1977) 0.912; ...`` with titles
from the newest checkpoint of the model store (or ``--catalogue FILE``); a DLQ record reads
``clicks[2]@17 ts_future: ts=1.7e12 is more than 3600 s ahead | {payload}``. Reads with the
one read-until consumer of the dev tooling (:func:`devtools.kafka_io.read_until`), without a
consumer group, so it never takes partitions from a worker. Works on Tansu and Kafka.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from coldstream.core.errors import ExitCode, UsageError
from devtools.console import connection_arguments, format_dlq, format_recommendation

__all__ = ["add_arguments", "run"]

TOPICS = {"recommendations": "recommendations", "dlq": "events-dlq"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        nargs="?",
        choices=sorted(TOPICS),
        default="recommendations",
        help="which topic: recommendations or the dead-letter queue",
    )
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="read from the start of the topic (default: only what arrives from now on)",
    )
    p.add_argument(
        "--count", "-n", type=int, default=0, help="stop after this many records (0: never)"
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=None,
        help="stop after this many seconds (default: never; with --from-beginning and no "
        "--count: at the end of the topic)",
    )
    p.add_argument("--user", default=None, help="only this user's records (default: everyone's)")
    p.add_argument("--json", action="store_true", help="JSON lines (the record values as sent)")
    p.add_argument(
        "--catalogue",
        type=Path,
        default=None,
        help="titles from a catalogue file: item_id, title; CSV or JSON lines (default: the "
        "titles of the model store's newest checkpoint)",
    )
    connection_arguments(p)


def _titles(args: argparse.Namespace, store: Path) -> dict[str, str]:
    if args.catalogue is not None:
        from trainer.data.files import DataFileError, load_catalogue

        try:
            items = load_catalogue(args.catalogue)
        except DataFileError as e:
            raise DataFileError(f"{e} (flag --catalogue)") from None
        return dict(zip(items.ids, items.titles, strict=True))
    from devtools.console import catalogue_titles

    return catalogue_titles(store)[0]


def run(args: argparse.Namespace) -> int:
    """``coldstream tail``."""
    import asyncio

    from coldstream.core.preflight import check_broker
    from coldstream.core.topics import load_topics, topic_names
    from devtools.console import shared_settings
    from devtools.kafka_io import read_until

    if args.count < 0:
        raise UsageError(f"--count {args.count}: must be 0 (never stop) or more")
    s = shared_settings(args)
    logical = TOPICS[args.what]
    topic = topic_names(s.topic_prefix)[logical]
    check_broker(s.bootstrap, [topic], client_kwargs=s.kafka_client_kwargs(), prefix=s.topic_prefix)
    titles = _titles(args, s.model_store)
    shown = {"n": 0}

    def on_records(records: list[Any], _now: float) -> None:
        for r in records:
            try:
                v = json.loads(r.value)
            except (TypeError, ValueError):
                print(f"(not JSON at {r.topic}[{r.partition}]@{r.offset})", file=sys.stderr)
                continue
            if args.user is not None and str(v.get("user_id") or v.get("key")) != args.user:
                continue
            if args.count and shown["n"] >= args.count:
                return
            shown["n"] += 1
            if args.json:
                print(json.dumps(v, ensure_ascii=False), flush=True)
            elif logical == "events-dlq":
                print(format_dlq(v), flush=True)
            else:
                print(format_recommendation(v, titles), flush=True)

    partitions = {topic: load_topics()[logical].partitions}
    to_end = args.from_beginning and not args.count and args.timeout_s is None
    asyncio.run(  # Ctrl-C: coldstream.cli answers "interrupted", exit 130
        read_until(
            s.bootstrap,
            [topic],
            partitions=partitions,
            from_end=not args.from_beginning,
            to_end=to_end,
            until=(lambda: shown["n"] >= args.count) if args.count else None,
            timeout_s=args.timeout_s,
            on_records=on_records,
            keep=False,
            **s.kafka_client_kwargs(),
        )
    )
    if args.count and shown["n"] < args.count:
        print(f"{shown['n']} of {args.count} records before the timeout", file=sys.stderr)
        return ExitCode.FAILURE
    return ExitCode.OK
