"""Operator commands of every install: ``coldstream topics create``, ``coldstream topics
describe`` and ``coldstream settings worker|trainer`` (registered by :mod:`coldstream.cli`
whatever else is installed; ``settings`` lists the processes whose package is there).

Both read the topics of ``kafka/topics.yaml`` (:mod:`coldstream.core.topics`) and the shared
settings of every process (:class:`coldstream.core.settings.SharedSettings`: broker, topic
prefix, TLS/SASL), so the same env vars that configure the worker and the trainer point
them at the cluster. This module imports the kernel only (an import-linter contract).

``create`` is idempotent: existing topics are left alone (a partition count that differs
from ``topics.yaml`` is an error). The replication factor is the file's, capped at the
number of brokers (one broker: 1, with ``min.insync.replicas`` capped with it).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from coldstream.core.errors import BrokerError, ExitCode, TopicsError, UsageError
from coldstream.core.preflight import check_broker, quiet_kafka_logs
from coldstream.core.settings import SharedSettings
from coldstream.core.usage import HelpFormatter, load_settings

__all__ = ["register", "register_settings"]

SHARED_FLAGS = ("bootstrap", "topic_prefix")


def register(sub: Any) -> None:
    """Add ``topics create``, ``topics describe`` and ``models``."""
    register_models(sub)
    p = sub.add_parser(
        "topics",
        help="create or describe the Kafka topics of kafka/topics.yaml",
        description="Create (idempotent) or describe the coldstream topics on a cluster; "
        "broker and security come from the shared settings (COLDSTREAM_BOOTSTRAP, "
        "COLDSTREAM_SECURITY_PROTOCOL, COLDSTREAM_SSL_*, COLDSTREAM_SASL_*).",
        formatter_class=HelpFormatter,
    )
    tsub = p.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    create = tsub.add_parser(
        "create",
        help="create the topics that do not exist yet and wait for their leaders",
        description="Create every topic of kafka/topics.yaml that does not exist yet (existing "
        "ones are left alone) and wait until each partition has a leader.",
        formatter_class=HelpFormatter,
    )
    describe = tsub.add_parser(
        "describe",
        help="list the topics, their partitions and whether they match topics.yaml",
        description="Compare the cluster with kafka/topics.yaml; exit 0 when every topic exists "
        "with its declared partitions, else 6.",
        formatter_class=HelpFormatter,
    )
    for q in (create, describe):
        _common(q)
    create.add_argument(
        "--replication-factor",
        type=int,
        default=None,
        help="replication factor (default: topics.yaml's, capped at the cluster's broker count)",
    )
    create.add_argument(
        "--timeout-s", type=float, default=30.0, help="how long to wait for partition leaders"
    )
    create.set_defaults(func=cmd_create)
    describe.set_defaults(func=cmd_describe)


def register_models(sub: Any) -> None:
    """Add ``models``: the versions of a model store."""
    p = sub.add_parser(
        "models",
        help="list the versions in a model store: created, metrics, signed, which one is CURRENT",
        description="One line per checkpoint of the model store: version, creation time, its "
        "metrics, whether it is signed (and by a key this environment trusts: "
        "COLDSTREAM_VERIFY_KEYS / _FILE), and which one CURRENT.json names. Nothing is loaded.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model-store",
        type=Path,
        default=None,
        help="model store root (default: model-store; env COLDSTREAM_MODEL_STORE)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per version")
    p.set_defaults(func=cmd_models)


def register_settings(sub: Any, classes: Mapping[str, Callable[[], type[SharedSettings]]]) -> None:
    """Add ``settings NAME``: the settings table of each process in ``classes`` (name ->
    a function returning its settings class, imported only when asked for)."""
    if not classes:
        return
    p = sub.add_parser(
        "settings",
        help="print a process's settings: env var, default, meaning (and the value in force)",
        description="Every setting of one process as a Markdown table: its environment "
        "variable, its default and its meaning; --values adds the value this environment "
        "gives it (secrets shown as ***).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("process", choices=sorted(classes), help="whose settings")
    p.add_argument(
        "--values", action="store_true", help="add a column with the value in force here"
    )

    def run(args: argparse.Namespace) -> int:
        cls = classes[args.process]()
        current = load_settings(cls) if args.values else None
        print_settings(cls, current)
        return ExitCode.OK

    p.set_defaults(func=run)


def print_settings(cls: type[SharedSettings], current: SharedSettings | None = None) -> None:
    """The settings table of ``cls`` (Markdown); with ``current``, its values too."""
    from pydantic import SecretStr

    from coldstream.core.settings import settings_table

    head = "| env var | default | meaning |"
    if current is not None:
        head = "| env var | default | value here | meaning |"
    print(head)
    print("|---" * head.count(" | ") + "|---|")
    for name, env, default, doc in settings_table(cls):
        if current is None:
            print(f"| `{env}` | `{default}` | {doc} |")
            continue
        value = getattr(current, name)
        shown = "***" if isinstance(value, SecretStr) else ("" if value is None else str(value))
        print(f"| `{env}` | `{default}` | `{shown}` | {doc} |")


def _common(p: argparse.ArgumentParser) -> None:
    d = SharedSettings.model_fields
    p.add_argument(
        "--bootstrap",
        default=None,
        help=f"brokers, host:port[,host:port] (default: {d['bootstrap'].default}; "
        f"env COLDSTREAM_BOOTSTRAP)",
    )
    p.add_argument(
        "--topic-prefix",
        default=None,
        help="prefix of every topic name (default: none; env COLDSTREAM_TOPIC_PREFIX)",
    )
    p.add_argument(
        "--topics-file",
        type=Path,
        default=None,
        help="topics definition (default: kafka/topics.yaml of the source tree or the install)",
    )


def _settings(args: argparse.Namespace) -> SharedSettings:
    return load_settings(
        SharedSettings, flags=SHARED_FLAGS, **{n: getattr(args, n) for n in SHARED_FLAGS}
    )


def _specs(args: argparse.Namespace) -> Mapping[str, Any]:
    from coldstream.core.topics import TopicsError, load_topics

    try:
        return load_topics(args.topics_file)
    except TopicsError as e:
        raise UsageError(f"{e} (flag --topics-file)") from None


async def _cluster(s: SharedSettings) -> tuple[int, dict[str, int]]:
    """(brokers, {topic: partitions}) of the cluster."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=s.bootstrap,
        client_id="coldstream-admin",
        request_timeout_ms=10_000,
        **s.kafka_client_kwargs(),
    )
    try:
        await asyncio.wait_for(admin.start(), 10)
        cluster = await admin.describe_cluster()
        names = await admin.list_topics()
        parts = {
            t["topic"]: len(t.get("partitions") or [])
            for t in await admin.describe_topics(names)
            if t.get("error_code") == 0
        }
        return len(cluster.get("brokers") or []), parts
    finally:
        await admin.close()


