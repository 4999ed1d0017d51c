"""pipeline.speed.group_norm_act: the fused GroupNorm (+ SiLU) CPU kernel against float64 GroupNorm and SiLU, and
its fallbacks to torch's modules."""
from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from pipeline.speed import group_norm_act as gna
from pipeline.speed.group_norm_act import group_norm_act, unfused

CL = torch.channels_last


@pytest.fixture(scope="module")
def kernel():
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler: the pipeline runs torch's GroupNorm and SiLU (the fallback tests still run)")
    ext = gna.extension()
    assert ext is not None, "the C++ kernel must build on the test machines (g++ and ninja are installed)"
    return ext


def _inputs(n, c, h, w, groups, seed=0, offset=0.0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    x = (offset + scale * torch.randn(n, c, h, w, generator=g)).contiguous(memory_format=CL)
    norm = nn.GroupNorm(groups, c, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.5 * torch.randn(c, generator=g))
        norm.bias.copy_(0.5 * torch.randn(c, generator=g))
    dy = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=CL)
    return x, norm, dy


def _reference(x, norm, dy, silu):
    """Values and gradients of act(GroupNorm(x)) in float64 autograd: the exact answer up to float64 rounding."""
    xd = x.double().requires_grad_()
    wd, bd = (p.detach().double().requires_grad_() for p in (norm.weight, norm.bias))
    y = F.group_norm(xd, norm.num_groups, wd, bd, norm.eps)
    y = F.silu(y) if silu else y
    return (y.detach(), *torch.autograd.grad(y, (xd, wd, bd), dy.double()))


def _fused(x, norm, dy, silu):
    x = x.clone().requires_grad_()
    norm.zero_grad(set_to_none=True)
    y = group_norm_act(x, norm, nn.SiLU() if silu else None)
    y.backward(dy)
    return y.detach(), x.grad, norm.weight.grad, norm.bias.grad


def _close(got, want, rel=2e-5):
    """float32 results against float64 ones: error within rel of the largest magnitude compared."""
    assert got.shape == want.shape
    err = (got.double() - want).abs().max().item()
    assert err <= rel * want.abs().max().item(), (err, want.abs().max().item())


@pytest.mark.parametrize("silu", [True, False])
@pytest.mark.parametrize("shape", [(3, 64, 16, 16, 16), (2, 32, 7, 5, 8), (4, 12, 12, 12, 3), (1, 8, 1, 1, 2)])
def test_values_and_gradients_match_float64_group_norm(shape, silu, kernel):
    """Odd spatial sizes, more rows than one float chunk (12 x 12 = 144 > 64), a single pixel, several groups."""
    *size, groups = shape
    x, norm, dy = _inputs(*size, groups)
    for got, want in zip(_fused(x, norm, dy, silu), _reference(x, norm, dy, silu)):
        _close(got, want)


def test_group_statistics_are_exact_for_a_large_mean(kernel):
    """x = 1000 + N(0, 1): E[x^2] - E[x]^2 in float32 would be off by ~0.06 in the variance; the kernel's two passes
    give unit-variance groups (w = 1, b = 0). Bounds: float32 holds x to 6e-5 (its spacing at 1000) and mu, x * A,
    B = -mu * A to as much again, so z = A x + B is good to a few 1e-5 absolute."""
    x, norm, dy = _inputs(2, 16, 8, 8, 4, offset=1000.0, scale=1.0)
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
    y, *grads = _fused(x, norm, dy, silu=False)
    groups = y.contiguous().view(2, 4, 4 * 64)  # [n, g, D * HW]
    assert groups.mean(-1).abs().max().item() < 3e-4
    assert (groups.var(-1, unbiased=False) - 1).abs().max().item() < 1e-3
    for got, want in zip((y, *grads), _reference(x, norm, dy, silu=False)):
        _close(got, want, rel=1e-4)


def test_silu_against_float64_over_the_whole_range(kernel):
    """SiLU through the kernel's own exp: z from -200 to 200 (exp's argument clamped at -87 / 88) within 1e-6
    relative of float64 SiLU, 0 and z at the ends as torch gives. One pixel per group and w = 0 make z = b exactly."""
    z = torch.cat([torch.linspace(-100, 100, 4001), torch.tensor([-200.0, -1e-3, 0.0, 1e-3, 200.0])])
    norm = nn.GroupNorm(z.numel(), z.numel(), eps=1e-6)
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.copy_(z)
    x = torch.randn(1, z.numel(), 1, 1).contiguous(memory_format=CL)
    y = group_norm_act(x, norm, nn.SiLU()).view(-1).double()
    want = F.silu(z.double())
    assert ((y - want).abs() <= 1e-6 * want.abs() + 1e-30).all()


