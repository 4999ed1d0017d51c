"""Reference checkpoints -> project networks: the converted weights reproduce the reference networks' outputs.

Fixtures (tests/fixtures/models/): for each architecture, a small random-weight checkpoint in the reference's own
format (score_sde_pytorch dict, ermongroup/ncsn and ncsnv2 lists; xz-compressed), the inputs, and the outputs of the
reference code run on them in float32 and float64. The reference's CUDA ops were replaced by their pure-PyTorch
`upfirdn2d_native` path, and its FIR up-sampling convolution, which cannot run in PyTorch as published (a negative-step
slice and a TF-style 4-element stride), was run with those two lines fixed.
"""
import argparse
import lzma
from pathlib import Path

import pytest
import torch
from conftest import assert_close_f32

from pipeline.config import validate
from pipeline.models import convert as C
from pipeline.models import zoo as models
from pipeline.models.checkpoint import CheckpointError, CheckpointMismatch, read_project_checkpoint, to_project_checkpoint
from pipeline.models.checkpoint import load as load_checkpoint
from pipeline.models.layers import noise_levels

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"
CASES = ["ncsnpp_cont", "ncsnpp_skip", "ncsnpp_resid", "ddpmpp", "ddpm", "ncsn", "ncsnv2"]
STEPS = {"ncsn": 1500, "ncsnv2": 1500}  # ncsn: the Adam step count (its checkpoints store no step)
# float32: max|ours - reference| <= 1e-4 * max|reference| (max|y| is 2.7-7.2 here). The reference outputs were
# computed with another machine's kernels, so the difference is rounding: measured up to 2.5e-6 relative with
# ATEN_CPU_CAPABILITY=default (3.6e-6 with oneDNN also limited to SSE4.1), 1e-6 with AVX2 or AVX-512. The former
# absolute 1e-5 failed at 1.4e-5 on another CPU, and at 1.34e-5 here with ATEN_CPU_CAPABILITY=default. A wrong mapping
# is far above the bound: swapping two same-shape convolutions moves the outputs 4,000-12,000 times the bound, zeroing
# a single bias (one that reaches the output) at least 45 times. Exactness is carried by the float64 comparison below.
FLOAT32_RTOL = 1e-4
FLOAT64_TOL = 1e-10  # both in float64: any mapping or semantic difference would show at O(1); machine-independent


