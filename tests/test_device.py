"""Device placement without a GPU: every sampler, the likelihood, controllable generation, the train loop and every
preset's network run on a second device, and any tensor left on the CPU where a GPU run would crash fails here.

How. The second device is PyTorch's `meta` device (tensors with shapes and dtypes but no data; every op is
shape inference, so a full-size CIFAR-10 NCSN++ step costs nothing). It follows CUDA's placement rules: an op that
mixes a meta tensor with a CPU tensor of one or more dimensions raises "Tensor on device cpu is not on the expected
device meta", as CUDA raises "Expected all tensors to be on the same device"; a 0-dim CPU tensor is allowed as a
scalar on both. So the network goes to meta, the sampler is told `device="meta"`, and a tensor the code creates
on the CPU (a forgotten `device=`, a buffer built in `forward`) meets the network's meta tensors and fails.

What meta cannot do is hand values back to the host, which the samplers do on purpose (scipy's ODE solver, the
`.cpu().numpy()` of the stages, `float(loss)`). `DeviceCheck`, a `TorchFunctionMode`, stands in for the device to
host copy: `.cpu()`, `.to("cpu")`, `.item()`, `float()`, `.tolist()` of a meta tensor give zeros of the same shape
and dtype on the CPU (a GPU would give the values), and it records as a violation what a GPU run would reject:
`.numpy()` of a device tensor without `.cpu()` first, an op mixing device and CPU tensors (with a better message
than meta's own error), and indexing a CPU tensor with a device index. Zeros make scipy's adaptive solver finish
in a few steps, so the ODE paths run here too; the checks are about placement, not values (the value tests live in
test_samplers.py, test_likelihood.py, ...).
"""
from __future__ import annotations

import glob
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from pipeline.config import load_params
from pipeline.core import losses
from pipeline.core.experiment import make_sde, sample_shape, score_function
from pipeline.core.likelihood import log_likelihood
from pipeline.models import zoo as models
from pipeline.samplers import controllable, sampling

DEV = torch.device("meta")
HOST_COPIES = {torch.Tensor.cpu, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
               torch.Tensor.__bool__}
MOVES = {torch._has_compatible_shallow_copy_type, torch.Tensor.to, torch.Tensor.copy_, torch.Tensor.cpu,
         torch.Tensor.type_as, torch.Tensor.new_tensor}  # cross-device copies, legal on CUDA


class DeviceViolation(AssertionError):
    pass


def _target_device(args, kwargs):
    """The device a `Tensor.to(...)` call moves to, or None when it only changes the dtype."""
    for a in list(args[1:]) + list(kwargs.values()):
        if isinstance(a, (str, torch.device)) and not isinstance(a, torch.dtype):
            return torch.device(a)
        if isinstance(a, torch.Tensor):
            return a.device
    return None


class DeviceCheck(TorchFunctionMode):
    """Run code as if `meta` were a GPU: device-to-host copies give zeros, CPU/device mixing is a violation."""

    def __init__(self, device=DEV):
        super().__init__()
        self.device, self.violations = torch.device(device), []

    def _fail(self, msg):
        self.violations.append(msg)
        raise DeviceViolation(msg)

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        on_dev = [t for t in tensors if t.device == self.device]
        name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))
        if on_dev:
            self_dev = isinstance(args[0], torch.Tensor) and args[0].device == self.device if args else False
            if func is torch.Tensor.numpy and self_dev:
                self._fail(f"{name}: .numpy() of a {self.device} tensor (a GPU run needs .cpu() first)")
            to_host = func is torch.Tensor.to and self_dev and _target_device(args, kwargs) == torch.device("cpu")
            if self_dev and (func in HOST_COPIES or to_host):  # the device -> host copy, values unknown: zeros
                t = args[0]
                dtype = next((a for a in list(args[1:]) + list(kwargs.values()) if isinstance(a, torch.dtype)),
                             t.dtype)
                host = torch.zeros(t.shape, dtype=dtype)
                return host if func in (torch.Tensor.cpu, torch.Tensor.to) else func(host, *args[1:], **kwargs)
            if func not in MOVES:
                host = [t for t in tensors if t.device.type == "cpu" and t.dim() > 0]
                indexing = func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__)
                if host and indexing and not (args[0].device.type == "cpu" and args[0].dim() > 0):
                    host = []  # a device tensor indexed by a CPU index is allowed on CUDA
                if host:
                    shapes = [f"{t.device}:{tuple(t.shape)}" for t in tensors]
                    self._fail(f"{name} mixes {self.device} and CPU tensors {shapes}")
        return func(*args, **kwargs)


