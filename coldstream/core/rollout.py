"""Safe rollout of a new student: arms, the stable canary assignment, and the signed
decision records of the online judge (docs/rollout.md). Kernel code: no torch, no Kafka.

**Arms.** A model version is served in one of three arms (:data:`Arm`):

``live``    served to every user not in a canary share (a record without rollout fields)
``canary``  served to a stable ``share`` of users, chosen by :func:`assign`
``shadow``  scored on live events, never published (share: none)

The arm, its share and the ``rollout_id`` travel inside the signed ``model-updates`` record
(:func:`coldstream.core.model_updates.make_update`); ``rollout_id`` is also the salt of the
assignment, so every worker, and a worker that restarts mid-canary, puts a user in the same
arm, and a new rollout draws a fresh sample of users.

**Assignment.** :func:`assign` is a keyed BLAKE2b hash of the user id (key: the rollout id),
its first 8 bytes read as a uniform number ``u`` in [0, 1); the user is in the canary when
``u < share``. It is stable across processes and restarts (never Python's ``hash()``) and
monotone in the share: a user in at 5% is in at 10%.

**Decisions.** The judge's verdicts (``trainer/service/judge.py``) and the manual overrides
(``coldstream rollout promote|abort``) are signed records of their own kind
(:data:`DECISION_KIND`), so a ``model-updates`` signature never passes for a decision::

    {"rollout_id": "r-7-1790000000", "candidate_version": 8, "incumbent_version": 7,
     "decision": "rollback", "figures": {...}, "decided_at": 1790000300.0,
     "key_id": "<16 hex>", "signature": "<base64 Ed25519>"}

:func:`verify_decision` refuses (:class:`DecisionRefused`) with the reasons of the other
control records: ``oversize``, ``bad_record``, ``unsigned``, ``unknown_key``,
``bad_signature``. A decision names its rollout: a consumer applies at most one decision
per rollout id and ignores one for a rollout it is not running, so a replayed old decision
does nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from coldstream.core.errors import Refused
from coldstream.core.signing import Keyring, SignatureRefused, Signer, canonical

__all__ = [
    "ARMS",
    "DECISIONS",
    "DECISION_KIND",
    "Arm",
    "Decision",
    "DecisionKind",
    "DecisionRefused",
    "arm_of",
    "assign",
    "check_rollout_fields",
    "is_decision_record",
    "make_decision",
    "unit_hash",
    "verify_decision",
]

Arm = Literal["live", "canary", "shadow"]
ARMS: tuple[str, ...] = get_args(Arm)
DecisionKind = Literal["promote", "rollback", "give_up", "manual_promote", "manual_abort"]
DECISIONS: tuple[str, ...] = get_args(DecisionKind)
DECISION_KIND = "rollout-decision"
MAX_DECISION_BYTES = 64 * 1024
"""Largest decision record read (a real one is under 2 KB: the judge's figures)."""
ROLLOUT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
"""A rollout id: 1-64 of ``A-Z a-z 0-9 . _ : -``."""


class DecisionRefused(Refused):
    """A rollout decision record was refused (``reason``: one of the codes above)."""


def unit_hash(user_id: str, salt: str) -> float:
    """A uniform number in [0, 1): BLAKE2b of ``user_id`` keyed by ``salt``, first 8 bytes."""
    key = salt.encode("utf-8")
    if len(key) > 64:  # BLAKE2b's key limit: longer salts are hashed down first
        key = hashlib.blake2b(key).digest()
    digest = hashlib.blake2b(user_id.encode("utf-8"), key=key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(user_id: str, share: float, salt: str) -> bool:
    """Whether ``user_id`` is in the canary ``share`` of the rollout salted by ``salt``
    (stable across processes; monotone in ``share``)."""
    if share <= 0.0:
        return False
    if share >= 1.0:
        return True
    return unit_hash(user_id, salt) < share


def arm_of(
    user_id: str, *, candidate_arm: str | None, share: float | None, rollout_id: str | None
) -> Arm:
    """The arm that serves ``user_id`` while a candidate is held beside the live version:
    ``canary`` when the candidate is a canary and the user is in its share, else ``live``
    (a shadow candidate serves nobody)."""
    if (
        candidate_arm == "canary"
        and share is not None
        and rollout_id is not None
        and assign(user_id, share, rollout_id)
    ):
        return "canary"
    return "live"


def check_rollout_fields(arm: Any, share: Any, rollout_id: Any) -> str | None:
    """Why the rollout fields of a ``model-updates`` record are malformed (``None``: they
    are fine). ``None`` values are absent fields. All absent is a plain ``live`` record;
    otherwise ``rollout_id`` and ``arm`` are required, ``share`` is in (0, 1), required
    for ``canary`` and absent for ``live`` (1.0) and ``shadow`` (none)."""
    if arm is None and share is None and rollout_id is None:
        return None
    if rollout_id is None or not isinstance(rollout_id, str) or not ROLLOUT_ID.match(rollout_id):
        return f"rollout_id must be 1-64 of [A-Za-z0-9._:-], got {rollout_id!r}"
    if arm not in ARMS or not isinstance(arm, str):
        return f"arm must be one of {ARMS}, got {arm!r}"
    if share is not None:
        if isinstance(share, bool) or not isinstance(share, int | float):
            return f"share must be a number, got {share!r}"
        if not math.isfinite(share) or not 0.0 < share <= 1.0:
            return f"share must be in (0, 1], got {share!r}"
    if arm == "canary":
        if share is None or share >= 1.0:
            return f"a canary needs a share below 1, got {share!r}"
    elif arm == "shadow":
        if share is not None:
            return "a shadow is served to nobody: it takes no share"
    elif share is not None:
        return "live serves every user not in a canary: it takes no share (1.0)"
    return None


# -------------------------------------------------------------------------------------
# decision records
# -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    rollout_id: str
    candidate_version: int
    incumbent_version: int
    decision: DecisionKind
    figures: dict[str, Any]
    decided_at: float
    key_id: str | None = None

    @property
    def keeps_candidate(self) -> bool:
        """``True`` when the candidate becomes ``live`` (promote, manual_promote)."""
        return self.decision in ("promote", "manual_promote")


def is_decision_record(data: dict[str, Any]) -> bool:
    """Whether a parsed control record is a decision (it names a ``decision`` and no
    ``uri``), so that decisions may share the ``model-updates`` topic with updates."""
    return "decision" in data and "uri" not in data


def make_decision(
    rollout_id: str,
    candidate_version: int,
    incumbent_version: int,
    decision: DecisionKind,
    figures: dict[str, Any],
    signer: Signer,
    *,
    decided_at: float | None = None,
) -> bytes:
    """A signed decision record (trainer/judge side, or ``coldstream rollout``)."""
    body = {
        "rollout_id": rollout_id,
        "candidate_version": int(candidate_version),
        "incumbent_version": int(incumbent_version),
        "decision": decision,
        "figures": figures,
        "decided_at": float(decided_at if decided_at is not None else time.time()),
    }
    why = _check_decision(body)
    if why:
        raise ValueError(f"not a valid decision: {why}")
    return canonical(signer.sign(DECISION_KIND, body))


def _check_decision(data: dict[str, Any]) -> str | None:
    rid = data.get("rollout_id")
    if not isinstance(rid, str) or not ROLLOUT_ID.match(rid):
        return f"rollout_id must be 1-64 of [A-Za-z0-9._:-], got {rid!r}"
    for name in ("candidate_version", "incumbent_version"):
        v = data.get(name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            return f"{name} must be a non-negative integer"
    if data.get("decision") not in DECISIONS:
        return f"decision must be one of {DECISIONS}"
    if not isinstance(data.get("figures"), dict):
        return "figures must be an object"
    at = data.get("decided_at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        return "decided_at must be a number"
    for name in ("key_id", "signature"):
        if data.get(name) is not None and not isinstance(data.get(name), str):
            return f"{name} must be a string"
    return None


def verify_decision(raw: bytes | str | dict[str, Any], keys: Keyring) -> Decision:
    """Size cap, shape, then the signature (one of ``keys``, kind :data:`DECISION_KIND`);
    :class:`DecisionRefused` with the reason otherwise."""
    if isinstance(raw, dict):
        data = raw
    else:
        if len(raw) > MAX_DECISION_BYTES:
            raise DecisionRefused("oversize", f"{len(raw)} bytes > cap {MAX_DECISION_BYTES}")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise DecisionRefused("bad_record", "not JSON (or nested too deeply)") from None
    if not isinstance(data, dict):
        raise DecisionRefused("bad_record", "not a JSON object")
    why = _check_decision(data)
    if why:
        raise DecisionRefused("bad_record", why)
    try:
        key_id = keys.verify(DECISION_KIND, data)
    except SignatureRefused as e:
        raise DecisionRefused(e.reason, e.message) from None
    except ValueError:  # not canonicalisable (NaN, ...)
        raise DecisionRefused("bad_record", "record cannot be canonicalised") from None
    return Decision(
        rollout_id=data["rollout_id"],
        candidate_version=data["candidate_version"],
        incumbent_version=data["incumbent_version"],
        decision=cast(DecisionKind, data["decision"]),
        figures=data["figures"],
        decided_at=float(data["decided_at"]),
        key_id=key_id,
    )
