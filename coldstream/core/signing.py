"""Ed25519 signatures of the control plane: one private key (the trainer's), public keys with
key ids on every worker.

What is signed (each with its own ``kind``, so a signature of one kind never passes for
another): ``model-updates`` records, ``item-vectors`` records, the store's ``CURRENT.json``
pointer and each checkpoint's ``signature.json``. The signed message is::

    b"coldstream-signature/1\\n" + kind + b"\\n" + canonical JSON of the record

where the record is every field except ``signature`` (``key_id`` included) and canonical
JSON is sorted keys, no whitespace, ASCII, no NaN/Infinity. ``signature`` is the base64 of
the 64-byte Ed25519 signature; ``key_id`` is the first 16 hex digits of the sha256 of the
raw 32-byte public key (:func:`key_id_of`), so keys rotate: a worker accepts a record signed
by any of its configured public keys (:class:`Keyring`), the record names which.

Key material is accepted as PEM (``-----BEGIN PRIVATE KEY-----`` PKCS#8, ``-----BEGIN
PUBLIC KEY-----`` SubjectPublicKeyInfo, what ``coldstream keys generate`` writes) or as the
base64 of the raw 32 bytes. Anything shorter than 32 bytes, or a known placeholder
(``REPLACE-ME``, ``changeme``, one byte repeated, ...), is refused with
:class:`KeyRefused`, whose message names the setting (env var) it came from.

Verification refusals are :class:`SignatureRefused` with a stable reason: ``unsigned`` (no
signature, or no public key configured), ``unknown_key`` (the record's key id is not one of
ours), ``bad_signature`` (it does not verify).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from coldstream.core.errors import ColdstreamError, Refused

__all__ = [
    "KEY_BYTES",
    "KeyRefused",
    "Keyring",
    "SignatureRefused",
    "Signer",
    "canonical",
    "key_id_of",
    "load_keyring",
    "load_public_key",
    "load_signer",
]

KEY_BYTES = 32
"""Raw length of an Ed25519 private seed and public key; shorter material is refused."""
DOMAIN = b"coldstream-signature/1\n"
MAX_KEY_FILE_BYTES = 64 * 1024
"""Largest key file read (a PEM key is about 120 bytes)."""

PLACEHOLDERS = frozenset(
    {
        "changeme",
        "change-me",
        "placeholder",
        "secret",
        "password",
        "key",
        "test",
        "dev",
        "xxx",
        "todo",
        "none",
        "null",
    }
)
"""Values refused outright (case-insensitive); any value containing ``replace`` is too."""

_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.S)


class KeyRefused(ColdstreamError, ValueError):
    """Key material that is malformed, too short or a placeholder (the message names the env
    var it came from). A ``ValueError``: raised inside a settings validator it becomes a
    pydantic ``ValidationError`` carrying this message."""


class SignatureRefused(Refused):
    """A signed record did not verify (``reason``: ``unsigned``, ``unknown_key``,
    ``bad_signature``)."""


def canonical(record: Mapping[str, Any]) -> bytes:
    """Canonical JSON of ``record`` (sorted keys, no whitespace, ASCII, finite numbers)."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _message(kind: str, record: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "signature"}
    return DOMAIN + kind.encode("ascii") + b"\n" + canonical(body)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(key: Ed25519PublicKey) -> str:
    """The key id: the first 16 hex digits of sha256(raw public key)."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


def _refuse_placeholder(text: str, what: str) -> None:
    t = text.strip().lower()
    if not t or t in PLACEHOLDERS or "replace" in t:
        raise KeyRefused(f"{what} is a placeholder ({text.strip()[:40]!r}): set a real key")


def _raw_material(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KeyRefused(f"{what} is neither PEM nor the base64 of a raw key") from None
    if len(raw) < KEY_BYTES:
        raise KeyRefused(f"{what} is {len(raw)} bytes: an Ed25519 key is {KEY_BYTES} bytes")
    if len(raw) != KEY_BYTES:
        raise KeyRefused(f"{what} is {len(raw)} bytes: expected exactly {KEY_BYTES} (Ed25519)")
    if len(set(raw)) <= 2:
        raise KeyRefused(f"{what} is a placeholder (one or two byte values repeated)")
    return raw


def load_public_key(text: str | bytes, *, what: str = "public key") -> Ed25519PublicKey:
    """One public key from PEM or raw base64 (:class:`KeyRefused` otherwise)."""
    text = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    _refuse_placeholder(text, what)
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.strip().encode())
        except (ValueError, TypeError) as e:
            raise KeyRefused(f"{what}: not a PEM public key ({e})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyRefused(f"{what}: a {type(key).__name__}, not an Ed25519 key")
    else:
        key = Ed25519PublicKey.from_public_bytes(_raw_material(text, what))
    if len(set(_raw_public(key))) <= 2:
        raise KeyRefused(f"{what} is a placeholder (one or two byte values repeated)")
    return key


def _private_from_text(text: str, what: str) -> Ed25519PrivateKey:
    _refuse_placeholder(text, what)
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.strip().encode(), password=None)
        except (ValueError, TypeError) as e:
            raise KeyRefused(f"{what}: not an unencrypted PEM private key ({e})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyRefused(f"{what}: a {type(key).__name__}, not an Ed25519 key")
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        if len(set(seed)) <= 2:
            raise KeyRefused(f"{what} is a placeholder (one or two byte values repeated)")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_material(text, what))


def _read_key_file(path: Path, what: str) -> str:
    try:
        # symlinks are followed here: a mounted Kubernetes Secret is a directory of links
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise KeyRefused(f"{what}: cannot open {path} ({e.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyRefused(f"{what}: {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyRefused(f"{what}: {path} is not ASCII (PEM or base64 expected)") from None


@dataclass(frozen=True)
class Keyring:
    """Public keys by key id: what a worker verifies control records with."""

    keys: Mapping[str, Ed25519PublicKey] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.keys)

    @classmethod
    def of(cls, keys: Iterable[Ed25519PublicKey]) -> Keyring:
        return cls({key_id_of(k): k for k in keys})

    def __or__(self, other: Keyring) -> Keyring:
        return Keyring({**self.keys, **other.keys})

    @property
    def key_ids(self) -> list[str]:
        return sorted(self.keys)

    def verify(self, kind: str, record: Mapping[str, Any]) -> str:
        """Check ``record``'s signature (over every other field); returns its key id."""
        sig, kid = record.get("signature"), record.get("key_id")
        if not sig:
            raise SignatureRefused("unsigned", f"{kind} record carries no signature")
        if not self.keys:
            raise SignatureRefused(
                "unsigned", "no public key configured (COLDSTREAM_VERIFY_KEYS / _FILE)"
            )
        if not isinstance(sig, str) or not isinstance(kid, str):
            raise SignatureRefused("bad_signature", "signature and key_id must be strings")
        key = self.keys.get(kid)
        if key is None:
            raise SignatureRefused(
                "unknown_key", f"signed by key {kid[:32]!r}, not one of {self.key_ids}"
            )
        try:
            raw = base64.b64decode(sig, validate=True)
            key.verify(raw, _message(kind, record))
        except (binascii.Error, ValueError, TypeError, InvalidSignature):
            raise SignatureRefused("bad_signature", f"{kind} signature does not verify") from None
        return kid


