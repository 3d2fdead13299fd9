"""Broker security arguments shared by the worker (:class:`stream_app.settings.Settings`) and the
trainer (:class:`trainer.settings.TrainerSettings`): one function builds the aiokafka keyword
arguments for PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL, one checks that SASL is complete.

Standard library and pydantic only (no Faust, no torch): the trainer imports it, and it imports nothing back.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from pydantic import SecretStr

SSL_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _secret(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def make_ssl_context(
    protocol: str,
    cafile: Path | str | None = None,
    certfile: Path | str | None = None,
    keyfile: Path | str | None = None,
) -> ssl.SSLContext | None:
    """The TLS context for the brokers (``None`` unless ``protocol`` is SSL or SASL_SSL):
    verifies the broker against ``cafile`` (system CAs when unset; hostname included) and
    presents ``certfile``/``keyfile`` when set (mutual TLS)."""
    if protocol not in SSL_PROTOCOLS:
        return None
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None
    )
    if certfile is not None:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile is not None else None)
    return ctx


def check_sasl(
    protocol: str,
    mechanism: str | None,
    username: str | None,
    password: SecretStr | str | None,
    *,
    env_prefix: str = "COLDSTREAM_",
) -> None:
    """Raise ``ValueError`` naming the missing env vars when ``protocol`` is SASL_* and the
    mechanism, user name or password is unset (or empty)."""
    if protocol not in SASL_PROTOCOLS:
        return
    missing = [
        name
        for name, v in (
            ("sasl_mechanism", mechanism),
            ("sasl_username", username),
            ("sasl_password", _secret(password)),
        )
        if not v
    ]
    if missing:
        env = ", ".join(env_prefix + m.upper() for m in missing)
        raise ValueError(f"security_protocol={protocol} needs {', '.join(missing)} (env: {env})")
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(
            f"sasl_mechanism must be one of {', '.join(SASL_MECHANISMS)}, not {mechanism!r}"
        )


def kafka_security_kwargs(
    protocol: str,
    cafile: Path | str | None = None,
    certfile: Path | str | None = None,
    keyfile: Path | str | None = None,
    mechanism: str | None = None,
    username: str | None = None,
    password: SecretStr | str | None = None,
) -> dict[str, Any]:
    """Security keyword arguments for any aiokafka client (producer, consumer, admin):
    ``security_protocol`` always, ``ssl_context`` for SSL/SASL_SSL, ``sasl_mechanism``,
    ``sasl_plain_username`` and ``sasl_plain_password`` for SASL_* (aiokafka uses the
    ``sasl_plain_*`` pair for SCRAM too)."""
    check_sasl(protocol, mechanism, username, password)
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    ctx = make_ssl_context(protocol, cafile, certfile, keyfile)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if protocol in SASL_PROTOCOLS:
        kwargs.update(
            sasl_mechanism=mechanism,
            sasl_plain_username=username,
            sasl_plain_password=_secret(password),
        )
    return kwargs
