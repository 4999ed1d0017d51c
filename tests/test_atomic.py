"""pipeline.io.atomic: outputs land with the mode a plain open() / mkdir() gives under the umask (0666 / 0777 & ~umask),
not tempfile's private 0600 / 0700, so that they stay readable on a shared cluster file system."""
import contextlib
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from conftest import venv_env

from pipeline.io import atomic

CASES = [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o027, 0o640, 0o750)]


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder) -> dict[str, int]:
    """Permission bits of `folder` and of everything under it, by path relative to `folder` ("." for itself)."""
    out = {".": stat.S_IMODE(folder.stat().st_mode)}
    for p in folder.rglob("*"):
        out[p.relative_to(folder).as_posix()] = stat.S_IMODE(p.lstat().st_mode)
    return out


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_umask_is_read_without_changing_it(mask, monkeypatch):
    with umask(mask):
        assert atomic.umask() == mask
        monkeypatch.setattr(atomic, "PROC_STATUS", "/nonexistent/status")  # no /proc: the os.umask round trip
        assert atomic.umask() == mask
        assert os.umask(mask) == mask  # left as it was


@pytest.mark.parametrize("mask,file_mode,dir_mode", CASES)
def test_files_and_folders_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    with umask(mask):
        atomic.write_text(tmp_path / "a.txt", "a")
        atomic.write_json(tmp_path / "sub" / "b.json", {"b": 1})  # sub/ made by mkdir(parents=True)
        atomic.save_npz(tmp_path / "c.npz", x=np.arange(3))
        with atomic.atomic_path(tmp_path / "d.bin") as tmp:
            tmp.unlink()  # a writer that replaces the temporary file still gets the mode
            tmp.write_bytes(b"d")
        with atomic.atomic_dir(tmp_path / "out") as tmp:
            atomic.write_json(tmp / "m.json", {})
            atomic.save_npz(tmp / "e.npz", x=np.zeros(2))
            (tmp / "plain").mkdir()
            (tmp / "plain" / "f.txt").write_text("f")
    got = modes(tmp_path)
    del got["."]  # pytest's folder
    assert got == {"a.txt": file_mode, "sub": dir_mode, "sub/b.json": file_mode, "c.npz": file_mode, "d.bin": file_mode,
                   "out": dir_mode, "out/m.json": file_mode, "out/e.npz": file_mode, "out/plain": dir_mode,
                   "out/plain/f.txt": file_mode}


def test_replaced_folder_gets_the_mode_of_the_new_one(tmp_path):
    with umask(0o077):
        with atomic.atomic_dir(tmp_path / "out") as tmp:
            (tmp / "old.txt").write_text("old")
    with umask(0o022):
        with atomic.atomic_dir(tmp_path / "out") as tmp:
            atomic.write_text(tmp / "new.txt", "new")
    assert modes(tmp_path / "out") == {".": 0o755, "new.txt": 0o644}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or .old leftovers


def test_failed_block_leaves_nothing(tmp_path):
    with umask(0o022), pytest.raises(RuntimeError):
        with atomic.atomic_dir(tmp_path / "out") as tmp:
            atomic.write_text(tmp / "x.txt", "x")
            raise RuntimeError("stage failed")
    assert list(tmp_path.iterdir()) == []


def test_prepare_stage_outputs_are_group_readable(tmp_path):
    """The real download and prepare stages, run as DVC runs them, under umask 022."""
    env = venv_env({"PIPELINE_TRACKING": "off"})
    with umask(0o022):  # inherited by the stage processes
        for stage in ("download", "prepare"):
            r = subprocess.run([sys.executable, "-m", "pipeline", stage, "--dataset", "digits", "--root", str(tmp_path)],
                               capture_output=True, text=True, env=env, timeout=300)
            assert r.returncode == 0, r.stderr
    got = modes(tmp_path / "data")
    assert {"raw/digits/digits.npz", "prepared/digits/manifest.json", "prepared/digits/train.npz"} <= set(got), got
    assert {k: oct(v) for k, v in got.items() if v != (0o755 if (tmp_path / "data" / k).is_dir() else 0o644)} == {}