def gens(n, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def on_device(params):
    """The experiment's network on the fake device, in eval mode."""
    with torch.device(DEV):  # built on the device: no CPU initialisation of a full-size network
        return models.build(params).eval()


def check(out, shape, dtype=torch.float32):
    assert out.device == DEV, f"result on {out.device}, expected {DEV}"
    assert tuple(out.shape) == tuple(shape) and out.dtype == dtype


# --- the checker itself ---------------------------------------------------------------------------------------------
def test_checker_flags_what_a_gpu_rejects_and_copies_to_host():
    x = torch.ones(3, device=DEV)
    with DeviceCheck() as dc:
        with pytest.raises(DeviceViolation, match="mixes meta and CPU"):
            _ = x + torch.ones(3)
        with pytest.raises(DeviceViolation, match="numpy"):
            x.numpy()
        assert x.cpu().device.type == "cpu" and x.cpu().numpy().shape == (3,)
        assert float(x.sum()) == 0.0
        _ = x * torch.tensor(2.0)  # a 0-dim CPU tensor is a scalar on CUDA too
        _ = x[torch.tensor([0, 2])]  # a device tensor indexed on the CPU: allowed on CUDA
    assert len(dc.violations) == 2


# --- samplers through `sampling.draw`, as the sample stage and the snapshot grids call them -------------------------
VP_IMG = ["sampling.num_steps=30", "model.num_scales=30", "samplers={}"]
SAMPLER_CASES = {
    "pc_em": ("params/smoke.yaml", VP_IMG),
    "pc_rd_langevin_paper": ("params/smoke.yaml", VP_IMG + ["sampling.predictor=reverse_diffusion",
                                                         "sampling.corrector=langevin", "sampling.order=paper"]),
    "pc_ancestral_ald_ddpm": ("params/smoke.yaml", VP_IMG + ["training.continuous=false", "model.num_scales=30",
                                                          "sampling.predictor=ancestral_sampling",
                                                          "sampling.corrector=ald"]),
    "pc_subvp_flow": ("params/smoke.yaml", VP_IMG + ["training.sde=subvpsde", "sampling.predictor=reverse_diffusion",
                                                    "sampling.probability_flow=true"]),
    "pc_ve_ncsnpp_cont": ("params/cifar10/ncsnpp_cont.yaml", ["sampling.num_steps=3"]),
    "ode_vp": ("params/smoke.yaml", VP_IMG + ["sampling.method=ode", "sampling.noise_removal=true"]),
    "ald_ncsn": ("params/cifar10/ncsn.yaml", ["sampling.n_steps_each=1", "sampling.noise_removal=true", "model.num_scales=3"]),
    "heun_churn_ve": ("params/cifar10/ncsnpp_cont.yaml", ["sampling.method=heun", "sampling.num_steps=3",
                                                          "sampling.s_churn=10"]),
    "heun_discrete_ddpm": ("params/cifar10/ddpm.yaml", ["sampling.method=heun", "sampling.num_steps=3"]),
    "dpm_solver3": ("params/smoke.yaml", VP_IMG + ["sampling.method=dpm_solver", "sampling.solver_order=3"]),
    "dpm_solver_2m": ("params/smoke.yaml", VP_IMG + ["sampling.method=dpm_solver", "sampling.solver_order=2",
                                                    "sampling.multistep=true", "sampling.noise_removal=true"]),
    "ddim_eta": ("params/smoke.yaml", VP_IMG + ["sampling.method=ddim", "sampling.eta=0.5"]),
}


@pytest.mark.parametrize("case", sorted(SAMPLER_CASES))
def test_every_sampler_runs_on_the_network_device(case):
    path, sets = SAMPLER_CASES[case]
    _, p = load_params(path, sets)
    s = p.sampler_settings()[p.sampling.method]
    net = on_device(p)
    with DeviceCheck() as dc, torch.no_grad():
        x, nfe = sampling.draw(p, s, net, 2, gens(2), device=DEV)
    assert not dc.violations and nfe >= 1
    check(x, sample_shape(p, 2))


def test_ald_samples_on_the_device_it_is_given():
    """Issue 13's bug: NCSN sampling without `device` left x on the CPU while the network was on the GPU. `draw`
    (the sample stage's and the snapshot grids' entry point) must pass its device through to `ald_sample`."""
    _, p = load_params("params/cifar10/ncsn.yaml", ["sampling.n_steps_each=1", "model.num_scales=3"])
    net = on_device(p)
    with DeviceCheck(), torch.no_grad():
        x, _ = sampling.draw(p, p.sampling, net, 2, gens(2), device=DEV)
        assert x.device == DEV
        with pytest.raises((DeviceViolation, RuntimeError)):  # and the checker sees the bug when device is dropped
            sampling.ald_sample(make_sde(p), score_function(p, make_sde(p), net), sample_shape(p, 2), n_steps_each=1,
                                generator=gens(2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["pc", "ode", "ald", "heun", "dpm_solver", "ddim"])
def test_samplers_keep_the_dtype_they_are_given(method, dtype):
    """The library samplers take `dtype` and return it, with every intermediate on the device (float64 on a GPU)."""
    path = "params/cifar10/ncsn.yaml" if method in ("ald", "heun") else "params/smoke.yaml"
    _, p = load_params(path, ["model.num_scales=30", "samplers={}"] if path.endswith("smoke.yaml") else ["model.num_scales=3"])
    net = on_device(p).to(dtype)
    sde = make_sde(p)
    score_fn = score_function(p, sde, net)
    shape = sample_shape(p, 2)
    fn = {"pc": lambda **kw: sampling.pc_sample(sde, score_fn, shape, corrector="langevin", num_steps=30, **kw),
          "ode": lambda **kw: sampling.ode_sample(sde, score_fn, shape, denoise=True, **kw),
          "ald": lambda **kw: sampling.ald_sample(sde, score_fn, shape, n_steps_each=1, denoise=True, **kw),
          "heun": lambda **kw: sampling.heun_sample(sde, score_fn, shape, num_steps=3, s_churn=5.0, discrete=True,
                                                    **kw),
          "dpm_solver": lambda **kw: sampling.dpm_solver_sample(sde, score_fn, shape, num_steps=3, order=2, **kw),
          "ddim": lambda **kw: sampling.ddim_sample(sde, score_fn, shape, num_steps=3, eta=1.0, **kw)}[method]
    with DeviceCheck() as dc, torch.no_grad():
        x, _ = fn(generator=gens(2), device=DEV, dtype=dtype)
    assert not dc.violations
    check(x, shape, dtype)


def test_snapshot_grid_samples_on_the_model_device(tmp_path):
    """The train stage's MLflow grids sample with the model's device (`snapshot_grid_logger`), NCSN's ALD too."""
    from pipeline.training.snapshot_grid import snapshot_grid_logger

    _, p = load_params("params/cifar10/ncsn.yaml", ["sampling.n_steps_each=1", "model.num_scales=3"])
    logged = []
    tracker = types.SimpleNamespace(log_image=lambda f, key, step: logged.append(Path(f).name))
    log = snapshot_grid_logger(p, tracker, n=2)
    with DeviceCheck() as dc:
        log(7, on_device(p), None)
    assert not dc.violations and logged == ["samples_step_000000007.png"]


# --- likelihood -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["rademacher", "gaussian", "exact"])
def test_likelihood_runs_on_the_data_device(estimator):
    _, p = load_params("params/smoke.yaml", ["data.image_size=2"] if estimator == "exact" else [])
    net = on_device(p)
    sde = make_sde(p)
    x = torch.zeros(sample_shape(p, 2), device=DEV)
    with DeviceCheck() as dc, torch.no_grad():
        logp, z, nfe = log_likelihood(sde, score_function(p, sde, net), x, estimator=estimator, generator=gens(2))
    assert not dc.violations and nfe >= 1
    check(z, x.shape)
    assert logp.device == DEV and logp.shape == (2,)


# --- controllable generation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["inpainting", "colorization"])
def test_controllable_stage_task_runs_on_the_device(task):
    from pipeline.stages.controllable import run_task

    _, p = load_params("params/cifar10/ncsnpp_cont.yaml", ["eval.controllable_steps=3"])
    net = on_device(p)
    sde = make_sde(p)
    x0 = torch.zeros(2, 3, 32, 32, device=DEV)
    with DeviceCheck() as dc:
        info, rows = run_task(task, p, sde, score_function(p, sde, net), x0, DEV)
    assert not dc.violations and info["status"] == "done" and info["nfe"] >= 3
    assert [r.device.type for r in rows] == ["cpu"] * 3


def test_class_conditional_score_runs_on_the_device():
    _, p = load_params("params/smoke.yaml", ["model.num_scales=20"])
    net = on_device(p)
    sde = make_sde(p)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10), torch.nn.LogSoftmax(1)).to(DEV)
    fn = controllable.conditional_score_fn(score_function(p, sde, net), lambda x, t: clf(x), y=3, scale=2.0)
    with DeviceCheck() as dc, torch.no_grad():
        x, _ = sampling.pc_sample(sde, fn, sample_shape(p, 2), num_steps=3, generator=gens(2), device=DEV)
    assert not dc.violations
    check(x, sample_shape(p, 2))