def _connect(s: SharedSettings) -> tuple[int, dict[str, int]]:
    check_broker(s.bootstrap, client_kwargs=s.kafka_client_kwargs())  # one line when unreachable
    try:
        with quiet_kafka_logs():
            return asyncio.run(_cluster(s))
    except Exception as e:  # noqa: BLE001 - reported as one line
        detail = (str(e) or type(e).__name__).splitlines()[0][:160]
        raise BrokerError(
            f"no broker answers at {s.bootstrap}: {detail}; start one or point env "
            f"COLDSTREAM_BOOTSTRAP / flag --bootstrap at it"
        ) from None


def cmd_create(args: argparse.Namespace) -> int:
    """``coldstream topics create``."""
    from coldstream.core.topics import TopicsError, create_topics

    s = _settings(args)
    specs = _specs(args)
    if args.replication_factor is not None and args.replication_factor < 1:
        raise UsageError(f"--replication-factor {args.replication_factor}: must be at least 1")
    brokers, _ = _connect(s)
    declared = max(spec.replication_factor for spec in specs.values())
    rf = args.replication_factor
    if rf is None and brokers < declared:
        rf = max(1, brokers)
        print(
            f"replication factor {rf}: the cluster has {brokers} broker(s), topics.yaml asks "
            f"for up to {declared}"
        )
    try:
        with quiet_kafka_logs():
            created = asyncio.run(
                create_topics(
                    s.bootstrap,
                    specs,
                    replication_factor=rf,
                    prefix=s.topic_prefix,
                    timeout_s=args.timeout_s,
                    client_kwargs=s.kafka_client_kwargs(),
                )
            )
    except TopicsError as e:
        raise UsageError(str(e)) from None
    names = [spec.with_prefix(s.topic_prefix).name for spec in specs.values()]
    existing = [n for n in names if n not in created]
    print(f"created on {s.bootstrap}: {', '.join(created) or 'none'}")
    print(f"already there: {', '.join(existing) or 'none'}")
    return ExitCode.OK


