"""Rollouts from the command line: ``coldstream rollout start|promote|abort|status``.

A rollout puts a verified version beside the live one (docs/rollout.md): as a ``canary``
served to a stable share of users, or as a ``shadow`` scored and never published. Its state
is ``ROLLOUT.json`` in the model store (written by the private key's holder only; workers
never read it: they follow the signed ``model-updates`` records).

Sequence numbers. The rollout's update takes the pointer's next number without moving the
pointer (workers keep the live model; a worker restarted mid-rollout still finds the
update above its pointer and loads the candidate again). Ending the rollout writes the
pointer, which takes that number: ``promote`` points it at the candidate and announces the
``live`` record with the rollout's id (workers swap the candidate's bundle in without a
second load); ``abort`` re-points it at the incumbent, so the rollout's update is no longer
above any pointer and a replay of it is refused by restarted workers too (running ones
refuse it already: a candidate must be above every candidate they have seen). Each end is
also a signed decision record (``manual_promote`` / ``manual_abort``) for the judge and
the workers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from coldstream.core.checkpoint import version_path
from coldstream.core.errors import UsageError
from coldstream.core.model_updates import make_update
from coldstream.core.pointer import PointerError, read_pointer, write_pointer
from coldstream.core.rollout import make_decision
from trainer.service.promote import (
    keyring_of,
    publish_records,
    require_signer,
    verified_checkpoint,
)

log = logging.getLogger(__name__)

ROLLOUT_FILE = "ROLLOUT.json"


@dataclass(frozen=True)
class Rollout:
    rollout_id: str
    candidate: int
    incumbent: int
    arm: str
    share: float | None
    seq: int
    started_at: float


def running(store: Path | str) -> Rollout | None:
    """The rollout ``ROLLOUT.json`` describes, or ``None``."""
    path = Path(store) / ROLLOUT_FILE
    if not path.is_file():
        return None
    try:
        return Rollout(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise UsageError(f"{path} is unreadable ({e}): remove it by hand") from None


def clear(store: Path | str) -> None:
    """Forget the running rollout (``ROLLOUT.json``): one whose update was never sent."""
    _write(Path(store), None)


def _write(store: Path, rollout: Rollout | None) -> None:
    path = store / ROLLOUT_FILE
    if rollout is None:
        path.unlink(missing_ok=True)
        return
    fd, tmp = tempfile.mkstemp(prefix=".rollout-", dir=store)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(asdict(rollout), f, sort_keys=True)
    os.replace(tmp, path)


def start(
    settings: Any,
    version: int,
    *,
    arm: Literal["canary", "shadow"] = "canary",
    share: float | None = 0.1,
    publish: bool = True,
    now: float | None = None,
) -> tuple[Rollout, bytes]:
    """Put ``version`` beside the live model as ``arm`` (a canary with ``share``); returns
    the rollout and its signed update record (published unless ``publish=False``; a record
    the broker refuses leaves no rollout behind). The trainer service, on its own event
    loop, calls it with ``publish=False`` and sends the record itself."""
    signer = require_signer(settings)
    keys = keyring_of(settings, signer)
    store = Path(settings.model_store)
    if (r := running(store)) is not None:
        raise UsageError(
            f"rollout {r.rollout_id} (v{r.candidate} as {r.arm}) is running: "
            "coldstream rollout promote or abort it first"
        )
    try:
        ptr = read_pointer(store, keys)
    except PointerError as e:
        raise UsageError(
            f"no live model to roll out beside ({e}): coldstream promote one"
        ) from None
    if ptr.version == version:
        raise UsageError(f"v{version} is the live model already")
    ck = verified_checkpoint(store, version, keys)
    if arm == "shadow":
        share = None
    elif share is None or not 0.0 < share < 1.0:
        raise UsageError(f"--share {share}: a canary's share is above 0 and below 1")
    at = time.time() if now is None else now
    rollout = Rollout(
        rollout_id=f"r-{version}-{int(at)}",
        candidate=version,
        incumbent=ptr.version,
        arm=arm,
        share=share,
        seq=ptr.seq + 1,
        started_at=at,
    )
    update = make_update(
        version=version,
        seq=rollout.seq,
        checkpoint_dir=version_path(store, version),
        manifest_sha256=ck.manifest_sha256,
        metrics={"rollout": rollout.rollout_id, "incumbent_version": ptr.version},
        signer=signer,
        arm=arm,
        share=share,
        rollout_id=rollout.rollout_id,
    )
    _write(store, rollout)
    record = update.to_json()
    if publish:
        try:
            asyncio.run(publish_records(settings, [record]))
        except BaseException:
            _write(store, None)  # never announced: no rollout runs
            raise
    return rollout, record


def end(
    settings: Any,
    how: Literal["promote", "abort"],
    *,
    publish: bool = True,
    decision: bytes | None = None,
) -> tuple[Rollout, list[bytes]]:
    """End the running rollout: ``promote`` its candidate to live, or ``abort`` it (the
    incumbent stays). ``decision``: the judge's signed decision record (default: a
    ``manual_promote`` / ``manual_abort`` one). Returns the rollout and the records sent
    (the decision, then, for ``promote``, the ``live`` update). The records are published
    first; only then do ``CURRENT.json`` and ``ROLLOUT.json`` change, so a broker that
    refuses them leaves the rollout running, to be ended again."""
    r, records, finish = prepare_end(settings, how, decision=decision)
    if publish:
        asyncio.run(publish_records(settings, list(records)))
    finish()
    return r, records


def prepare_end(
    settings: Any, how: Literal["promote", "abort"], *, decision: bytes | None = None
) -> tuple[Rollout, list[bytes], Any]:
    """The records that end the running rollout and the step that, once they are
    published, moves the pointer and clears ``ROLLOUT.json`` (:func:`end`; the judge awaits
    the publishing itself)."""
    signer = require_signer(settings)
    keys = keyring_of(settings, signer)
    store = Path(settings.model_store)
    r = running(store)
    if r is None:
        raise UsageError("no rollout is running (coldstream rollout start VERSION)")
    try:
        ptr: Any = read_pointer(store, keys)
    except PointerError:
        ptr = None
    live_now = ptr.version if ptr is not None else r.incumbent
    if how == "promote" and live_now != r.incumbent:
        # someone promoted another version meanwhile (the workers dropped the candidate on
        # its live record): the comparison is stale; end the rollout without a promotion
        log.warning(
            "rollout %s: the live model moved from v%d to v%d since it started; aborted, not "
            "promoted",
            r.rollout_id,
            r.incumbent,
            live_now,
        )
        how = "abort"
        decision = None
    if decision is None:
        decision = make_decision(
            r.rollout_id,
            r.candidate,
            r.incumbent,
            "manual_promote" if how == "promote" else "manual_abort",
            {"by": "coldstream rollout", "arm": r.arm, "share": r.share},
            signer,
        )
    records = [decision]
    # promote: point at the candidate; abort: re-point at what is live now (a new sequence
    # number above the rollout's, so its update is refused on replay), unless the pointer
    # has moved past the rollout already
    keep = r.candidate if how == "promote" else live_now
    ck = verified_checkpoint(store, keep, keys)
    seq = (ptr.seq if ptr is not None else r.seq - 1) + 1
    repoint = how == "promote" or ptr is None or ptr.seq < r.seq
    if how == "promote":
        records.append(
            make_update(
                version=r.candidate,
                seq=seq,
                checkpoint_dir=version_path(store, r.candidate),
                manifest_sha256=ck.manifest_sha256,
                metrics={"promoted_by": "coldstream rollout", "previous_version": r.incumbent},
                signer=signer,
                arm="live",
                rollout_id=r.rollout_id,
            ).to_json()
        )

    def finish() -> None:
        if repoint:
            write_pointer(store, version=keep, manifest_sha256=ck.manifest_sha256, signer=signer)
        _write(store, None)

    return r, records, finish
