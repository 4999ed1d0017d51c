"""The speed switches change speed, not results: `training.compile` trains to the eager run's losses and weights within
float32 rounding; a compiler failure falls back to the eager network with one logged line; the compiled score network
of `sampling.compile` gives the eager scores. Whether the switches pay is measured in benchmarks/bench_speed.py."""
import pytest
import torch
from conftest import assert_close_f32

from pipeline.config import Params
from pipeline.models import zoo as models
from pipeline.speed import compiled
from pipeline.training import launch, loop

PARAMS = {
    "suite": "unit", "seed": 3,
    "data": {"dataset": "digits", "image_size": 8, "num_channels": 1, "centered": True, "random_flip": True,
             "uniform_dequantization": True},
    "model": {"name": "mlp", "hidden": 32, "num_layers": 2, "ema_rate": 0.9, "dropout": 0.0},
    "training": {"sde": "vpsde", "n_iters": 6, "batch_size": 8, "snapshot_freq": 100, "log_freq": 3, "eval_freq": 100},
    "optim": {"lr": 0.01, "warmup": 0, "grad_clip": 1.0},
    "eval": {"enable_bpd": False},
}


def _params(**training) -> Params:
    p = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PARAMS.items()}
    p["training"].update(training)
    return Params(**p)


def train(p: Params, data: torch.Tensor, eval_data, folder, **kw):
    return loop.train(p, data, eval_data, folder, accelerator=launch.make_accelerator(p), **kw)


def _data(n=40) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_training_compile_matches_eager(tmp_path, capsys):
    """Six Adam steps with and without `training.compile`: every loss and every final weight agree to float32
    rounding (an error in the compiled graph, e.g. a dropped bias or a wrong reduction, is an O(1) change)."""
    data = _data()
    eager_net, _, eager = train(_params(compile=False), data, None, tmp_path / "eager", progress=False)
    from torch._dynamo.utils import counters
    counters.clear()
    fast_net, _, fast = train(_params(compile=True), data, None, tmp_path / "compiled", progress=False)
    assert counters["stats"]["unique_graphs"] >= 1 and "torch.compile failed" not in capsys.readouterr().err
    assert [s for s, _ in fast.losses] == [s for s, _ in eager.losses] == list(range(1, 7))
    assert_close_f32([v for _, v in fast.losses], [v for _, v in eager.losses], rtol=1e-4, what="losses")
    assert eager.losses[0][1] != eager.losses[-1][1]  # the weights moved: the comparison covers the optimizer path
    for (name, a), (_, b) in zip(fast_net.state_dict().items(), eager_net.state_dict().items()):
        assert_close_f32(a, b, rtol=1e-4, what=name)


def test_compiled_net_gives_eager_outputs_and_gradients():
    """The sampling path (no_grad, eval) and the training path (gradients) of the same wrapped module."""
    p = _params()
    torch.manual_seed(0)
    net = models.build(p)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    labels = torch.rand(5, generator=torch.Generator().manual_seed(2)) * 999
    fast = compiled.CompiledNet(net, "test")
    out = fast(x, labels)
    assert fast.compiled and fast.fallback_reason is None
    out.square().sum().backward()
    grads = [q.grad.clone() for q in net.parameters()]
    net.zero_grad(set_to_none=True)
    ref = net(x, labels)
    ref.square().sum().backward()
    assert_close_f32(out, ref, what="output")
    for g, q in zip(grads, net.parameters()):
        assert_close_f32(g, q.grad, what="gradient")
    net.eval()
    with torch.no_grad():
        assert_close_f32(fast(x, labels), net(x, labels), what="no_grad output")
    assert list(net.state_dict()) == list(models.build(p).state_dict())  # checkpoint keys untouched


def _failing_backend(gm, example_inputs):
    raise RuntimeError("C++ compiler not found")


def test_compile_failure_falls_back_with_logged_reason():
    torch.manual_seed(0)
    net = models.build(_params())
    x, labels = torch.randn(3, 1, 8, 8), torch.tensor([1.0, 500.0, 998.0])
    logs = []
    fast = compiled.CompiledNet(net, "training.compile (mlp)", backend=_failing_backend, log=logs.append)
    out = fast(x, labels)
    assert not fast.compiled and "C++ compiler not found" in fast.fallback_reason
    assert len(logs) == 1 and logs[0].startswith("warning: training.compile (mlp): torch.compile failed")
    assert torch.equal(out, net(x, labels))  # the eager network itself, bit for bit
    fast(x, labels)
    assert len(logs) == 1  # logged once, not per call


def test_missing_cxx_compiler_falls_back():
    """The real inductor path with its C++ compiler missing (as on a machine without gcc)."""
    from torch._inductor import config as inductor_config
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = models.build(_params())
    x, labels = torch.randn(3, 1, 8, 8), torch.tensor([1.0, 500.0, 998.0])
    logs = []
    fast = compiled.CompiledNet(net, "sampling.compile", log=logs.append)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/g++",)}), torch.no_grad():
        out = fast(x, labels)
        assert torch.equal(out, net(x, labels))
    torch._dynamo.reset()
    assert not fast.compiled and len(logs) == 1, logs


