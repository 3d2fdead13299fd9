"""Topic definitions, loaded from ``kafka/topics.yaml`` (the single source of truth).

The Faust app, the embedded brokers' set-up (tests, demo) and the Kubernetes
``KafkaTopic`` resources all derive from this file; nothing else repeats a topic's name,
partition count or configs::

    specs = load_topics()                      # {"clicks": TopicSpec(...), ...}, file order
    names = topic_names("t123-")               # {"clicks": "t123-clicks", ...}
    created = await create_topics("127.0.0.1:9092", replication_factor=1, prefix="t123-")

Where the file is looked for (first hit wins): the ``path`` argument, the source tree
(``<repo>/kafka/topics.yaml``), then an installed copy at
``<sys.prefix>/share/coldstream/kafka/topics.yaml`` (or the user base for ``--user``
installs). This module reads no environment variables.
"""

from __future__ import annotations

import asyncio
import logging
import re
import site
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from aiokafka.admin import NewTopic

__all__ = [
    "FieldSpec",
    "TopicSpec",
    "TopicsError",
    "ValueSpec",
    "create_topics",
    "find_topics_file",
    "load_topics",
    "prefixed",
    "topic_names",
]

log = logging.getLogger(__name__)

TOPICS_FILE = Path("kafka") / "topics.yaml"
INSTALLED_TOPICS_FILE = Path("share") / "coldstream" / "kafka" / "topics.yaml"

_LEGAL_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")
_MAX_NAME_LEN = 249
_TOPIC_KEYS = {"description", "partitions", "replication_factor", "configs", "key", "value"}
_VALUE_KEYS = {"format", "fields"}
_ERR_TOPIC_ALREADY_EXISTS = 36


class TopicsError(ValueError):
    """The topics file is missing or invalid, or the cluster disagrees with it."""


@dataclass(frozen=True)
class FieldSpec:
    """One field of a JSON value: ``type`` is descriptive (``string``, ``array[number]``...)."""

    name: str
    type: str
    required: bool = True


@dataclass(frozen=True)
class ValueSpec:
    """Description of a record value (always a JSON object here)."""

    format: str
    fields: tuple[FieldSpec, ...]

    def field_names(self, *, required_only: bool = False) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required or not required_only)


@dataclass(frozen=True)
class TopicSpec:
    """One topic as declared in ``kafka/topics.yaml``.

    ``configs`` is a read-only mapping of Kafka topic configs (string values). ``key`` is the
    value field whose string form is the record key, or ``None`` for unkeyed topics.
    """

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]
    key: str | None
    value: ValueSpec
    description: str = field(default="", compare=False)

    @property
    def compacted(self) -> bool:
        return "compact" in self.configs.get("cleanup.policy", "delete").split(",")

    def with_prefix(self, prefix: str) -> TopicSpec:
        """The same topic under ``prefix + name`` (the prefix is used verbatim)."""
        if not prefix:
            return self
        name = prefix + self.name
        _check_topic_name(name)
        return replace(self, name=name)

    def new_topic(self, replication_factor: int | None = None) -> NewTopic:
        """An aiokafka ``NewTopic``; an overriding ``replication_factor`` also caps
        ``min.insync.replicas`` so that a single-node broker accepts ``acks=all`` writes."""
        from aiokafka.admin import NewTopic

        rf = self.replication_factor if replication_factor is None else replication_factor
        if rf < 1:
            raise TopicsError(f"replication_factor must be >= 1, got {rf}")
        configs = dict(self.configs)
        if "min.insync.replicas" in configs:
            configs["min.insync.replicas"] = str(min(int(configs["min.insync.replicas"]), rf))
        return NewTopic(self.name, self.partitions, rf, topic_configs=configs)


# --------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (YAML would keep the last one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise TopicsError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _candidate_files() -> list[Path]:
    repo = Path(__file__).resolve().parents[2]
    candidates = [repo / TOPICS_FILE, Path(sys.prefix) / INSTALLED_TOPICS_FILE]
    user_base = site.getuserbase()
    if user_base:
        candidates.append(Path(user_base) / INSTALLED_TOPICS_FILE)
    return candidates


