"""The checkpoint pre-check (`torch_file_problem`) reads a bounded amount of pickle: a deflate bomb or a pickle opcode
declaring a 4 GB string is refused quickly in little memory, and real checkpoints (zip and legacy) still pass."""
import json
import lzma
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT, venv_env

from pipeline.models.checkpoint import MAX_PICKLE_BYTES, torch_file_problem

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"
GB4 = 4 << 30


def _zip(path: Path, members: dict, compress=zipfile.ZIP_STORED) -> Path:
    """A zip laid out like torch.save's (`archive/data.pkl`, ...); a member given as (chunk, count) is streamed."""
    with zipfile.ZipFile(path, "w", compression=compress, compresslevel=9 if compress == zipfile.ZIP_DEFLATED else None) as z:
        for name, data in members.items():
            with z.open(name, "w", force_zip64=True) as w:
                for chunk in ([data] if isinstance(data, bytes) else [data[0]] * data[1]):
                    w.write(chunk)
    return path


def _declare_size(path: Path, member: str, size: int) -> None:
    """Rewrite the uncompressed size that the local header and the central directory declare for `member` (a crafted
    header: the inflated stream is much longer than declared)."""
    b = bytearray(path.read_bytes())
    name = member.encode()
    for sig, name_at, size_at in ((b"PK\x03\x04", 30, 22), (b"PK\x01\x02", 46, 24)):
        at = b.find(sig)
        while at >= 0 and bytes(b[at + name_at:at + name_at + len(name)]) != name:
            at = b.find(sig, at + 1)
        assert at >= 0, (sig, member)
        if b[at + size_at:at + size_at + 4] == b"\xff\xff\xff\xff":  # zip64: the size is in the extra field
            extra = at + name_at + len(name)
            assert b[extra:extra + 2] == b"\x01\x00"
            b[extra + 4:extra + 12] = size.to_bytes(8, "little")
        else:
            b[at + size_at:at + size_at + 4] = size.to_bytes(4, "little")
    path.write_bytes(bytes(b))


def _legacy(path: Path, second: bytes) -> Path:
    """The legacy layout: the pickle of torch's magic number, then `second` (a crafted pickle)."""
    import pickle

    path.write_bytes(pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2) + second)
    return path


BOMB_SIZE = 200 << 20  # inflates to 200 MB; about 200 KB on disk
HUGE_STR8 = b"\x80\x04\x8d" + GB4.to_bytes(8, "little") + b"x" * 64 + b"."  # BINUNICODE8 declaring 4 GB
HUGE_BYTES8 = b"\x80\x04\x8e" + (1 << 62).to_bytes(8, "little") + b"x" * 64 + b"."  # BINBYTES8 declaring 2**62 bytes
HUGE_STR4 = b"\x80\x02X" + (GB4 - 1).to_bytes(4, "little") + b"x" * 64 + b"."  # BINUNICODE declaring 4 GB - 1


