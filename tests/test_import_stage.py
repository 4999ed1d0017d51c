"""`python -m pipeline import`: a reference checkpoint becomes the experiment's model.pt, which the sample and
likelihood stages load unchanged; bad files exit 2 with the file named and nothing written."""
import lzma
from pathlib import Path

import torch
import yaml
from conftest import assert_close_f32

from pipeline import checkpoint
from pipeline.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"


def _setup(tmp_path, name):
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