def test_results_do_not_depend_on_the_thread_count(kernel):
    x, norm, dy = _inputs(8, 32, 8, 8, 8, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _fused(x, norm, dy, silu=True)
        torch.set_num_threads(2)
        two = _fused(x, norm, dy, silu=True)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_output_is_channels_last_and_unfused_is_torch_itself(kernel):
    x, norm, dy = _inputs(2, 16, 4, 4, 4)
    y = group_norm_act(x, norm, nn.SiLU())
    assert y.is_contiguous(memory_format=CL)
    with unfused():
        assert torch.equal(group_norm_act(x, norm, nn.SiLU()), F.silu(norm(x)))
    _close(y, F.silu(norm(x)).double(), rel=1e-5)


@pytest.mark.parametrize("case", ["nchw", "bf16", "elu", "meta"])
def test_other_inputs_go_through_torch_modules(case):
    """NCHW, bf16, another activation: torch's modules, bit for bit. The meta device stands in for CUDA: the
    output stays on the input's device (the kernel is CPU-only)."""
    x, norm, _ = _inputs(2, 16, 4, 4, 4)
    act = nn.ELU() if case == "elu" else nn.SiLU()
    if case == "nchw":
        x = x.contiguous()
    elif case == "bf16":
        x, norm = x.bfloat16(), norm.bfloat16()
    elif case == "meta":
        x, norm = x.to("meta"), norm.to("meta")
    y = group_norm_act(x, norm, act)
    assert y.device == x.device and y.dtype == x.dtype
    if case != "meta":
        assert torch.equal(y, act(norm(x)))


def test_a_failed_build_falls_back_with_one_line(monkeypatch, capsys):
    def broken():
        raise RuntimeError("Error building extension 'x'\nninja: build stopped")
    monkeypatch.setattr(gna, "_build", broken)
    gna.extension.cache_clear()
    try:
        x, norm, _ = _inputs(2, 16, 4, 4, 4)
        assert gna.extension() is None
        assert torch.equal(group_norm_act(x, norm, nn.SiLU()), F.silu(norm(x)))
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Error building extension 'x'" in err[0] and "torch's GroupNorm" in err[0]
    finally:
        gna.extension.cache_clear()


def test_clones_share_one_build_until_the_source_changes(tmp_path, monkeypatch):
    """The build compiles a copy of the source kept in the cache: a second clone of the repository (another path, same
    bytes) leaves the copy, and so ninja's inputs, untouched; an edited source replaces it, so ninja rebuilds."""
    build = tmp_path / "build"
    build.mkdir()
    first = gna._cached_source(build)
    assert first == build / gna.SOURCE.name and first.read_bytes() == gna.SOURCE.read_bytes()
    stamp = first.stat().st_mtime_ns
    clone = tmp_path / "clone" / "group_norm_act.cpp"
    clone.parent.mkdir()
    clone.write_bytes(gna.SOURCE.read_bytes())
    monkeypatch.setattr(gna, "SOURCE", clone)
    assert gna._cached_source(build) == first and first.stat().st_mtime_ns == stamp
    clone.write_bytes(clone.read_bytes() + b"// an edit\n")
    assert gna._cached_source(build).read_bytes() == clone.read_bytes()
    assert [p.name for p in build.iterdir()] == [gna.SOURCE.name]  # no temporary file left behind


def test_the_build_runs_the_project_ninja_whatever_path_holds(tmp_path, monkeypatch):
    """Another ninja first on PATH (a system one): the build still runs the wheel's, beside the interpreter, so that
    processes with other PATHs never take each other's build for another command; PATH is restored after."""
    import os
    import sys

    here = os.path.dirname(sys.executable)
    if shutil.which("ninja", path=here) is None:
        pytest.skip("no ninja wheel beside this interpreter (the build uses the one on PATH)")
    other = tmp_path / "ninja"
    other.write_text("#!/bin/sh\necho 0.0\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which("ninja") == str(other)
    with gna._project_ninja():
        assert shutil.which("ninja") == os.path.join(here, "ninja")
    assert shutil.which("ninja") == str(other)


@pytest.mark.parametrize("resblock", ["biggan", "ddpm"])
def test_ncsnpp_agrees_with_the_unfused_net(resblock, kernel):
    """A whole NCSN++ (GN+SiLU twice in every block, GN alone in attention, GN+SiLU before the output conv): output
    and every parameter gradient agree with the net on torch's modules."""
    from pipeline.config import Params
    from pipeline.models import zoo as models
    from pipeline.models.layers import ddpm_init_

    model = dict(name="ncsnpp", nf=16, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[8], fir=True,
                 fir_kernel=[1, 3, 3, 1], skip_rescale=True, resblock_type=resblock, progressive="none",
                 progressive_input="residual", embedding_type="fourier", fourier_scale=16, scale_by_sigma=True,
                 dropout=0.0)
    params = Params(model=model, data=dict(image_size=16, num_channels=1), training=dict(continuous=True, sde="vesde"))
    torch.manual_seed(0)
    net = models.build(params)
    with torch.no_grad():  # the zero-started convs (DDPM init, scale 1e-10) would leave the GN gradients ~1e-26
        for name, p in net.named_parameters():
            if p.dim() > 1 and p.abs().max() < 1e-4:
                ddpm_init_(p)
            elif "GroupNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    x, sigma = torch.randn(4, 1, 16, 16), torch.tensor([0.05, 0.5, 5.0, 40.0])

    def run():
        net.zero_grad(set_to_none=True)
        out = net(x, sigma)
        (out * sigma.view(-1, 1, 1, 1)).square().mean().backward()
        return out.detach() * sigma.view(-1, 1, 1, 1), {n: p.grad.clone() for n, p in net.named_parameters()
                                                        if p.grad is not None}

    calls = []
    real = gna._GroupNormAct.apply
    gna._GroupNormAct.apply = lambda *a: calls.append(a[-1]) or real(*a)
    try:
        out, grads = run()
    finally:
        gna._GroupNormAct.apply = real
    assert True in calls and False in calls  # both kinds of call went through the kernel
    with unfused():
        out_ref, grads_ref = run()
    _close(out, out_ref.double(), rel=1e-4)
    assert grads.keys() == grads_ref.keys() and len(grads) > 20
    scale = max(g.abs().max().item() for g in grads_ref.values())
    for name, g in grads.items():
        if name.endswith("NIN_1.b"):  # attention's key bias: softmax ignores it, its gradient is 0 up to rounding
            assert g.abs().max().item() <= 1e-6 * scale
        else:
            _close(g, grads_ref[name].double(), rel=1e-3)
