"""``coldstream demo`` on a fresh store is a cold-start demo: it trains its bootstrap model
without the users it then replays (the store's demo-holdout.json lists them), and it shows,
for those new users, whether each next event was among the previous recommendations and the
running hit rate against popularity. Real Tansu, real worker, real MiniLM teacher."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.tansu, pytest.mark.slow]


def _demo(store, *extra: str) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "coldstream", "demo", "--events", "300", "--rate", "300",
         "--no-live", "--model-store", str(store), *extra],
        capture_output=True,
        text=True,
        timeout=2400,
        env={"COLDSTREAM_TRAINER_PROGRESS": "false", **_env()},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return " ".join(res.stdout.split())


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("COLDSTREAM_")}


def test_the_demo_replays_users_its_model_never_saw_and_scores_itself(tmp_path):
    store = tmp_path / "store"
    out = _demo(store)
    assert "training a quick bootstrap model on MovieLens-100K without the 94 users" in out
    held = set(json.loads((store / "demo-holdout.json").read_text())["held_out_users"])
    assert len(held) == 94
    m = re.search(r"new users \(never seen by the model\) (\d+)", out)
    assert m and int(m.group(1)) > 0
    rates = re.search(
        r"next event among the previous top-10: coldstream ([\d.]+)%, popularity ([\d.]+)% "
        r"\(n=(\d+) next events\)",
        out,
    )
    assert rates, out[-2000:]
    judged = int(rates.group(3))
    assert judged == 300 - int(m.group(1))  # every event after a user's first is judged
    assert "in prev. recs" in out and ("hit" in out or "no" in out)
    # the rows of the table are the held-out users only
    rows = re.findall(r"│ (\d+) +│ +\d+ │", out)
    assert rows and set(rows) <= held
    again = _demo(store)  # the second run reuses the demo's model: no training, no warning
    assert "training a quick bootstrap" not in again and "not trained by the demo" not in again