# --- training: every preset's network and loss, and the loop itself --------------------------------------------------
PRESETS = sorted(glob.glob("params/**/*.yaml", recursive=True))


@pytest.mark.parametrize("path", PRESETS)
def test_every_preset_trains_a_step_on_the_device(path):
    """Forward, loss and backward of each preset's full-size network at batch 2 on the device (meta: free)."""
    _, p = load_params(path)
    with torch.device(DEV):
        net = models.build(p).train()
    sde = make_sde(p)
    loss_fn = losses.get_loss_fn(sde, p.training.continuous, p.training.reduce_mean, p.training.likelihood_weighting)
    x = torch.zeros(sample_shape(p, 2), device=DEV)
    with DeviceCheck() as dc:
        loss = loss_fn(net, x, gens(2))
        loss.backward()
    assert not dc.violations and loss.device == DEV and loss.dim() == 0
    assert all(q.grad is not None and q.grad.device == DEV for q in net.parameters() if q.requires_grad)


class FakeAccelerator:
    """The part of `accelerate.Accelerator` that `train.train` uses, with `device` the fake GPU."""

    device, num_processes, process_index, is_main_process = DEV, 1, 0, True

    def prepare(self, *objs):
        out = [o.to(DEV) if isinstance(o, torch.nn.Module) else o for o in objs]
        return out if len(out) > 1 else out[0]

    def no_sync(self, net):
        import contextlib
        return contextlib.nullcontext()

    def autocast(self):
        import contextlib
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def reduce(self, t, reduction="mean"):
        return t

    def unwrap_model(self, net):
        return net

    def wait_for_everyone(self):
        pass

    def print(self, *a):
        print(*a)


