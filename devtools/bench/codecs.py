"""Benchmark (not a test): the per-event codecs of the hot path, old vs new, in one run.

* decode: :func:`coldstream.core.events.validate_event_slow` (the standard library's parser,
  a dict per event) vs :func:`coldstream.core.events.validate_event` (a typed msgspec decoder;
  records it declines go to the slow path for their exact reason), on valid events and on a
  mix with ``--malformed`` of them refused (junk JSON, wrong types, repeated keys, NaN, bad
  ids, unknown fields, non-UTF-8, future timestamps, ...); both must give the same answers;
* encode: :func:`coldstream.core.records.recommendation_payload_slow` vs
  :func:`coldstream.core.records.recommendation_payload` (orjson strings, cached ``bytes %``
  item templates; byte for byte the same output, checked), ``--k`` items per record; and,
  for reference, ``orjson.dumps`` of the whole record as a dict with the values rounded as
  the record writes them (same values, different bytes).

    coldstream bench codecs [--events 20000] [--repeats 7] [--malformed 0.1] [--k 10]

Each case is timed over the same inputs, old and new alternating, ``--repeats`` rounds; the
table shows the median microseconds per event of this thread's CPU time (robust to other
processes on a shared machine) and of wall-clock time. Prints a table and writes
``reports/bench-codecs.json`` (with the load average: the figures are only comparable
within one run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

NOW = 1_700_000_000.0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--events", type=int, default=20_000, help="events (records) per round")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per case")
    ap.add_argument(
        "--malformed", type=float, default=0.1, help="share of refused records in the mix"
    )
    ap.add_argument("--k", type=int, default=10, help="items per recommendation")
    ap.add_argument("--seed", type=int, default=23, help="random seed of the inputs")
    ap.add_argument(
        "--out", type=Path, default=Path("reports/bench-codecs.json"), help="the JSON report"
    )


def _valid(rng: random.Random, i: int) -> tuple[bytes, str, bytes]:
    """A valid ``(value, topic, key)``: clicks and purchases as the replay writes them."""
    from coldstream.core.records import event_payload

    user = f"u{rng.randrange(50_000)}"
    item = str(rng.randrange(1, 1683))
    ts = NOW - rng.random() * 86_400
    r = rng.random()
    if r < 0.7:
        return event_payload(user, item, event_id=f"e-{i:08d}", ts=ts), "clicks", user.encode()
    if r < 0.85:
        raw = event_payload(
            user, item, event_id=f"e-{i:08d}", ts=ts, context={"page": "home", "pos": i % 20}
        )
        return raw, "clicks", user.encode()
    raw = event_payload(
        user,
        item,
        event_id=f"e-{i:08d}",
        ts=ts,
        event_type="purchase",
        price=round(rng.random() * 100, 2),
        quantity=rng.randint(1, 3),
    )
    return raw, "purchases", user.encode()


def _malformed(rng: random.Random, i: int) -> tuple[bytes, str, bytes]:
    """A refused ``(value, topic, key)``, one of many kinds."""
    raw, topic, key = _valid(rng, i)
    kinds: list[Callable[[], bytes]] = [
        lambda: raw[: len(raw) // 2],  # invalid_json (cut)
        lambda: b"not json at all",
        lambda: raw.replace(b'"ts":', b'"ts":"yesterday","x":', 1),  # wrong_type/unknown
        lambda: raw[:-1] + b',"event_id":"again"}',  # duplicate_field
        lambda: raw.replace(b'"ts":', b'"ts":NaN,"t0":', 1),  # non_finite
        lambda: raw.replace(b'"user_id":"', b'"user_id":"has space ', 1),  # bad_id
        lambda: raw[:-1] + b',"colour":"red"}',  # unknown_field
        lambda: raw.replace(b'"item_id":"', b'"item_id":"\xff', 1),  # invalid_utf8
        lambda: raw.replace(b'"ts":', b'"ts":9999999999,"t0":', 1),  # ts_future ...
        lambda: b"[1,2,3]",  # not_object
        lambda: raw.replace(b'"item_id":', b'"item":', 1),  # unknown_field / missing
        lambda: raw.replace(b'"event_id":"', b'"event_id":"\\ud800', 1),  # invalid_text
    ]
    return rng.choice(kinds)(), topic, key


def _time(
    fns: dict[str, Callable[[], Any]], repeats: int, n: int
) -> dict[str, dict[str, list[float]]]:
    """Microseconds per event of each function over the same inputs, alternating: this
    thread's CPU time (``cpu``: what the codec costs, robust to other processes on the
    machine) and wall-clock time (``wall``)."""
    out: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in fns}
    for f in fns.values():
        f()  # warm-up (caches, first calls)
    for _ in range(repeats):
        for name, f in fns.items():
            c, t = time.thread_time(), time.perf_counter()
            f()
            out[name]["wall"].append((time.perf_counter() - t) / n * 1e6)
            out[name]["cpu"].append((time.thread_time() - c) / n * 1e6)
    return out


def run(args: argparse.Namespace) -> int:
    import orjson

    from coldstream.core.events import Rejection, validate_event, validate_event_slow
    from coldstream.core.records import recommendation_payload, recommendation_payload_slow

    rng = random.Random(args.seed)
    n = args.events
    valid = [_valid(rng, i) for i in range(n)]
    mixed = [
        _malformed(rng, i) if rng.random() < args.malformed else _valid(rng, i) for i in range(n)
    ]

    def decoder(fn: Callable[..., Any], records: list[tuple[bytes, str, bytes]]):
        def go() -> list[Any]:
            return [
                fn(v, t, key=k, require_key=True, now=NOW, max_future_skew_s=3600.0)
                for v, t, k in records
            ]

        return go

    # same answers, reasons and details included
    for records in (valid, mixed):
        old, new = decoder(validate_event_slow, records)(), decoder(validate_event, records)()
        if old != new:
            bad = next(i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b)
            raise AssertionError(f"decoders disagree on {records[bad]!r}: {old[bad]} vs {new[bad]}")
    if any(isinstance(r, Rejection) for r in decoder(validate_event, valid)()):
        raise AssertionError("a 'valid' benchmark record was refused")
    mixed_refused = sum(isinstance(r, Rejection) for r in decoder(validate_event, mixed)())

    recs = [
        {
            "event_id": f"e-{i:08d}",
            "user_id": f"u{rng.randrange(50_000)}",
            "items": [(str(rng.randrange(1, 1683)), rng.uniform(-1, 3)) for _ in range(args.k)],
            "model_version": "v000007",
            "cold_start": rng.random() < 0.5,
            "produced_at": time.time(),
            "latency_ms": rng.uniform(1, 40),
            "fallback": None,
        }
        for i in range(n)
    ]
    for r in recs:
        if recommendation_payload(**r) != recommendation_payload_slow(**r):
            raise AssertionError(f"encoders disagree on {r!r}")

    def encoder(fn: Callable[..., bytes]):
        def go() -> list[bytes]:
            return [fn(**r) for r in recs]

        return go

    def six(x: float) -> float | None:
        return float(f"{x:.6g}") if -1e300 < x < 1e300 else None

    def orjson_dict(**r: Any) -> bytes:
        return orjson.dumps(
            {
                "event_id": r["event_id"],
                "user_id": r["user_id"],
                "items": [{"item_id": i, "score": six(s)} for i, s in r["items"]],
                "model_version": r["model_version"],
                "cold_start": r["cold_start"],
                "produced_at": r["produced_at"],
                "latency_ms": six(round(r["latency_ms"], 3)),
                "fallback": r["fallback"],
            }
        )

    load_before = os.getloadavg()
    t_valid = _time(
        {"old": decoder(validate_event_slow, valid), "new": decoder(validate_event, valid)},
        args.repeats,
        n,
    )
    t_mixed = _time(
        {"old": decoder(validate_event_slow, mixed), "new": decoder(validate_event, mixed)},
        args.repeats,
        n,
    )
    t_enc = _time(
        {
            "old": encoder(recommendation_payload_slow),
            "new": encoder(recommendation_payload),
            "orjson_dict": encoder(orjson_dict),
        },
        args.repeats,
        n,
    )
    load_after = os.getloadavg()

    def row(case: str, t: dict[str, dict[str, list[float]]], new: str = "new") -> dict[str, Any]:
        med = {k: {m: statistics.median(v) for m, v in t[k].items()} for k in ("old", new)}
        return {
            "case": case,
            "old_us_per_event": round(med["old"]["cpu"], 3),
            "new_us_per_event": round(med[new]["cpu"], 3),
            "speedup_old_over_new": round(med["old"]["cpu"] / med[new]["cpu"], 2),
            "old_us_wall": round(med["old"]["wall"], 3),
            "new_us_wall": round(med[new]["wall"], 3),
            "speedup_wall": round(med["old"]["wall"] / med[new]["wall"], 2),
        }

    rows = [
        row("decode: valid events", t_valid),
        row(f"decode: mix, {args.malformed:.0%} malformed", t_mixed),
        row(f"encode: recommendation, k={args.k} (same bytes)", t_enc),
        row(f"encode: orjson dict, k={args.k} (same values, not bytes)", t_enc, "orjson_dict"),
    ]
    result = {
        "events_per_round": n,
        "repeats": args.repeats,
        "malformed_share": args.malformed,
        "malformed_refused": mixed_refused,
        "k": args.k,
        "old": {
            "decode": "coldstream.core.events.validate_event_slow",
            "encode": "coldstream.core.records.recommendation_payload_slow",
        },
        "new": {
            "decode": "coldstream.core.events.validate_event (msgspec, slow path for refusals)",
            "encode": "coldstream.core.records.recommendation_payload (orjson + bytes templates)",
        },
        "answers_identical": True,
        "encoded_bytes_identical": True,
        "timing": "median over the rounds of this thread's CPU time per event (µs); "
        "*_wall: wall-clock",
        "rows": rows,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1_5_15_before": [round(x, 2) for x in load_before],
        "load_average_1_5_15_after": [round(x, 2) for x in load_after],
        "versions": {"msgspec": _version("msgspec"), "orjson": _version("orjson")},
    }
    w = max(len(r["case"]) for r in rows)
    print(
        f"{'case':{w}s}  {'old µs':>8s}  {'new µs':>8s}  {'old/new':>7s}  "
        f"{'(wall: old':>10s}  {'new':>8s}  {'old/new)':>8s}"
    )
    for r in rows:
        print(
            f"{r['case']:{w}s}  {r['old_us_per_event']:8.3f}  {r['new_us_per_event']:8.3f}  "
            f"{r['speedup_old_over_new']:6.2f}x  {r['old_us_wall']:10.3f}  "
            f"{r['new_us_wall']:8.3f}  {r['speedup_wall']:7.2f}x"
        )
    print(
        f"(CPU time of this thread, µs per event: {n} events per round, median of "
        f"{args.repeats}; {mixed_refused} of the mix refused; "
        f"load average {load_before[0]:.2f} -> {load_after[0]:.2f} on {os.cpu_count()} CPUs)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
