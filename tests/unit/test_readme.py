"""The README's Python examples are tests: each ```python block runs as written, in a
fresh process and an empty working directory (the model store it writes lands there)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.M | re.S)


def test_the_readme_has_python_examples():
    assert BLOCKS, "README.md lost its Python examples"


@pytest.mark.slow
@pytest.mark.parametrize("block", range(len(BLOCKS)))
def test_readme_example_runs_as_written(block: int, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLDSTREAM_TRAINER_PROGRESS": "false"}
    res = subprocess.run(
        [sys.executable, "-c", BLOCKS[block]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    if "trainer.fit(" in BLOCKS[block]:  # the default model store, in the working directory
        assert sorted(p.name for p in (tmp_path / "model-store").iterdir())[:1] == ["v000001"]