@pytest.mark.parametrize("path,sets", [("params/smoke.yaml", ["training.n_iters=2", "training.batch_size=4"]),
                                       ("params/cifar10/ncsn.yaml", ["training.n_iters=2", "training.batch_size=2"])])
def test_train_loop_keeps_everything_on_the_accelerator_device(path, sets, tmp_path):
    """`train.train` with the accelerator's device on the fake GPU: batches, loss noise, EMA and the evaluation loss
    all follow `accelerator.device` (uint8 data stays on the host until the batch is moved)."""
    from pipeline.training.loop import train

    _, p = load_params(path, sets + ["optim.warmup=0"])
    shape = sample_shape(p, 6)
    data = torch.zeros(shape, dtype=torch.uint8)
    with DeviceCheck() as dc:
        model, ema, result = train(p, data, data, tmp_path / "snap", accelerator=FakeAccelerator(), progress=False)
    assert not dc.violations and result.step == 2
    assert all(q.device == DEV for q in model.parameters())
    if ema is not None:
        assert all(v.device == DEV for v in ema.weights(model).values())


def test_classifier_features_follow_the_classifier_device():
    """The evaluator's features (evaluate stage): images are moved to the classifier's device, features come back."""
    from pipeline.metrics.dataset_classifier import dataset_classifier_features, make_dataset_classifier

    net = make_dataset_classifier(1, 8, 10, 8, 16, torch.Generator().manual_seed(0)).to(DEV)
    with DeviceCheck() as dc:
        feats, logits = dataset_classifier_features(net, np.zeros((3, 1, 8, 8), np.uint8))
    assert not dc.violations and feats.shape == (3, 16) and logits.shape == (3, 10)


