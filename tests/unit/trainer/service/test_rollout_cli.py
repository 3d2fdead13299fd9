"""``coldstream rollout start|promote|abort|status`` against a real signed store, with the
records fed to a real worker-side ``ModelSwapper`` (no broker; the published path shares
``publish_records`` with ``coldstream promote``): the candidate sits beside the live model,
abort drops it everywhere and a replay of its update is refused even by a restarted
worker, promote makes it live without a second load."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry

from coldstream.cli import main
from coldstream.core.pointer import read_pointer
from devtools.checkpoints import make_checkpoint
from stream_app.control import ModelSwapper
from stream_app.metrics import Metrics
from stream_app.recommender import Recommender
from tests.unit.trainer.service.test_promote import env  # noqa: F401 - the key fixture
from trainer.service import rollout
from trainer.settings import get_settings


@pytest.fixture
def store(env, tmp_path):  # noqa: F811 - the fixture imported above
    store = tmp_path / "store"
    make_checkpoint(store, n_items=30, dim=8, text_dim=8, seed=1)
    make_checkpoint(store, n_items=30, dim=8, text_dim=8, seed=2)
    assert main(["keys", "sign", "1", "2"]) == 0
    assert main(["promote", "1", "--no-publish"]) == 0
    return store


def _worker(store):
    """A worker's recommender and swapper as at start: the pointer's model and seq."""
    keys = get_settings().signer().keyring
    ptr = read_pointer(store, keys)
    rec = Recommender.from_checkpoint(store / f"v{ptr.version:06d}", prefer_gpu_index=False)
    swapper = ModelSwapper(
        rec, store_root=store, keys=keys, served_seq=ptr.seq, metrics=Metrics(CollectorRegistry())
    )
    return rec, swapper


def test_start_then_abort(store, capsys):
    settings = get_settings().with_overrides(model_store=store)
    rec, swapper = _worker(store)
    r, update = rollout.start(settings, 2, share=0.25, publish=False)
    assert main(["rollout", "status"]) == 0
    assert "v2 as canary to 25.0% of users beside live v1" in capsys.readouterr().out
    assert main(["rollout", "start", "2", "--no-publish"]) == 2  # one at a time
    assert "is running" in capsys.readouterr().err
    assert asyncio.run(swapper.handle(update)).outcome == "ok"
    assert rec.candidate is not None and rec.candidate.share == 0.25 and rec.model.version == "1"
    assert main(["rollout", "abort", "--no-publish"]) == 0
    assert "abort; v1 is live" in capsys.readouterr().out
    assert rollout.running(store) is None
    rec2, restarted = _worker(store)  # a worker started after the abort
    assert restarted.handle_sync(update).outcome == "skipped" and rec2.candidate is None
    assert main(["rollout", "abort", "--no-publish"]) == 2
    assert "no rollout is running" in capsys.readouterr().err
    # the decision itself, on a worker that holds the candidate
    r3, update3 = rollout.start(settings, 2, share=0.25, publish=False, now=r.started_at + 60)
    assert asyncio.run(swapper.handle(update3)).outcome == "ok"
    assert rec.candidate.rollout_id == r3.rollout_id != r.rollout_id
    _, records = rollout.end(settings, "abort", publish=False)
    assert len(records) == 1 and json.loads(records[0])["decision"] == "manual_abort"
    assert asyncio.run(swapper.handle(records[0])).outcome == "ok"
    assert rec.candidate is None and rec.model.version == "1"
    assert asyncio.run(swapper.handle(update3)).outcome == "skipped"  # a replay: not again


def test_start_then_promote(store):
    settings = get_settings().with_overrides(model_store=store)
    rec, swapper = _worker(store)
    r, update = rollout.start(settings, 2, arm="shadow", publish=False)
    assert r.share is None and r.arm == "shadow"
    rec_restart, restarted = _worker(store)  # a worker restarted mid-rollout
    for w_rec, w in ((rec, swapper), (rec_restart, restarted)):
        assert w.handle_sync(update).outcome == "ok" and w_rec.candidate.arm == "shadow"
    cand = rec.candidate
    _, records = rollout.end(settings, "promote", publish=False)
    assert [json.loads(x).get("decision") for x in records] == ["manual_promote", None]
    for w_rec, w in ((rec, swapper), (rec_restart, restarted)):
        for x in records:
            assert w.handle_sync(x).outcome == "ok"
        assert w_rec.model.version == "2" and w_rec.candidate is None
    assert rec.model is cand.model  # the candidate's bundle, not a second load
    keys = get_settings().signer().keyring
    assert read_pointer(store, keys).version == 2


def test_a_bad_start_says_why(store, capsys):
    assert main(["rollout", "start", "1", "--no-publish"]) == 2
    assert "live model already" in capsys.readouterr().err
    assert main(["rollout", "start", "2", "--share", "1.5", "--no-publish"]) == 2
    assert "share" in capsys.readouterr().err
    assert main(["rollout", "start", "9", "--no-publish"]) == 2
    assert "no version 9" in capsys.readouterr().err
    assert rollout.running(store) is None


def test_a_rollout_superseded_by_another_promotion_ends_without_promoting(store):
    """The live model moved (another version promoted) while the canary ran: promoting the
    candidate now would undo that promotion on a stale comparison; it is aborted instead,
    and the pointer (already past the rollout) is left alone."""
    settings = get_settings().with_overrides(model_store=store)
    make_checkpoint(store, n_items=30, dim=8, text_dim=8, seed=3)
    assert main(["keys", "sign", "3"]) == 0
    r, _ = rollout.start(settings, 2, share=0.2, publish=False)
    assert main(["promote", "3", "--no-publish"]) == 0
    keys = get_settings().signer().keyring
    before = read_pointer(store, keys)
    assert (before.version, before.seq) == (3, r.seq)
    _, records = rollout.end(settings, "promote", publish=False)
    assert [json.loads(x)["decision"] for x in records] == ["manual_abort"]
    after = read_pointer(store, keys)
    assert (after.version, after.seq) == (3, before.seq) and rollout.running(store) is None