def test_backward_compile_failure_in_training_reruns_the_step_eagerly(tmp_path, monkeypatch, capsys):
    """The backward graph compiles at the first backward pass, after the forward call returned: the train loop
    reruns that step eagerly, so the whole run equals the eager one bit for bit (dropout reseeded, grads cleared)."""
    from torch._dynamo.backends.common import aot_autograd

    def failing_bw(gm, example_inputs):
        raise RuntimeError("backward kernel failed to build")
    torch._dynamo.reset()
    monkeypatch.setattr(compiled, "BACKEND", aot_autograd(fw_compiler=lambda gm, ex: gm, bw_compiler=failing_bw))
    data = _data()
    _, _, eager = train(_params(compile=False), data, None, tmp_path / "eager", progress=False)
    _, _, fell_back = train(_params(compile=True), data, None, tmp_path / "compiled", progress=False)
    torch._dynamo.reset()
    err = capsys.readouterr().err
    assert err.count("torch.compile failed") == 1 and "backward kernel failed to build" in err
    assert fell_back.losses == eager.losses


def test_switch_off_returns_the_module_itself():
    net = models.build(_params())
    assert compiled.maybe_compile(net, False, "x") is net
    assert isinstance(compiled.maybe_compile(net, True, "x"), compiled.CompiledNet)


@pytest.mark.parametrize("block", ["training", "sampling"])
def test_compile_keys_are_booleans(block):
    assert getattr(Params(**{block: {"compile": True}}), block).compile is True
    assert getattr(Params(), block).compile is False
    with pytest.raises(ValueError):
        Params(**{block: {"compile": "sometimes"}})



def test_sampling_compile_gives_eager_samples():
    """`sampling.compile` through sampling.draw (as the sample stage calls it, batch after batch): the same samples
    as the eager network to float32 rounding, one compiled wrapper per network."""
    from pipeline.core import rng
    from pipeline.samplers import sampling
    p = _params()
    torch.manual_seed(0)
    net = models.build(p).eval()
    with torch.no_grad():
        net.net[-1].bias.fill_(0.1)  # a nonzero score: init_scale may zero the last layer
    s_eager = p.sampling.model_copy(update=dict(method="pc", predictor="euler_maruyama", num_steps=8))
    s_fast = s_eager.model_copy(update=dict(compile=True))
    gens = lambda: [rng.generator(p.seed, "sample", 0, i) for i in range(4)]  # noqa: E731
    with torch.no_grad():
        ref, nfe = sampling.draw(p, s_eager, net, 4, gens())
        out, nfe_fast = sampling.draw(p, s_fast, net, 4, gens())
        again, _ = sampling.draw(p, s_fast, net, 4, gens())
        graphs, _ = sampling.draw(p, s_eager.model_copy(update=dict(cuda_graphs=True)), net, 4, gens())
    assert_close_f32(graphs, ref, what="sampling.cuda_graphs vs eager samples")  # on CPU: compile, mode reduce-overhead
    assert compiled.cached(net, False, "x", cuda_graphs=True).compiled
    assert nfe == nfe_fast == 8
    assert compiled.cached(net, True, "x").compiled and compiled.cached(net, True, "x") is compiled.cached(net, True, "y")
    assert_close_f32(out, ref, what="compiled vs eager samples")
    assert torch.equal(again, out)
    assert list(net.state_dict()) == list(models.build(p).state_dict())  # the cached wrapper is no submodule


def test_bench_speed_runs_every_section_and_prints_the_goal_lines(tmp_path):
    """benchmarks/bench_speed.py on a tiny batch: every section prints its figures (the numbers themselves are the
    benchmark's business, not a test's)."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_speed.py"), "--archs", "fmnist", "--batch", "4",
                          "--sections", "peak,layers,switches,allocator", "--parts", "forward", "--reps", "1"],
                         cwd=tmp_path, check=True, capture_output=True, text=True, timeout=600).stdout
    assert re.search(r"matmul peak, 1024\^3, best of 7: fp32 [\d.]+ GFLOP/s", out)
    assert re.search(r"GroupNorm backward, channels-last\s+[\d.]+", out)
    assert re.search(r"GroupNorm \+ SiLU fwd\+bwd, models/group_norm_act\.py\s+[\d.]+", out)
    assert re.search(r"torch's GroupNorm \+ SiLU \(no fused kernel\)\s+[\d.]+", out)
    assert re.search(r"dropout 0\.1 fwd\+bwd, models/dropout\.py\s+[\d.]+", out)
    assert re.search(r"none of them \(NCHW, torch's GN\+SiLU, out-of-place sums\)\s+[\d.]+", out)
    assert re.search(r"residual sums out of place \(x \+ h\) / sqrt 2\s+[\d.]+", out)
    assert re.search(r"goal \(issue 15\): forward >= 70% of the fp32 matmul peak: the pipeline's fp32 baseline [\d.]+% "
                     r"of the peak around it -> (met|NOT met) \([\d.]+% of the run's highest peak, the lower bound\)", out)
    assert re.search(r"glibc default\s+user\s+[\d.]+\s+system\s+[\d.]+", out)