# --- benchmarks/gpu_check.py: its CPU-runnable parts -----------------------------------------------------------------
def _gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).resolve().parents[1] / "benchmarks/gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_gpu_check_exits_2_without_cuda(capsys):
    assert _gpu_check().main([]) == 2
    assert "no CUDA device here" in capsys.readouterr().err


def test_gpu_check_dry_run_on_cpu(tmp_path, capsys):
    """Every section but the smoke suite, on tiny versions of the same presets: the table has each row."""
    out = tmp_path / "g.json"
    assert _gpu_check().main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["peak"]) == {"bf16", "fp32"} and all(v > 0 for v in res["peak"].values())
    assert [t["dtype"] for t in res["train"]] == ["bf16", "fp32"] and all(t["images_per_s"] > 0 for t in res["train"])
    assert [(s["method"], s["finite"]) for s in res["sample"]] == [("ald", True), ("pc", True)]
    text = capsys.readouterr().out
    assert "| train ncsnpp_cont bf16 b4 x2 |" in text and "| sample ald ncsn n=4 |" in text
    assert "switches" not in res  # compilation is opt-in (--switches)


def test_gpu_check_switches_dry_run_on_cpu(tmp_path, capsys):
    """--switches: sampling.compile compiled for real (a fallback to eager fails the check), with its speed-up against
    the eager row in the table. On the CPU the compile switch only (the GPU run adds training.compile in bf16 and fp32
    and sampling.cuda_graphs): with a cold Inductor cache (a fresh clone's, CI's) the four variants took 140 s here,
    of which the tiny NCSN++ training graph 62 s in fp32 and more in bf16, the sampling switch 21 s.
    tests/test_speed_switches.py compiles training.compile and sampling.cuda_graphs against eager."""
    out = tmp_path / "g.json"
    assert _gpu_check().main(["--device", "cpu", "--tiny", "--switches", "--skip", "smoke", "--skip", "sample",
                              "--switch-dtypes", "none", "--switch-sampling", "compile", "--out", str(out)]) == 0
    sw = json.loads(out.read_text())["switches"]
    assert sw["train"] == []
    assert [(s["switch"], s["nfe"], s["finite"]) for s in sw["sample"]] == [
        ("eager", 4, True), ("compile", 4, True)]  # 2 PC steps: predictor + corrector
    text = capsys.readouterr().out
    assert "| sample pc ncsnpp_cont compile n=4 NFE 4 |" in text and "x eager" in text
    assert _gpu_check().main(["--device", "cpu", "--switches", "--switch-dtypes", "fp16"]) == 2
