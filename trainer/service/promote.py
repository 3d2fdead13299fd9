"""Moving the store's pointer from the command line (the private key's holder only).

* :func:`promote` -- verify a checkpoint (its files and its signature), point the store's
  ``CURRENT.json`` at it with the next sequence number, and (unless ``publish=False``)
  announce it on ``model-updates`` with that sequence number: every worker swaps to it,
  older or newer than what it serves (``coldstream rollback --to V``).
* :func:`sign_versions` -- sign checkpoints written without a key (``coldstream keys sign``).
* :func:`prune` -- keep the newest ``keep`` versions plus the pointer's (``coldstream prune``).
* :func:`sign_and_point` -- sign a freshly written checkpoint and point the store at it
  (``coldstream train`` with a key; a trainer's first model).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coldstream.core.checkpoint import (
    CheckpointError,
    list_versions,
    load_checkpoint,
    prune_store,
    sign_checkpoint,
    version_path,
)
from coldstream.core.errors import UsageError
from coldstream.core.model_updates import ModelUpdate, make_update
from coldstream.core.pointer import Pointer, PointerError, peek_pointer, read_pointer, write_pointer
from coldstream.core.signing import Keyring, Signer
from coldstream.core.topics import topic_names

log = logging.getLogger(__name__)

__all__ = ["Promotion", "promote", "prune", "require_signer", "sign_and_point", "sign_versions"]


@dataclass(frozen=True)
class Promotion:
    pointer: Pointer
    update: ModelUpdate
    previous: Pointer | None
    published: bool


def require_signer(settings: Any) -> Signer:
    """The private key of the settings, or a :class:`UsageError` saying how to set one."""
    signer = settings.signer()
    if signer is None:
        raise UsageError(
            f"this command needs the private key: set {settings.env_var('signing_key_file')} "
            f"(coldstream keys generate --out DIR writes one) or {settings.env_var('signing_key')}"
        )
    return signer


def keyring_of(settings: Any, signer: Signer) -> Keyring:
    """The configured public keys plus the signer's own."""
    return settings.verify_keyring() | signer.keyring


def verified_checkpoint(store: Path, version: int, keys: Keyring) -> Any:
    """Load ``version`` of the store with its files and signature checked, or a
    :class:`UsageError` that says what to do."""
    if version not in list_versions(store):
        have = ", ".join(str(v) for v in list_versions(store)) or "none"
        raise UsageError(f"no version {version} in model store {store} (versions: {have})")
    try:
        return load_checkpoint(version_path(store, version), verify_keys=keys)
    except CheckpointError as e:
        hint = (
            f"; if you trust it, sign it first: coldstream keys sign {version}"
            if e.reason in ("unsigned", "unknown_key")
            else ""
        )
        raise UsageError(f"v{version} is refused ({e}){hint}") from None


def promote(settings: Any, version: int, *, publish: bool = True, note: str = "") -> Promotion:
    """Point the store at ``version`` (seq + 1) and announce it (module docstring)."""
    signer = require_signer(settings)
    keys = keyring_of(settings, signer)
    store = Path(settings.model_store)
    path = version_path(store, version)
    ck = verified_checkpoint(store, version, keys)
    try:
        previous: Pointer | None = read_pointer(store, keys)
    except PointerError:
        previous = None
    ptr = write_pointer(store, version=version, manifest_sha256=ck.manifest_sha256, signer=signer)
    metrics: dict[str, Any] = {"promoted_by": note or "coldstream"}
    if previous is not None:
        metrics["previous_version"] = previous.version
    update = make_update(
        version=version,
        seq=ptr.seq,
        checkpoint_dir=path,
        manifest_sha256=ck.manifest_sha256,
        metrics=metrics,
        signer=signer,
    )
    if publish:
        asyncio.run(_publish(settings, update))
    return Promotion(ptr, update, previous, publish)


async def _publish(settings: Any, update: ModelUpdate) -> None:
    await publish_records(settings, [update.to_json()])


async def publish_records(settings: Any, values: list[bytes | str]) -> None:
    """Send ``values`` to ``model-updates``, in order, each acknowledged by all replicas."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        request_timeout_ms=30_000,
        **settings.kafka_client_kwargs(),
    )
    await producer.start()
    try:
        topic = topic_names(settings.topic_prefix)["model-updates"]
        for value in values:
            await producer.send_and_wait(
                topic, value=value.encode() if isinstance(value, str) else value
            )
    finally:
        await producer.stop()


def sign_versions(settings: Any, versions: list[int]) -> list[str]:
    """Sign existing checkpoints after checking their files against their manifests."""
    signer = require_signer(settings)
    store = Path(settings.model_store)
    out = []
    for v in versions:
        path = version_path(store, v)
        try:
            load_checkpoint(path)  # every file against the manifest, the model rebuilt
        except CheckpointError as e:
            raise UsageError(f"v{v} is damaged, not signed: {e}") from None
        rec = sign_checkpoint(path, signer)
        out.append(f"v{v:06d}: signed by key {rec['key_id']}")
    return out


def prune(settings: Any, *, keep: int | None = None) -> tuple[list[int], int | None]:
    """Delete all but the newest ``keep`` versions (``keep_versions``) and the pointer's;
    returns the deleted versions and the protected pointer version."""
    store = Path(settings.model_store)
    ptr = peek_pointer(store)  # unverified on purpose: when in doubt, keep it
    protect = [ptr.version] if ptr is not None else []
    gone = prune_store(store, keep=keep or settings.keep_versions, protect=protect)
    return gone, ptr.version if ptr is not None else None


def sign_and_point(settings: Any, path: Path) -> str:
    """With a signing key: sign a freshly written checkpoint and point the store at it (seq +
    1); without one, say how it can be served. Returns the line to print."""
    signer = settings.signer()
    if signer is None:
        return (
            f"unsigned ({settings.env_var('signing_key_file')} unset): a worker serves it only "
            f"with COLDSTREAM_ALLOW_UNSIGNED_CHECKPOINTS=true (dev), or sign it: coldstream keys "
            f"sign {int(Path(path).name[1:])}"
        )
    sign_checkpoint(path, signer)
    ck = load_checkpoint(path, verify_keys=signer.keyring)
    ptr = write_pointer(
        Path(path).parent, version=ck.version, manifest_sha256=ck.manifest_sha256, signer=signer
    )
    return f"signed by key {signer.key_id}; CURRENT.json -> v{ptr.version} (seq {ptr.seq})"
