"""`python -m pipeline import`: a reference checkpoint becomes the experiment's model.pt, which the sample and
likelihood stages load unchanged; bad files exit 2 with the file named and nothing written."""
import argparse
import lzma
import random
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_close_f32

from pipeline.cli import main
from pipeline.io import checkpoint

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"


def _setup(tmp_path, name):
    tmp_path.mkdir(parents=True, exist_ok=True)
    record = torch.load(FIXTURES / f"{name}_io.pt", weights_only=True)
    ref = tmp_path / f"{name}.pth"
    ref.write_bytes(lzma.decompress((FIXTURES / f"{name}.pth.xz").read_bytes()))
    params = tmp_path / f"{name}.yaml"
    params.write_text(yaml.safe_dump(record["params"]))
    return record, ref, params


def test_import_then_load_reproduces_reference_outputs(tmp_path, capsys):
    record, ref, params = _setup(tmp_path, "ncsn")
    root = tmp_path / "root"
    assert main(["import", "--params", str(params), "--format", "ncsn", str(ref), "--root", str(root)]) == 0
    suite = record["params"].get("suite", "default")
    model = root / "runs" / suite / "ncsn" / "train" / "model.pt"
    net = checkpoint.load_network(model)
    with torch.no_grad():
        out = net(record["x"], record["labels"])
    # float32 vs outputs stored from another machine: rounding only (test_import.py's FLOAT32_RTOL explains 1e-4)
    assert_close_f32(out, record["out_ema"], 1e-4, what="imported ncsn")


def test_wrong_format_is_refused_with_the_file_named(tmp_path, capsys):
    record, ref, params = _setup(tmp_path, "ncsn")
    root = tmp_path / "root"
    assert main(["import", "--params", str(params), "--format", "score_sde", str(ref), "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ref}") and len(err.splitlines()) == 1
    assert not root.exists() or not any(root.rglob("model.pt"))


def test_corrupt_model_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    try:
        checkpoint.load_network(bad)
    except Exception as e:  # noqa: BLE001
        assert type(e).__name__ == "StageError" and str(bad) in str(e)
    else:
        raise AssertionError("a corrupt checkpoint must be refused")


NOT_A_CHECKPOINT = "not a PyTorch checkpoint ({}); check the path, or download it again"
BAD_FILES = {  # kind: (its bytes, made from a real reference checkpoint's; why it is refused)
    "empty": (lambda real: b"", "the file is empty"),
    "truncated zip": (lambda real: real[: len(real) // 2], "truncated or corrupt?"),
    "plain text": (lambda real: b"model:\n  name: ncsn\n", "truncated or corrupt?"),
    "random bytes": (lambda real: random.Random(0).randbytes(4096), "truncated or corrupt?"),
}


def _import(tmp_path, params, fmt, src):
    """(exit status, output root) of `python -m pipeline import` into tmp_path/root."""
    root = tmp_path / "root"
    return main(["import", "--params", str(params), "--format", fmt, str(src), "--root", str(root)]), root


@pytest.mark.parametrize("kind", BAD_FILES)
def test_unreadable_file_is_not_a_checkpoint(kind, tmp_path, capsys):
    """Not "holds Python objects ... --trust-checkpoint" (torch.load's weights-only error for any bad bytes)."""
    _, ref, params = _setup(tmp_path, "ncsn")
    make, why = BAD_FILES[kind]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(make(ref.read_bytes()))
    rc, root = _import(tmp_path, params, "ncsn", bad)
    assert (rc, capsys.readouterr().err) == (2, f"error: {bad}: {NOT_A_CHECKPOINT.format(why)}\n")
    assert not root.exists()


def test_checkpoint_with_python_objects_still_needs_trust(tmp_path, capsys):
    """A whole checkpoint with a non-tensor object keeps the --trust-checkpoint message, and imports with it."""
    _, ref, params = _setup(tmp_path, "ncsn")
    pickled = tmp_path / "pickled.pth"
    torch.save([torch.load(ref, weights_only=True)[0], {"config": argparse.Namespace(lr=1.0)}], pickled)
    rc, root = _import(tmp_path, params, "ncsn", pickled)
    assert (rc, capsys.readouterr().err) == (2, f"error: {pickled}: the checkpoint holds Python objects besides tensors, "
                                                "and loading it could run arbitrary code; if you trust its source, pass "
                                                "--trust-checkpoint\n")
    assert not root.exists()
    assert main(["import", "--params", str(params), "--format", "ncsn", "--trust-checkpoint", str(pickled),
                 "--root", str(root)]) == 0 and (root / "runs").is_dir()


ANOTHER_NETWORK = "; the checkpoint holds another network than the params describe (check model.* in the params file, and --format)"


@pytest.mark.parametrize("ckpt, fmt, params_of, message", [
    ("ncsnv2", "ncsnv2", "ncsn", "model: missing key 'normalizer.embed.weight' (71 missing) for a NCSN" + ANOTHER_NETWORK),
    ("ddpm", "score_sde", "ncsnpp_cont", "model: missing key 'all_modules.0.W' (101 missing) for a NCSNpp" + ANOTHER_NETWORK),
    ("ncsnv2", "score_sde", "ncsnv2", "not a score_sde_pytorch checkpoint: expected a dict with 'model', 'ema', 'step' "
                                      "(got list); it looks like an ermongroup checkpoint: pass --format ncsn or ncsnv2"),
])
def test_checkpoint_of_another_network_names_the_first_mismatch(ckpt, fmt, params_of, message, tmp_path, capsys):
    """Keys before noise levels: an NCSNv2 file under NCSN params differs in both, and the key says why."""
    _, ref, _ = _setup(tmp_path, ckpt)
    _, _, params = _setup(tmp_path / "other", params_of)
    rc, root = _import(tmp_path, params, fmt, ref)
    assert (rc, capsys.readouterr().err) == (2, f"error: {ref}: {message}\n")
    assert not root.exists()