@pytest.fixture(scope="module")
def crafted(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("crafted")
    nones = (b"N" * (1 << 20), BOMB_SIZE >> 20)  # a pickle that is only NONE opcodes: genops would walk all of it
    files = {
        "deflate bomb": _zip(d / "bomb.pt", {"archive/data.pkl": nones, "archive/version": b"3\n"},
                             zipfile.ZIP_DEFLATED),
        "deflate bomb, size declared small": _zip(d / "bomb_small.pt", {"archive/data.pkl": nones}, zipfile.ZIP_DEFLATED),
        "zip: BINUNICODE8 of 4 GB": _zip(d / "str8.pt", {"archive/data.pkl": HUGE_STR8}),
        "zip: BINBYTES8 of 2**62 bytes": _zip(d / "bytes8.pt", {"archive/data.pkl": HUGE_BYTES8}, zipfile.ZIP_DEFLATED),
        "zip: BINUNICODE of 4 GB": _zip(d / "str4.pt", {"archive/data.pkl": HUGE_STR4}),
        "legacy: BINUNICODE8 of 4 GB": _legacy(d / "legacy8.pt", HUGE_STR8),
        "legacy: BINBYTES8 of 2**62 bytes": _legacy(d / "legacy_bytes8.pt", HUGE_BYTES8),
        "legacy: BINUNICODE of 4 GB": _legacy(d / "legacy4.pt", HUGE_STR4),
    }
    _declare_size(files["deflate bomb, size declared small"], "archive/data.pkl", 4096)
    return files


def test_crafted_files_are_small_on_disk(crafted):
    for what, f in crafted.items():
        assert f.stat().st_size < 2 << 20, (what, f.stat().st_size)
    with zipfile.ZipFile(crafted["deflate bomb"]) as z:
        assert z.getinfo("archive/data.pkl").file_size == BOMB_SIZE


def test_crafted_files_refused_quickly_in_bounded_memory(crafted):
    """Each crafted file in a fresh process: a problem is returned, in under 2 s each, and the peak resident memory
    grows by less than 100 MB over the process's baseline (the old pre-check read the 200 MB bomb whole)."""
    script = (
        "import json, resource, sys, time\n"
        "from pipeline.models.checkpoint import torch_file_problem\n"
        "out = {}\n"
        "for f in sys.argv[1:]:\n"
        "    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    t0 = time.perf_counter()\n"
        "    problem = torch_file_problem(f)\n"
        "    out[f] = [problem, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base]\n"
        "print(json.dumps(out))\n")
    r = subprocess.run([sys.executable, "-c", script, *map(str, crafted.values())], cwd=ROOT, env=venv_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    for what, f in crafted.items():
        problem, seconds, grew_kb = got[str(f)]
        assert problem, f"{what}: accepted"
        assert seconds < 2, f"{what}: {seconds:.1f} s"
        assert grew_kb < 100 * 1024, f"{what}: peak memory grew by {grew_kb / 1024:.0f} MB"
    assert f"larger than the {MAX_PICKLE_BYTES >> 20} MiB" in got[str(crafted["deflate bomb"])][0]
    assert got[str(crafted["zip: BINUNICODE8 of 4 GB"])][0] == "truncated or corrupt?"


def test_bound_is_far_above_a_real_checkpoint(tmp_path):
    """A data.pkl holds ~120 bytes per tensor: MAX_PICKLE_BYTES leaves room for over 100,000 tensors (NCSN++ deep's
    model + EMA: 1,926)."""
    state = {f"layer{i}.weight": torch.zeros(1).expand(64, 64, 3, 3) for i in range(2000)}
    torch.save({"model": state, "step": 1}, tmp_path / "many.pt")
    with zipfile.ZipFile(tmp_path / "many.pt") as z:
        size = next(i.file_size for i in z.infolist() if i.filename.endswith("/data.pkl"))
    assert size / len(state) < 200
    assert MAX_PICKLE_BYTES / (size / len(state)) > 100_000
    assert torch_file_problem(tmp_path / "many.pt") is None


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*_io.pt")))
def test_project_fixtures_pass(name):
    assert torch_file_problem(FIXTURES / name) is None


@pytest.mark.parametrize("name", ["ncsn", "ncsnv2", "ddpm"])
def test_reference_checkpoints_pass(name, tmp_path):
    """The reference-format fixtures (score_sde_pytorch zip; ermongroup lists) as downloaded, uncompressed."""
    path = tmp_path / f"{name}.pth"
    path.write_bytes(lzma.decompress((FIXTURES / f"{name}.pth.xz").read_bytes()))
    assert torch_file_problem(path) is None


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_of_a_small_dict_passes_and_its_truncation_does_not(zip_format, tmp_path):
    f = tmp_path / "small.pt"
    torch.save({"w": torch.arange(10.0), "step": 3, "name": "x" * 1000}, f, _use_new_zipfile_serialization=zip_format)
    assert torch_file_problem(f) is None
    data = f.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2] if zip_format else data[:60])
    assert torch_file_problem(tmp_path / "cut.pt") == "truncated or corrupt?"
