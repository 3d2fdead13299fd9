"""The settings convention of both processes, and the block of settings they share.

One frozen ``pydantic-settings`` object per process, read once from the environment (the
only places that read it): :class:`stream_app.settings.Settings` (the worker) and
:class:`trainer.settings.TrainerSettings` (the trainer). Both extend :class:`SharedSettings`:

* every field has a default, an attribute docstring (its documentation) and an env var
  **generated from its name**: ``COLDSTREAM_<NAME>`` for the shared fields below (they mean
  the same in the worker and the trainer: one ConfigMap/Secret serves both), and the
  process's own prefix for the others (``COLDSTREAM_`` for the worker,
  ``COLDSTREAM_TRAINER_`` for the trainer: only where the trainer differs);
* command-line flags override the environment: ``settings.with_overrides(k=10)``;
* ``python -m stream_app.settings`` / ``python -m trainer.settings`` print the table
  (:func:`settings_table`).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, AliasGenerator, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coldstream.core.security import check_sasl, kafka_security_kwargs, make_ssl_context
from coldstream.core.signing import Keyring, load_keyring

ENV_PREFIX = "COLDSTREAM_"
"""Prefix of every coldstream environment variable."""

DEFAULT_MODEL_STORE = Path("model-store")
"""The one model-store default of ``train``, ``trainer``, ``worker`` and ``demo``."""


def env_aliases(own_prefix: str, shared: frozenset[str] = frozenset()) -> AliasGenerator:
    """Env var of each field from its name: ``COLDSTREAM_<NAME>`` for ``shared`` fields,
    ``<own_prefix><NAME>`` for the others; the field name itself stays accepted (keyword
    arguments, :meth:`SharedSettings.with_overrides`)."""

    def alias(name: str) -> AliasChoices:
        prefix = ENV_PREFIX if name in shared else own_prefix
        return AliasChoices(prefix + name.upper(), name)

    return AliasGenerator(validation_alias=alias)


class SharedSettings(BaseSettings):
    """Broker, topics, model store, control-plane public keys and security: the same env vars
    in every process."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="ignore",
        use_attribute_docstrings=True,
        populate_by_name=True,
        protected_namespaces=(),
        alias_generator=env_aliases(ENV_PREFIX),
    )
    ENV_PREFIX: ClassVar[str] = ENV_PREFIX
    """This process's own prefix (``COLDSTREAM_TRAINER_`` in the trainer)."""

    # -- broker & topics ------------------------------------------------------------------
    bootstrap: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, ``host:port[,host:port]`` (any Kafka-protocol broker)."""
    topic_prefix: str = ""
    """Prefix prepended verbatim to every topic name of ``kafka/topics.yaml`` (tests use a unique one)."""
    broker_wait_s: float = Field(0.0, ge=0, le=3600)
    """At start, wait up to this long (seconds) for the broker to answer and the topics to
    exist (containers started together); 0: check once and stop with a one-line error."""

    # -- model store ------------------------------------------------------------------------
    model_store: Path = DEFAULT_MODEL_STORE
    """Model store root (versioned checkpoints ``v000001/`` ...): the trainer writes it, the
    worker serves its newest checkpoint."""

    # -- control-plane keys (coldstream.core.signing) ---------------------------------------
    verify_keys: str | None = None
    """Ed25519 public keys that control records (``model-updates``, ``item-vectors``, the
    store's ``CURRENT.json`` and each checkpoint's ``signature.json``) must be signed with:
    PEM blocks or raw base64 keys, separated by commas or whitespace. A record names its key
    id; any configured key is accepted (rotation: list the old and the new key). Public, not
    secret. Unset (and no ``verify_keys_file``): every signed record is refused."""
    verify_keys_file: Path | None = None
    """A file, or a directory of files (a mounted Secret: one key per file), of public keys
    in the format of ``verify_keys``; both may be set (the keys add up)."""
    allow_unsigned_checkpoints: bool = False
    """DEV ONLY: at start-up, serve the newest *unsigned* checkpoint of the store when no
    pointer and no signed checkpoint is there (a first ``coldstream train`` + ``coldstream
    worker`` without keys). Never on in the ``prod`` profile (the worker refuses to start);
    updates and item vectors are always verified."""

    # -- security (every Kafka client of the process) ---------------------------------------
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Broker security protocol. SASL_* need ``sasl_mechanism``, ``sasl_username`` and
    ``sasl_password``; SSL and SASL_SSL verify the broker with ``ssl_cafile``."""
    ssl_cafile: Path | None = None
    """CA bundle (PEM) that verifies the brokers for SSL; unset: the system CAs."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM) for mutual TLS."""
    ssl_keyfile: Path | None = None
    """Client key (PEM) for mutual TLS (unset: the key is in ``ssl_certfile``)."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism for SASL_PLAINTEXT/SASL_SSL."""
    sasl_username: str | None = None
    """SASL user name (SASL_* only)."""
    sasl_password: SecretStr | None = None
    """SASL password (SASL_* only; never logged)."""

    @model_validator(mode="after")
    def _check_shared(self) -> SharedSettings:
        if not self.bootstrap.strip():
            raise ValueError("bootstrap must name at least one broker")
        check_sasl(
            self.security_protocol,
            self.sasl_mechanism,
            self.sasl_username,
            self.sasl_password,
            env_prefix=ENV_PREFIX,
        )
        self.verify_keyring()  # KeyRefused (a ValueError) names the env var
        return self

    # -- derived ----------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the brokers (``None`` unless the protocol is SSL or SASL_SSL):
        verifies the broker against ``ssl_cafile`` (hostname included), presents
        ``ssl_certfile``/``ssl_keyfile`` when set."""
        return make_ssl_context(
            self.security_protocol, self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile
        )

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Security arguments for any aiokafka client of this process (producer, consumer,
        admin): ``AIOKafkaConsumer(bootstrap_servers=s.bootstrap, **s.kafka_client_kwargs())``.
        SASL_* add ``sasl_mechanism``, ``sasl_plain_username`` and ``sasl_plain_password``."""
        return kafka_security_kwargs(
            self.security_protocol,
            self.ssl_cafile,
            self.ssl_certfile,
            self.ssl_keyfile,
            self.sasl_mechanism,
            self.sasl_username,
            self.sasl_password,
        )

    def verify_keyring(self) -> Keyring:
        """The public keys of ``verify_keys`` and ``verify_keys_file`` (checked at start-up:
        a short, malformed or placeholder key fails the settings with its env var named)."""
        return load_keyring(
            self.verify_keys,
            self.verify_keys_file,
            env_var=SharedSettings.env_var("verify_keys"),
            file_env_var=SharedSettings.env_var("verify_keys_file"),
        )

    def with_overrides(self, **changes: Any) -> SharedSettings:
        """A copy with some fields replaced (``None`` values are ignored), validated again."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        return type(self).model_validate(data)

    @classmethod
    def env_var(cls, name: str) -> str:
        """The environment variable of field ``name``."""
        alias = cls.model_fields[name].validation_alias
        assert isinstance(alias, AliasChoices)
        first = alias.choices[0]
        assert isinstance(first, str)
        return first


SHARED_FIELDS = frozenset(SharedSettings.model_fields)
"""Names of the shared fields (their env vars are ``COLDSTREAM_<NAME>`` in every process)."""


def settings_table(cls: type[SharedSettings]) -> list[tuple[str, str, str, str]]:
    """``(field, env var, default, description)`` for every setting of ``cls``."""
    rows = []
    for name, f in cls.model_fields.items():
        default = f.default
        shown = "" if default is None else str(default)
        rows.append((name, cls.env_var(name), shown, " ".join((f.description or "").split())))
    return rows


def print_table(cls: type[SharedSettings], write: Callable[[str], Any] = print) -> None:
    """Print the settings of ``cls`` as a Markdown table (``python -m ... settings``)."""
    write("| env var | default | meaning |")
    write("|---|---|---|")
    for _name, env, default, doc in settings_table(cls):
        write(f"| `{env}` | `{default}` | {doc} |")