def find_topics_file(path: str | Path | None = None) -> Path:
    """Locate ``topics.yaml``: ``path`` if given, else the source tree, else an installed copy."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise TopicsError(f"topics file not found: {p}")
        return p
    candidates = _candidate_files()
    for p in candidates:
        if p.is_file():
            return p
    tried = ", ".join(str(p) for p in candidates)
    raise TopicsError(f"kafka/topics.yaml not found; looked in: {tried}")


def _config_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float | str):
        return str(v)
    raise TopicsError(f"config values must be scalars, got {v!r}")


def _check_topic_name(name: str) -> None:
    if not _LEGAL_NAME.match(name) or len(name) > _MAX_NAME_LEN or name in {".", ".."}:
        raise TopicsError(
            f"illegal Kafka topic name {name!r}: use at most {_MAX_NAME_LEN} of [a-zA-Z0-9._-]"
        )


def _positive_int(topic: str, key: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise TopicsError(f"topic {topic!r}: {key} must be a positive integer, got {v!r}")
    return v


def _parse_value(topic: str, raw: Any) -> ValueSpec:
    if not isinstance(raw, Mapping):
        raise TopicsError(f"topic {topic!r}: value must be a mapping with format and fields")
    unknown = set(raw) - _VALUE_KEYS
    if unknown:
        raise TopicsError(f"topic {topic!r}: unknown value keys {sorted(unknown)}")
    fmt = raw.get("format")
    if fmt != "json":
        raise TopicsError(f"topic {topic!r}: value format must be 'json', got {fmt!r}")
    raw_fields = raw.get("fields")
    if not isinstance(raw_fields, Mapping) or not raw_fields:
        raise TopicsError(f"topic {topic!r}: value.fields must be a non-empty mapping")
    fields = []
    for fname, ftype in raw_fields.items():
        if not isinstance(ftype, str) or not ftype.strip():
            raise TopicsError(f"topic {topic!r}: field {fname!r} needs a type string")
        ftype = ftype.strip()
        required = not ftype.endswith("?")
        fields.append(FieldSpec(str(fname), ftype.rstrip("?").strip(), required))
    return ValueSpec(format=fmt, fields=tuple(fields))


def _parse_topic(name: Any, raw: Any) -> TopicSpec:
    if not isinstance(name, str):
        raise TopicsError(f"topic names must be strings, got {name!r}")
    _check_topic_name(name)
    if not isinstance(raw, Mapping):
        raise TopicsError(f"topic {name!r}: expected a mapping")
    unknown = set(raw) - _TOPIC_KEYS
    missing = {"partitions", "replication_factor", "value"} - set(raw)
    if unknown or missing:
        raise TopicsError(
            f"topic {name!r}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
        )
    configs_raw = raw.get("configs") or {}
    if not isinstance(configs_raw, Mapping):
        raise TopicsError(f"topic {name!r}: configs must be a mapping")
    configs = MappingProxyType({str(k): _config_value(v) for k, v in configs_raw.items()})
    value = _parse_value(name, raw["value"])
    key = raw.get("key")
    if key is not None and key not in value.field_names(required_only=True):
        raise TopicsError(f"topic {name!r}: key {key!r} is not a required value field")
    return TopicSpec(
        name=name,
        partitions=_positive_int(name, "partitions", raw["partitions"]),
        replication_factor=_positive_int(name, "replication_factor", raw["replication_factor"]),
        configs=configs,
        key=key,
        value=value,
        description=" ".join(str(raw.get("description") or "").split()),
    )


def load_topics(path: str | Path | None = None) -> Mapping[str, TopicSpec]:
    """Parse and validate the topics file; a read-only ``{name: TopicSpec}`` in file order."""
    p = find_topics_file(path)
    try:
        doc = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except yaml.YAMLError as e:
        raise TopicsError(f"{p}: not valid YAML: {e}") from e
    except TopicsError as e:
        raise TopicsError(f"{p}: {e}") from e
    if not isinstance(doc, Mapping) or doc.get("version") != 1:
        raise TopicsError(f"{p}: expected a mapping with 'version: 1'")
    raw_topics = doc.get("topics")
    if not isinstance(raw_topics, Mapping) or not raw_topics:
        raise TopicsError(f"{p}: 'topics' must be a non-empty mapping")
    try:
        specs = {name: _parse_topic(name, raw) for name, raw in raw_topics.items()}
    except TopicsError as e:
        raise TopicsError(f"{p}: {e}") from e
    return MappingProxyType(specs)


def _as_specs(specs: Mapping[str, TopicSpec] | Iterable[TopicSpec] | None) -> list[TopicSpec]:
    if specs is None:
        return list(load_topics().values())
    if isinstance(specs, Mapping):
        return list(specs.values())
    return list(specs)


def prefixed(
    specs: Mapping[str, TopicSpec] | Iterable[TopicSpec] | None, prefix: str
) -> dict[str, TopicSpec]:
    """``{logical name: spec under prefix + name}``; ``specs=None`` loads the topics file."""
    return {s.name: s.with_prefix(prefix) for s in _as_specs(specs)}


def topic_names(
    prefix: str = "", specs: Mapping[str, TopicSpec] | Iterable[TopicSpec] | None = None
) -> dict[str, str]:
    """``{logical name: actual name}``, e.g. ``topic_names("t1-")["clicks"] == "t1-clicks"``."""
    return {logical: s.name for logical, s in prefixed(specs, prefix).items()}


# --------------------------------------------------------------------------- creating


def _topic_errors(response: Any) -> list[tuple[str, int, str]]:
    out = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 and isinstance(entry[2], str) else ""
        out.append((name, code, message or ""))
    return out


async def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    """Partitions per topic that has a leader for every partition (others are omitted)."""
    ready: dict[str, int] = {}
    for t in await admin.describe_topics(names):
        parts = t.get("partitions") or []
        if (
            t.get("error_code") == 0
            and parts
            and all(p.get("error_code") == 0 and p.get("leader", -1) >= 0 for p in parts)
        ):
            ready[t["topic"]] = len(parts)
    return ready


async def topic_partitions(
    bootstrap: str,
    topic: str,
    *,
    timeout_s: float = 20.0,
    client_kwargs: Mapping[str, Any] | None = None,
) -> list[int]:
    """The partition ids of ``topic`` once every partition has a leader (a topic may be
    created moments after a process starts: it is polled until ``timeout_s``). Raises
    :class:`TopicsError` naming the topic (and ``coldstream topics create``) when it does
    not exist by then."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="coldstream-topics", **dict(client_kwargs or {})
    )
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            for t in await admin.describe_topics([topic]):
                parts = t.get("partitions") or []
                if (
                    t.get("error_code") == 0
                    and parts
                    and all(p.get("error_code") == 0 and p.get("leader", -1) >= 0 for p in parts)
                ):
                    return sorted(int(p["partition"]) for p in parts)
            if time.monotonic() > deadline:
                raise TopicsError(
                    f"topic {topic} does not exist on {bootstrap} (after {timeout_s:.0f} s); "
                    f"create the topics: coldstream topics create"
                )
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def create_topics(
    bootstrap: str,
    specs: Mapping[str, TopicSpec] | Iterable[TopicSpec] | None = None,
    *,
    replication_factor: int | None = None,
    prefix: str = "",
    check_existing: bool = True,
    timeout_s: float = 30.0,
    client_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet and wait until every partition has a leader.

    Idempotent: existing topics are left alone. Returns the names created by this call.

    :param bootstrap: ``host:port[,host:port]`` of any Kafka-protocol broker.
    :param specs: topics to create; ``None`` means every topic in ``kafka/topics.yaml``.
    :param replication_factor: override the file's value (1 for single-node brokers);
        ``min.insync.replicas`` is capped to it.
    :param prefix: prepended verbatim to every name (tests use a unique one per test).
    :param check_existing: raise :class:`TopicsError` when a topic already exists with a
        different partition count (Faust tables and keyed ordering depend on it).
    :param client_kwargs: extra ``AIOKafkaAdminClient`` arguments (e.g. TLS settings).
    """
    from aiokafka.admin import AIOKafkaAdminClient

    wanted = [s.with_prefix(prefix) for s in _as_specs(specs)]
    if not wanted:
        return []
    names = [s.name for s in wanted]
    deadline = time.monotonic() + timeout_s
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="coldstream-topics",
        request_timeout_ms=int(timeout_s * 1000),
        **dict(client_kwargs or {}),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        todo = [s for s in wanted if s.name not in existing]
        created: list[str] = []
        if todo:
            response = await admin.create_topics(
                [s.new_topic(replication_factor) for s in todo],
                timeout_ms=int(timeout_s * 1000),
            )
            failures = []
            for name, code, message in _topic_errors(response):
                if code == 0:
                    created.append(name)
                elif code != _ERR_TOPIC_ALREADY_EXISTS:  # created meanwhile by someone else
                    from aiokafka.errors import for_code

                    failures.append(f"{name}: {for_code(code).__name__} {message}".strip())
            if failures:
                raise TopicsError(f"could not create topics on {bootstrap}: {'; '.join(failures)}")
        while True:
            counts = await _partition_counts(admin, names)
            if len(counts) == len(names):
                break
            if time.monotonic() > deadline:
                missing = sorted(set(names) - set(counts))
                raise TopicsError(f"topics without leaders after {timeout_s} s: {missing}")
            await asyncio.sleep(0.1)
        if check_existing:
            wrong = [
                f"{s.name} has {counts[s.name]} partitions, topics.yaml says {s.partitions}"
                for s in wanted
                if counts[s.name] != s.partitions
            ]
            if wrong:
                raise TopicsError("existing topics disagree with topics.yaml: " + "; ".join(wrong))
        if created:
            log.info("created topics on %s: %s", bootstrap, ", ".join(created))
        return created
    finally:
        await admin.close()