class Signer:
    """The private key: signs records (trainer side only)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """``record`` with ``key_id`` and ``signature`` (over all other fields) added."""
        body = {k: v for k, v in record.items() if k != "signature"}
        body["key_id"] = self.key_id
        sig = self._key.sign(_message(kind, body))
        return {**body, "signature": base64.b64encode(sig).decode("ascii")}

    @property
    def keyring(self) -> Keyring:
        """A keyring holding this key's public half (the signer verifies its own records)."""
        return Keyring.of([self.public_key])

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_b64(self) -> str:
        """The raw public key in base64 (a value for ``COLDSTREAM_VERIFY_KEYS``)."""
        return base64.b64encode(_raw_public(self.public_key)).decode("ascii")

    def write(self, out: Path | str) -> tuple[Path, Path]:
        """Write ``signing-key.pem`` (mode 0600, created exclusively) and ``verify-key.pub``
        into ``out``; returns both paths."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        priv, pub = out / "signing-key.pem", out / "verify-key.pub"
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.private_pem())
        os.chmod(priv, 0o600)
        pub.write_bytes(self.public_pem())
        return priv, pub


def load_signer(
    value: str | None, file: Path | None, *, env_var: str, file_env_var: str
) -> Signer | None:
    """The private key from a value (PEM or raw base64) or a file; ``None`` when neither is
    set; :class:`KeyRefused` naming the env var when it is bad or when both are set."""
    if value and file:
        raise KeyRefused(f"set {env_var} or {file_env_var}, not both")
    if file is not None:
        return Signer(_private_from_text(_read_key_file(Path(file), file_env_var), file_env_var))
    if value:
        return Signer(_private_from_text(value, env_var))
    return None


def _keys_in_text(text: str, what: str) -> list[Ed25519PublicKey]:
    if "PRIVATE KEY" in text:
        raise KeyRefused(f"{what} holds a PRIVATE key: give workers the public key only")
    keys = [load_public_key(m.group(0), what=what) for m in _PEM.finditer(text)]
    rest = _PEM.sub(" ", text)
    keys += [load_public_key(tok, what=what) for tok in re.split(r"[\s,]+", rest) if tok]
    return keys


def load_keyring(
    value: str | None, file: Path | None, *, env_var: str, file_env_var: str
) -> Keyring:
    """Public keys from a value (PEM blocks or base64 keys, separated by commas or
    whitespace) and/or a file or a directory of files (each: PEM blocks or base64 keys; a
    mounted Secret with one key per file). :class:`KeyRefused` names the env var."""
    keys: list[Ed25519PublicKey] = []
    if value:
        keys += _keys_in_text(value, env_var)
    if file is not None:
        path = Path(file)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                raise KeyRefused(f"{file_env_var}: directory {path} holds no key file")
        else:
            files = [path]
        for p in files:
            found = _keys_in_text(_read_key_file(p, file_env_var), f"{file_env_var} ({p.name})")
            if not found:
                raise KeyRefused(f"{file_env_var}: {p} holds no key")
            keys += found
    return Keyring.of(keys)