def model_rows(store: Path, keyring: Any) -> list[dict[str, Any]]:
    """What ``coldstream models`` shows of each version of ``store`` (files read, nothing
    loaded): version, created_at, metrics, signed_by, trusted, current."""
    import json

    from coldstream.core.checkpoint import MANIFEST, SIGNATURE, list_versions, version_path
    from coldstream.core.pointer import PointerError, peek_pointer, read_pointer

    if not store.is_dir():
        what = "is not a directory" if store.exists() else "does not exist"
        raise UsageError(
            f"model store {store} {what} (env COLDSTREAM_MODEL_STORE, flag --model-store)"
        )
    pointer = peek_pointer(store)
    try:
        verified = read_pointer(store, keyring) is not None
    except PointerError:
        verified = False

    def read(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    rows = []
    for v in list_versions(store):
        path = version_path(store, v)
        manifest, metrics, sig = (
            read(path / MANIFEST),
            read(path / "metrics.json"),
            read(path / SIGNATURE),
        )
        key = sig.get("key_id") if sig else None
        shown = {
            k: val
            for k, val in metrics.items()
            if isinstance(val, int | float) and not isinstance(val, bool)
        }
        rows.append(
            {
                "version": v,
                "created_at": manifest.get("created_at"),
                "metrics": shown,
                "signed_by": key,
                "trusted": bool(key) and key in keyring.key_ids,
                "current": pointer is not None and pointer.version == v,
                "pointer_verified": verified
                if pointer is not None and pointer.version == v
                else None,
                "complete": bool(manifest),
            }
        )
    return rows


def cmd_models(args: argparse.Namespace) -> int:
    """``coldstream models``."""
    import json
    import time as _time

    from coldstream.core.pointer import peek_pointer

    s = load_settings(SharedSettings, flags=("model_store",), model_store=args.model_store)
    store = Path(s.model_store)
    rows = model_rows(store, s.verify_keyring())
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return ExitCode.OK
    pointer = peek_pointer(store)
    if not rows:
        print(f"{store}: no versions (train one: coldstream train --model-store {store})")
        return ExitCode.OK
    print(
        f"{store}: {len(rows)} version(s); CURRENT.json: "
        + (
            f"v{pointer.version} (seq {pointer.seq})"
            if pointer
            else "none (workers serve the newest verified one)"
        )
    )
    for row in rows:
        created = (
            _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(row["created_at"]))
            if isinstance(row["created_at"], int | float)
            else "?"
        )
        if row["signed_by"] is None:
            signed = "unsigned"
        else:
            signed = f"signed {row['signed_by']}" + (
                "" if row["trusted"] else " (key not in COLDSTREAM_VERIFY_KEYS)"
            )
        metrics = ", ".join(f"{k} {val:.4g}" for k, val in list(row["metrics"].items())[:4]) or "-"
        mark = "* " if row["current"] else "  "
        tail = "" if row["complete"] else "  (incomplete: no manifest)"
        print(f"{mark}v{row['version']:06d}  {created}  {signed}  {metrics}{tail}")
    return ExitCode.OK


def cmd_describe(args: argparse.Namespace) -> int:
    """``coldstream topics describe``."""
    s = _settings(args)
    specs = _specs(args)
    brokers, parts = _connect(s)
    rows = []
    wrong = []
    for spec in specs.values():
        name = spec.with_prefix(s.topic_prefix).name
        have = parts.get(name)
        if have is None:
            state = "missing"
        elif have != spec.partitions:
            state = f"{have} partitions, topics.yaml says {spec.partitions}"
        else:
            state = "ok"
        if state != "ok":
            wrong.append(name)
        key = spec.key or "-"
        rows.append((name, str(spec.partitions), "-" if have is None else str(have), key, state))
    print(f"{s.bootstrap}: {brokers} broker(s)")
    header = ("topic", "declared", "partitions", "key", "state")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if wrong:
        opt = f" --topic-prefix {s.topic_prefix}" if s.topic_prefix else ""
        raise TopicsError(
            f"{len(wrong)} topic(s) missing or different: {', '.join(wrong)}; "
            f"create them with: coldstream topics create --bootstrap {s.bootstrap}{opt}"
        )
    return ExitCode.OK