@pytest.fixture
def one_thread():
    """Run as the fixtures were generated (one thread); the float32 bound does not rely on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def unpack(name: str, tmp_path: Path) -> tuple[Path, dict, object]:
    """(checkpoint path in the reference format, fixture io record, validated params)."""
    path = tmp_path / f"{name}.pth"
    path.write_bytes(lzma.decompress((FIXTURES / f"{name}.pth.xz").read_bytes()))
    record = torch.load(FIXTURES / f"{name}_io.pt", weights_only=True)
    return path, record, validate(record["params"], f"{name}_io.pt")


def run(net, x, labels):
    with torch.no_grad():
        return net(x, labels)


@pytest.mark.parametrize("name", CASES)
def test_converted_weights_reproduce_reference_outputs(name, tmp_path, one_thread):
    path, record, params = unpack(name, tmp_path)
    net = models.build(params).eval()
    model_sd, ema_sd, step = C.convert(C.read_reference_checkpoint(path), params.model.name, net)
    assert step == STEPS.get(name, 4321)
    if "out_model" in record:  # distinct EMA weights: both sets of weights must map
        net.load_state_dict(model_sd)
        assert_close_f32(run(net, record["x"], record["labels"]), record["out_model"], FLOAT32_RTOL, what=name)
        # the EMA weights do change the output, far beyond the float32 bound (measured 7.4 vs 7.2e-4)
        bound = FLOAT32_RTOL * record["out_ema"].abs().max()
        assert (record["out_model"] - record["out_ema"]).abs().max() > 100 * bound
    net.load_state_dict(ema_sd if ema_sd is not None else model_sd)
    assert_close_f32(run(net, record["x"], record["labels"]), record["out_ema"], FLOAT32_RTOL, what=name)
    net.double()
    if params.model.name in ("ddpm", "ncsnpp"):
        net.sigmas = noise_levels(params.model, torch.float64)  # score_sde keeps its σ table in float64
    out64 = run(net, record["x"].double(), record["labels64"])
    assert out64.dtype == torch.float64
    err64 = (out64 - record["out_ema64"]).abs().max().item()
    assert err64 <= FLOAT64_TOL, err64


@pytest.mark.parametrize("name", ["ncsnpp_cont", "ncsn"])
def test_project_checkpoint_round_trip_loads_ema_or_plain_weights(name, tmp_path, one_thread):
    path, record, params = unpack(name, tmp_path)
    net = models.build(params)
    model_sd, ema_sd, step = C.convert(C.read_reference_checkpoint(path), params.model.name, net)
    out = tmp_path / "model.pt"
    torch.save(to_project_checkpoint(params, model_sd, ema_sd, step), out)
    assert read_project_checkpoint(out)["step"] == step
    loaded = load_checkpoint(out)
    assert not loaded.training
    assert_close_f32(run(loaded, record["x"], record["labels"]), record["out_ema"], FLOAT32_RTOL, what=name)
    if ema_sd is not None:  # plain weights where no EMA is stored
        torch.save(to_project_checkpoint(params, model_sd, None, step), out)
        got = run(load_checkpoint(out), record["x"], record["labels"])
        assert_close_f32(got, record["out_model"], FLOAT32_RTOL, what=f"{name} plain weights")


def test_corrupt_truncated_and_foreign_files_raise_checkpoint_error(tmp_path):
    path, _, params = unpack("ncsnpp_cont", tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:5000])
    for bad, message in [(truncated, "corrupt"), (path, "not a pipeline-ckpt-v1"), (tmp_path / "absent.pt", "no such")]:
        with pytest.raises(CheckpointError, match=message) as e:
            load_checkpoint(bad)
        assert str(bad) in str(e.value)
    with pytest.raises(CheckpointError, match="corrupt"):
        C.read_reference_checkpoint(truncated)
    missing_field = tmp_path / "nostep.pt"
    torch.save({"format": "pipeline-ckpt-v1", "params": params.model_dump(mode="json"), "model": {}, "ema": None}, missing_field)
    with pytest.raises(CheckpointError, match="'step'"):
        load_checkpoint(missing_field)


def test_wrong_weights_name_the_key(tmp_path):
    path, _, params = unpack("ddpmpp", tmp_path)
    net = models.build(params)
    model_sd, ema_sd, step = C.convert(C.read_reference_checkpoint(path), "ncsnpp", net)
    out = tmp_path / "model.pt"
    for edit, message in [
        (lambda sd: sd.pop("all_modules.3.Conv_0.weight"), "missing key 'all_modules.3.Conv_0.weight'"),
        (lambda sd: sd.__setitem__("all_modules.3.extra", torch.zeros(1)), "unexpected key 'all_modules.3.extra'"),
        (lambda sd: sd.__setitem__("all_modules.3.Conv_0.bias", torch.zeros(3)), "'all_modules.3.Conv_0.bias' has shape"),
    ]:
        broken = dict(ema_sd)
        edit(broken)
        torch.save(to_project_checkpoint(params, model_sd, broken, step), out)
        with pytest.raises(CheckpointMismatch, match=message):
            load_checkpoint(out)
        with pytest.raises(CheckpointMismatch, match=message.split(" has")[0]):
            C.convert_score_sde({"model": broken, "ema": None, "step": 1}, net)


def test_reference_checkpoint_inconsistencies(tmp_path):
    path, record, params = unpack("ncsnpp_skip", tmp_path)
    ckpt = C.read_reference_checkpoint(path)
    net = models.build(params)
    short = dict(ckpt, ema=dict(ckpt["ema"], shadow_params=ckpt["ema"]["shadow_params"][:-1]))
    with pytest.raises(CheckpointMismatch, match="shadow parameters"):
        C.convert_score_sde(short, net)
    wrong_sigmas = models.build(validate({**record["params"], "model": {**record["params"]["model"], "sigma_max": 10.0}}, "x"))
    with pytest.raises(CheckpointMismatch, match="sigma_max"):
        C.convert_score_sde(ckpt, wrong_sigmas)
    with pytest.raises(CheckpointError, match="score_sde_pytorch"):
        C.convert_score_sde([ckpt["model"]], net)
    with pytest.raises(CheckpointError, match="ncsn"):
        C.convert("not a checkpoint", "ncsn")


def test_untrusted_pickles_need_explicit_trust(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"model": {}, "config": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(C.UntrustedCheckpoint, match="--trust-checkpoint"):
        C.read_reference_checkpoint(path)
    assert C.read_reference_checkpoint(path, trust=True)["config"].lr == 1.0


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_checkpoints_are_corrupt_never_untrusted(legacy, tmp_path):
    """Every prefix of a checkpoint holding a Python object, in the zip format and the legacy one (PyTorch < 1.6, as
    NCSN's checkpoints are), is refused as unreadable; only the whole file asks for --trust-checkpoint.

    One exception, stated: a legacy file cut inside the raw tensor bytes after its pickles (here the storage's 8-byte
    size and its 6 float32 values) cannot be told from a whole one without unpickling its objects; it asks for trust,
    and with --trust-checkpoint it is refused as corrupt."""
    path, cut = tmp_path / "whole.pth", tmp_path / "cut.pth"
    torch.save([{"w": torch.arange(6.0)}, argparse.Namespace(lr=1.0)], path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    raw = 8 + 6 * 4 if legacy else 0
    for n in range(0, len(data) - raw, max(1, len(data) // 200)):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as e:
            C.read_reference_checkpoint(cut)
        assert not isinstance(e.value, C.UntrustedCheckpoint) and str(e.value).startswith(f"{cut}: "), (n, str(e.value))
    for n in range(len(data) - raw, len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=f"^{cut}: corrupt PyTorch checkpoint"):
            C.read_reference_checkpoint(cut, trust=True)
    with pytest.raises(C.UntrustedCheckpoint):
        C.read_reference_checkpoint(path)
