"""Retrain and promote without tricks, on the embedded Tansu broker: a worker serves a signed
v1; ``coldstream train`` with the key writes v2 (which moves ``CURRENT.json`` but tells no
running worker); ``coldstream models`` lists both, v2 marked current; ``coldstream promote 2``
publishes the signed update and the running worker swaps *forward* to v2, no rollback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coldstream.core.signing import Signer
from devtools.checkpoints import make_checkpoint
from devtools.processes import WorkerProcess
from devtools.waiting import wait_until
from tests.cli_errors import run_cli

pytestmark = pytest.mark.tansu


def test_promote_makes_a_running_worker_swap_forward(
    tansu_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    signer = Signer.generate()
    priv, pub = signer.write(tmp_path / "keys")
    store = tmp_path / "store"
    make_checkpoint(store, signer=signer, seed=1)  # v1, signed, CURRENT -> v1
    env = {
        "COLDSTREAM_BOOTSTRAP": tansu_bootstrap,
        "COLDSTREAM_TOPIC_PREFIX": topic_prefix,
        "COLDSTREAM_MODEL_STORE": str(store),
        "COLDSTREAM_TRAINER_SIGNING_KEY_FILE": str(priv),
        "COLDSTREAM_VERIFY_KEYS_FILE": str(pub),
    }
    created = run_cli(["topics", "create"], env, cwd=tmp_path)
    assert created.code == 0, created.stderr
    with WorkerProcess(
        log_path=tmp_path / "worker.log",
        bootstrap=tansu_bootstrap,
        topic_prefix=topic_prefix,
        model_store=store,
        env={**run_env(), "COLDSTREAM_VERIFY_KEYS_FILE": str(pub)},
        profile="dev",
        app_id=f"{topic_prefix}app",
        # idempotent producer left on: the worker finds out that Tansu cannot, and says so
    ) as worker:
        assert json.loads(worker.get_text("/ready"))["model_version"] == "1"
        make_checkpoint(store, seed=2, point=False)  # v2, written without a key: refused
        refused = run_cli(["promote", "2"], env, cwd=tmp_path)
        assert refused.code == 2 and "coldstream keys sign 2" in refused.stderr
        signed = run_cli(["keys", "sign", "2"], env, cwd=tmp_path)
        assert signed.code == 0, signed.stderr
        listed = run_cli(["models"], env, cwd=tmp_path)
        assert listed.code == 0, listed.stderr
        rows = [ln for ln in listed.stdout.splitlines() if ln.lstrip("* ").startswith("v0")]
        assert rows[0].startswith("* v000001") and f"signed {signer.key_id}" in rows[0]
        assert rows[1].startswith("  v000002"), listed.stdout
        done = run_cli(["promote", "2"], env, cwd=tmp_path)
        assert done.code == 0, done.stderr
        assert "CURRENT.json: v2 seq 2 (was v1 (seq 1)); model-updates record published" in (
            done.stdout
        )
        wait_until(
            lambda: json.loads(worker.get_text("/ready"))["model_version"] == "2",
            timeout_s=30,
            what="the worker to swap to v2",
        )
        metrics = worker.get_text("/metrics")
        assert 'coldstream_model_swaps_total{outcome="ok"} 1.0' in metrics
        after = run_cli(["models", "--json"], env, cwd=tmp_path)
        current = [json.loads(ln) for ln in after.stdout.splitlines()]
        assert [r["version"] for r in current if r["current"]] == [2]
    log = (tmp_path / "worker.log").read_text()
    assert "cannot do idempotent production" in log and "Traceback" not in log
    assert "\x1b[" not in log  # no terminal control codes in a log file


def run_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("COLDSTREAM_")}
