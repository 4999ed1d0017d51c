"""GroupNorm followed by SiLU (or by nothing) as one CPU kernel, forward and backward: `group_norm_act`.

Every residual block of NCSN++ / DDPM++ runs act(GroupNorm(h)) twice (Song et al. 2021, App. H; Ho et al. 2020,
App. B), the attention blocks GroupNorm alone. In eager PyTorch on channels-last CPU activations that is four
memory-bound passes forward and four back, and ATen's channels-last GroupNorm backward is 3-4x slower than its NCHW
one (benchmarks/bench_speed.py, `layers` section). `group_norm_act.cpp` does the forward in one read of the input
(the sample's statistics are taken while it sits in cache) and one write, and the backward the same way; the SiLU
input is recomputed from x instead of stored. Same math, float32 throughout with double group sums:
  forward  y = act(z), z = (x - mu) * rstd * w + b;
  backward as in group_norm_act.cpp's header comment. Results agree with torch's GroupNorm + SiLU within float32
rounding (tests/test_group_norm_act.py), not bitwise, and do not depend on the thread count.

The kernel is compiled with the C++ compiler on first use (about 30 s, once per machine and torch version; cached
under ~/.cache/score-pipeline/kernels or $PIPELINE_KERNEL_CACHE) and runs for float32 channels-last CPU tensors.
Everything else (CUDA, bf16, NCHW, torch.compile tracing, another activation) goes through torch's GroupNorm and
activation modules, and so does everything when the kernel cannot be built (one line with the reason on stderr) or
when PIPELINE_CPU_KERNELS=0. Modules keep their names and state dicts: only the call changes.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
from pathlib import Path

import torch
import torch.nn as nn

SOURCE = Path(__file__).with_suffix(".cpp")
NAME = "score_pipeline_group_norm_act"
DISABLE_ENV = "PIPELINE_CPU_KERNELS"  # "0" turns the kernel off
_enabled = os.environ.get(DISABLE_ENV, "1") != "0"


def cache_dir() -> Path:
    base = os.environ.get("PIPELINE_KERNEL_CACHE") or Path.home() / ".cache" / "score-pipeline" / "kernels"
    version = torch.__version__.replace("+", "_")
    return Path(base) / f"torch{version}-py{sys.version_info.major}{sys.version_info.minor}" / NAME


def _build():
    """Compile (or load the cached) extension; raises on failure."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" is not news here
    from torch.utils.cpp_extension import load

    build = cache_dir()
    build.mkdir(parents=True, exist_ok=True)
    # torch serialises builders with an OS lock on build/lock (released if a builder dies) and lets ninja rebuild
    # only when the source changed. Ninja's build line names the source's path: compiling a copy kept in the cache
    # lets every clone of the repository (and the tests' copies) share one build while the source's bytes are equal.
    with _project_ninja():
        return load(NAME, [str(_cached_source(build))], extra_cflags=["-O3"], build_directory=str(build),
                    verbose=False)


@contextlib.contextmanager
def _project_ninja():
    """PATH with the pip wheel's ninja (a pyproject dependency, beside this interpreter) first, whatever else PATH
    holds. Two ninja versions hash a build line differently (the system's 1.11 and the wheel's 1.13 here): each takes
    the other's log entry for another command and recompiles, 25 s every time a process finds the other one first."""
    here = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if shutil.which("ninja", path=here) is None and shutil.which("ninja") is not None:
        yield  # no wheel beside this interpreter: the one on PATH
        return
    os.environ["PATH"] = here + os.pathsep + path
    try:
        yield
    finally:
        os.environ["PATH"] = path


def _cached_source(build: Path) -> Path:
    """SOURCE copied into `build` when the copy there differs (so its mtime, which ninja reads, moves only then)."""
    copy = build / SOURCE.name
    text = SOURCE.read_bytes()
    if not copy.is_file() or copy.read_bytes() != text:
        tmp = copy.with_name(f".{copy.name}.{os.getpid()}.tmp")
        tmp.write_bytes(text)
        os.replace(tmp, copy)  # atomic: a builder beside this one reads the old or the new file, never half of one
    return copy


@functools.cache
def extension():
    """The compiled kernel module, or None (reason logged once) when it cannot be built."""
    try:
        return _build()
    except Exception as e:  # no compiler, no ninja, a read-only cache, ...: torch's modules do the same work
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"group_norm_act: fused CPU kernel unavailable ({reason}); using torch's GroupNorm and SiLU",
              file=sys.stderr, flush=True)
        return None


class _GroupNormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float, silu: bool):
        with torch.profiler.record_function("pipeline::group_norm_act"):  # a category of bench_speed's profile
            y, mean, rstd = extension().forward(x, weight, bias, groups, eps, silu)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.groups, ctx.silu = groups, silu
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        dy = dy.contiguous(memory_format=torch.channels_last)
        with torch.profiler.record_function("pipeline::group_norm_act_backward"):
            dx, dw, db = extension().backward(dy, x, mean, rstd, weight, bias, ctx.groups, ctx.silu)
        return dx, dw, db, None, None, None


CALLS = {"fused": 0, "torch": 0}  # group_norm_act calls by path since the process started (results differ at rounding)


def backend() -> str:
    """Which GroupNorm + SiLU ran in this process, for a stage's outputs: "fused kernel", "torch modules", "both
    (fused N, torch M calls)" or "none" (no GroupNorm call)."""
    fused, plain = CALLS["fused"], CALLS["torch"]
    if fused and plain:
        return f"both (fused {fused}, torch {plain} calls)"
    return "fused kernel" if fused else "torch modules" if plain else "none"


def fusable(x: torch.Tensor, norm: nn.GroupNorm) -> bool:
    """Whether the kernel handles this call (module docstring); building it on first need."""
    return (_enabled and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and x.is_contiguous(memory_format=torch.channels_last) and norm.affine
            and norm.weight.dtype == torch.float32 and norm.weight.device.type == "cpu"
            and not torch.compiler.is_compiling() and extension() is not None)


def group_norm_act(x: torch.Tensor, norm: nn.GroupNorm, act: nn.Module | None = None) -> torch.Tensor:
    """act(norm(x)) (norm(x) for act None): the fused kernel where `fusable` and act is SiLU or None, else the
    modules themselves."""
    silu = isinstance(act, nn.SiLU)
    if (act is None or silu) and fusable(x, norm):
        CALLS["fused"] += 1
        return _GroupNormAct.apply(x, norm.weight, norm.bias, norm.num_groups, norm.eps, silu)
    if not torch.compiler.is_compiling():  # a traced call is counted by what the compiled graph runs: not here
        CALLS["torch"] += 1
    h = norm(x)
    return h if act is None else act(h)


@contextlib.contextmanager
def unfused():
    """Inside, group_norm_act runs torch's modules (benchmarks and tests compare the two)."""
    global _enabled
    saved, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = saved
