"""Fault injection for ``stalled_partition``: a real worker whose consumer cannot progress on
chosen input partitions while the others flow.

It is the shape of a partition the fetch loop cannot get past (an undecodable batch, a pause
that is never resumed after a rebalance): the partition is held paused through the
consumer's public ``pause_partitions``, so records wait on it with positive lag and its
processed position stays where it is.

The worker is an ordinary ``coldstream worker`` subprocess. :func:`site_dir` writes a
``sitecustomize.py`` that Python imports at start-up when its folder is on ``PYTHONPATH``
(:func:`worker_env`); it calls :func:`install`, which wraps :func:`stream_app.agents.wire`
to add one Faust timer. Every :data:`POLL_S` the timer reads the control file (JSON:
``{"pause": [["clicks", 0], ...]}`` or ``{"pause": "all"}``), pauses what it names and
resumes what it paused and no longer names. Nothing of this is in the worker's own code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["POLL_S", "applied_path", "held_now", "hold", "install", "site_dir", "worker_env"]

POLL_S = 0.2
"""How often the injected timer re-reads the control file."""


def applied_path(control: Path) -> Path:
    """Where the injected timer writes what it holds paused now (JSON ``[[topic, partition],
    ...]``, physical names), after each change: a scenario waits for it before producing, so
    no record of a held partition is fetched before the pause is in place."""
    return Path(control).with_suffix(".applied.json")


def held_now(control: Path) -> list[tuple[str, int]]:
    """What the worker holds paused now (:func:`applied_path`; ``[]`` before its first tick)."""
    try:
        return [(str(t), int(p)) for t, p in json.loads(applied_path(control).read_text("utf-8"))]
    except (OSError, ValueError, TypeError):
        return []


def hold(control: Path, partitions: list[tuple[str, int]] | str) -> None:
    """Name what the worker must hold paused: ``[(logical topic, partition), ...]``, ``"all"``
    or ``[]`` (nothing)."""
    tmp = control.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pause": partitions}), encoding="utf-8")
    os.replace(tmp, control)


def site_dir(workdir: Path, control: Path) -> Path:
    """A folder with the ``sitecustomize.py`` that installs the injection for ``control``."""
    d = Path(workdir) / "stall-site"
    d.mkdir(parents=True, exist_ok=True)
    (d / "sitecustomize.py").write_text(
        f"from devtools.faults.stall import install\ninstall({str(Path(control).absolute())!r})\n",
        encoding="utf-8",
    )
    return d


def worker_env(workdir: Path, control: Path, **settings: object) -> dict[str, str]:
    """The environment of an injected worker: the inherited one, the site folder first on
    ``PYTHONPATH``, and ``COLDSTREAM_<NAME>`` for each of ``settings``."""
    path = [str(site_dir(workdir, control)), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    env.update({f"COLDSTREAM_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def _wanted(control: Path, names: Mapping[str, str], assigned: set[Any]) -> set[Any]:
    try:
        spec = json.loads(control.read_text(encoding="utf-8"))["pause"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    inputs = {names[t] for t in ("clicks", "purchases") if t in names}
    if spec == "all":
        return {tp for tp in assigned if tp.topic in inputs}
    want = {(names.get(str(t), str(t)), int(p)) for t, p in spec}
    return {tp for tp in assigned if (tp.topic, tp.partition) in want}


def install(control: str) -> None:
    """Wrap ``stream_app.agents.wire``: the wired app gets the holding timer."""
    import stream_app.agents as agents

    wire = agents.wire
    path = Path(control)
    applied = applied_path(path)

    def wire_with_stall(app: Any, *args: Any, **kwargs: Any) -> Any:
        w = wire(app, *args, **kwargs)
        held: set[Any] = set()

        @app.timer(interval=POLL_S, name="fault-stall")
        async def hold_partitions() -> None:
            consumer = app.consumer
            try:
                assigned = set(consumer.assignment())
            except Exception:  # noqa: BLE001 - not started yet
                return
            want = _wanted(path, w.names, assigned)
            if want:
                consumer.pause_partitions(want)
            gone = held - want
            if gone:
                consumer.resume_partitions(gone & assigned)
            if want != held or not applied.exists():  # tell the scenario what is held
                tmp = applied.with_suffix(".tmp")
                tmp.write_text(
                    json.dumps(sorted([tp.topic, tp.partition] for tp in want)), encoding="utf-8"
                )
                os.replace(tmp, applied)
            held.clear()
            held.update(want)

        return w

    agents.wire = wire_with_stall  # type: ignore[assignment]
