"""The first hour against real brokers, through the real CLI (subprocesses):

* the broker cases of the error table (``tests/cli_errors.py``): a Kafka without the topics
  (worker, trainer), a corrupt checkpoint -- one line, its exit code, no traceback;
* ``coldstream topics create`` / ``describe`` on Apache Kafka;
* ``coldstream send`` (validated, then sent) and ``coldstream tail`` (recommendations with
  titles, the DLQ) against a running worker, on Apache Kafka and on the embedded Tansu;
* which third-party client works where: kcat round-trips on Apache Kafka and cannot talk to
  Tansu (README, "Send your own event", says so because of this test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from coldstream.core.topics import load_topics, topic_names
from devtools.checkpoints import make_checkpoint
from devtools.kafka_io import produce, read_until, run_coro
from devtools.processes import WorkerProcess
from tests.cli_errors import CASES, NO_KEYS, error_lines, run_cli

BROKER_CASES = {c.name: c for c in CASES if c.needs == "kafka"}
N_ITEMS = 40


def _worker_topics(prefix: str) -> list[str]:
    return [
        n
        for t, n in topic_names(prefix).items()
        if t not in ("items", "model-updates", "item-vectors")
    ]


def _check_case(name: str, values: dict[str, str], cwd: Path) -> str:
    case = BROKER_CASES[name]
    argv = [a.format(**values) for a in case.argv]
    res = run_cli(argv, dict(case.env), cwd=cwd, timeout_s=180)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
    lines = error_lines(res.stderr)
    assert len(lines) == 1, res.stderr[-3000:]
    assert res.code == case.code, (res.code, res.stderr[-2000:])
    return lines[0]


def test_worker_and_trainer_on_a_kafka_without_topics(kafka_bootstrap, topic_prefix, tmp_path):
    names = topic_names(topic_prefix)
    trainer_needs = (
        "clicks",
        "purchases",
        "items",
        "model-updates",
        "item-vectors",
        "recommendations",  # the rollout judge in the trainer
        "forget-requests",
    )
    values = {
        "bootstrap": kafka_bootstrap,
        "prefix": topic_prefix,
        "missing": ", ".join(
            n for t, n in names.items() if t != "items"
        ),  # the worker: all but items (hot swap on)
        "missing_trainer": ", ".join(names[t] for t in trainer_needs),
        "tmp": str(tmp_path),
    }
    for name in ("topics_missing_worker", "topics_missing_trainer"):
        line = _check_case(name, values, tmp_path)
        assert line == BROKER_CASES[name].message.format(**values)


def test_a_corrupt_checkpoint_is_one_line(kafka_bootstrap, topic_prefix, make_topics, tmp_path):
    make_topics(kafka_bootstrap, topic_prefix)
    path = make_checkpoint(tmp_path / "store", n_items=N_ITEMS)
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: the manifest's sha256 no longer matches
    weights.write_bytes(bytes(data))
    values = {"bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tmp": str(tmp_path)}
    line = _check_case("corrupt_checkpoint", values, tmp_path)
    assert line.startswith("coldstream worker: error: ")
    assert "v000001" in line and "model store" in line, line  # names what was refused


def test_topics_create_then_describe(kafka_bootstrap, topic_prefix, delete_topics_after, tmp_path):
    names = topic_names(topic_prefix)
    delete_topics_after(kafka_bootstrap, names.values())
    args = ["--bootstrap", kafka_bootstrap, "--topic-prefix", topic_prefix]
    res = run_cli(["topics", "describe", *args], {}, cwd=tmp_path)
    assert res.code == 6 and f"{len(names)} topic(s) missing" in res.stderr
    res = run_cli(["topics", "create", *args], {}, cwd=tmp_path)
    assert res.code == 0, res.stderr
    assert f"created on {kafka_bootstrap}: {', '.join(names.values())}" in res.stdout
    assert "replication factor 1" in res.stdout  # one broker: capped, said so
    again = run_cli(["topics", "create", *args], {}, cwd=tmp_path)
    assert again.code == 0 and "created on" in again.stdout and ": none" in again.stdout
    res = run_cli(["topics", "describe", *args], {}, cwd=tmp_path)
    assert res.code == 0, res.stderr
    specs = load_topics()
    for logical, name in names.items():
        row = next(ln for ln in res.stdout.splitlines() if ln.startswith(name + " "))
        assert row.split()[1:3] == [str(specs[logical].partitions)] * 2 and row.endswith("ok")


def _start_worker(
    bootstrap: str, prefix: str, tmp_path: Path, env: dict | None = None, **options: object
) -> WorkerProcess:
    store = tmp_path / "store"
    make_checkpoint(store, n_items=N_ITEMS, titles=[f"Film {i}" for i in range(N_ITEMS)])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLDSTREAM_")}
    worker = WorkerProcess(
        log_path=tmp_path / "worker.log",
        env={**clean, **(NO_KEYS if env is None else env)},
        bootstrap=bootstrap,
        topic_prefix=prefix,
        app_id=prefix + "app",
        model_store=store,
        threads=1,
        ready_timeout_s=90,
        **options,
    )
    worker.start()
    return worker


def _send_and_tail(bootstrap: str, prefix: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    ids = json.loads((next(store.glob("v*")) / "items.json").read_text())["ids"]
    base = ["--bootstrap", bootstrap, "--topic-prefix", prefix, "--model-store", str(store)]
    sent = run_cli(
        ["send", "--user", "alice", "--item", ids[3], "--wait", "30", "--json", *base], {}, tmp_path
    )
    assert sent.code == 0, sent.stdout + sent.stderr
    first, answer = sent.stdout.strip().splitlines()
    assert first.startswith(f"sent {prefix}clicks[") and "user=alice" in first
    rec = json.loads(answer)
    assert rec["user_id"] == "alice" and len(rec["items"]) == 10 and rec["cold_start"] is True
    # an unknown item: sent, with a warning; it is answered from the popularity fallback
    unknown = run_cli(
        ["send", "--user", "bob", "--item", "no-such-film", "--wait", "30", *base], {}, tmp_path
    )
    assert unknown.code == 0 and "is not in the catalogue" in unknown.stderr
    assert "[cold, popular]" in unknown.stdout
    # a bad record written by someone else shows in the DLQ
    run_coro(produce(bootstrap, [(f"{prefix}clicks", b"carol", b'{"user_id": "carol"}')]))
    tail = run_cli(
        ["tail", "--from-beginning", "--count", "2", "--timeout-s", "30", *base], {}, tmp_path
    )
    assert tail.code == 0, tail.stderr
    lines = sorted(tail.stdout.strip().splitlines())  # two users: two partitions, any order
    assert len(lines) == 2, lines
    assert lines[0].startswith("user alice <- v1 [cold]: Film ") and "; " in lines[0]
    assert lines[1].startswith("user bob <- v1 [cold, popular]: ")
    dlq = run_cli(
        ["tail", "dlq", "--from-beginning", "--count", "1", "--timeout-s", "30", *base],
        {},
        tmp_path,
    )
    assert dlq.code == 0, dlq.stderr
    assert dlq.stdout.startswith("clicks[") and "missing_field: event_id is required" in dlq.stdout


def test_send_and_tail_on_kafka(kafka_bootstrap, topic_prefix, make_topics, tmp_path):
    make_topics(kafka_bootstrap, topic_prefix)
    worker = _start_worker(kafka_bootstrap, topic_prefix, tmp_path)
    try:
        _send_and_tail(kafka_bootstrap, topic_prefix, tmp_path)
    finally:
        worker.stop()
    log = worker.log_path.read_text()
    assert f"coldstream worker: model v1; web http://127.0.0.1:{worker.port} (" in log
    assert "no model-update verification keys" not in log  # hot swap is off here


def test_the_worker_warns_when_no_verification_key_is_set(
    kafka_bootstrap, topic_prefix, make_topics, tmp_path
):
    make_topics(kafka_bootstrap, topic_prefix)
    worker = _start_worker(
        kafka_bootstrap,
        topic_prefix,
        tmp_path,
        env={"COLDSTREAM_ALLOW_UNSIGNED_CHECKPOINTS": "true"},  # hot swap on, no keys
    )
    worker.stop()
    log = worker.log_path.read_text()
    assert (
        "coldstream worker: warning: no model-update verification keys (COLDSTREAM_VERIFY_KEYS / "
        "COLDSTREAM_VERIFY_KEYS_FILE unset): every hot swap will be refused"
    ) in log


@pytest.mark.tansu
def test_send_and_tail_on_tansu(tansu_bootstrap, topic_prefix, make_topics, tmp_path):
    make_topics(tansu_bootstrap, topic_prefix)
    worker = _start_worker(
        tansu_bootstrap, topic_prefix, tmp_path, profile="dev", idempotent_producer=False
    )
    try:
        _send_and_tail(tansu_bootstrap, topic_prefix, tmp_path)
    finally:
        worker.stop()


def _kcat() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    assert path, "kcat is not installed (apt-get install kcat)"
    return path


def test_kcat_works_with_apache_kafka(kafka_bootstrap, topic_prefix, make_topics):
    topics = make_topics(kafka_bootstrap, topic_prefix, names=["clicks"])
    event = '{"event_id":"k1","user_id":"u1","item_id":"3","ts":1700000000}'
    put = subprocess.run(
        [_kcat(), "-b", kafka_bootstrap, "-P", "-t", topics["clicks"], "-K:"],
        input=f"u1:{event}\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert put.returncode == 0, put.stderr
    got = run_coro(read_until(kafka_bootstrap, [topics["clicks"]], count=1, timeout_s=30))
    assert [(r.key, r.value) for r in got] == [(b"u1", event.encode())]
    back = subprocess.run(
        [
            _kcat(),
            "-b",
            kafka_bootstrap,
            "-C",
            "-t",
            topics["clicks"],
            "-o",
            "beginning",
            "-e",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert back.returncode == 0 and back.stdout.strip() == event, back.stderr


@pytest.mark.tansu
def test_kcat_cannot_talk_to_tansu(tansu_bootstrap, topic_prefix, make_topics):
    """librdkafka's ApiVersion handshake fails against the embedded Tansu: use coldstream
    send / tail there (aiokafka), never kcat."""
    topics = make_topics(tansu_bootstrap, topic_prefix, names=["clicks"])
    res = subprocess.run(
        [_kcat(), "-b", tansu_bootstrap, "-L", "-t", topics["clicks"], "-m", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0 or "ERROR" in res.stderr, res.stdout
    assert "ApiVersionRequest failed" in res.stderr, res.stderr[-2000:]
