"""torch.compile (inductor) of a score network, behind the `training.compile` and `sampling.compile` switches.

Compilation is lazy: the first call traces the network and builds its kernels with the C++ compiler (CPU) or Triton
(GPU). If that fails (no compiler, an op inductor cannot lower, ...), one line with the reason goes to stderr and the
network runs eagerly from then on, so a run never stops because of the switch. The wrapper is a plain callable
`net(x, labels)` used where the loss or the score function calls the network: the module itself, its state dict and
its checkpoints are untouched (torch.compile's OptimizedModule would prefix every key with `_orig_mod.`).

Results agree with the eager network within float32 rounding (tests/test_speed_switches.py), not bitwise: inductor
fuses and reorders elementwise arithmetic. Dropout draws its masks from inductor's own generator, so with
`model.dropout > 0` a compiled training run matches an eager one in distribution only.
Whether compiling pays is measured in benchmarks/bench_speed.py (--compile); compilation itself takes about a minute
of CPU for the default suite's NCSN++ (once per process and input shape; inductor caches kernels on disk).
"""
from __future__ import annotations

import sys
from typing import Callable, TypeVar

import torch

BACKEND = "inductor"  # torch.compile's backend (tests swap in failing ones)
T = TypeVar("T")


class CompiledNet:
    """`net(x, labels)` through torch.compile, falling back to the eager `net` (with a logged reason) on failure.

    A failure is caught where the forward graph compiles: at the first call, or at a recompilation for a new input
    shape or train / eval mode. The backward graph is compiled lazily, at the first backward pass, outside this
    call: `run_with_fallback` covers a training step.
    """

    def __init__(self, net: torch.nn.Module, what: str, backend=None, log: Callable[[str], None] | None = None,
                 cuda_graphs: bool = False, **options):
        self.net, self.what, self.cuda_graphs = net, what, cuda_graphs
        self.fallback_reason: str | None = None
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        if cuda_graphs:
            options["mode"] = "reduce-overhead"  # CUDA graphs (CUDA inputs only; elsewhere inductor's default)
        self._compiled = torch.compile(net, backend=backend or BACKEND, **options)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, *args, **kwargs):
        if self._compiled is not None:
            try:
                if not self.cuda_graphs:
                    return self._compiled(*args, **kwargs)
                # A CUDA graph writes every replay's output into the same memory: a sampler holding one evaluation
                # while it makes the next (Heun, DPM-Solver, RK45) needs its own copy.
                torch.compiler.cudagraph_mark_step_begin()
                out = self._compiled(*args, **kwargs)
                return out.clone() if out.is_cuda else out
            except Exception as err:  # noqa: BLE001 - any compiler failure; a real error recurs in the eager call
                self.fall_back(err)
        return self.net(*args, **kwargs)

    def fall_back(self, err: BaseException) -> None:
        """Run eagerly from now on; one line with the reason to the log."""
        self.fallback_reason = _root_cause(err)
        self._compiled = None
        self._log(f"warning: {self.what}: torch.compile failed ({self.fallback_reason}); running the network "
                  "eagerly (same results, no compilation speed-up)")


def run_with_fallback(forward, step: Callable[[], T], reset: Callable[[], None]) -> T:
    """step() (forward and backward passes through `forward`). If it raises while `forward` is a compiled network
    (the backward graph compiles at the first backward pass), `forward` falls back to eager, reset() clears what
    the failed pass left (gradients) and step() runs again: the step is then exactly an eager step (step() reseeds
    its own randomness). A real error recurs in the eager rerun and propagates."""
    if not (isinstance(forward, CompiledNet) and forward.compiled):
        return step()
    try:
        return step()
    except Exception as err:  # noqa: BLE001
        if not forward.compiled:  # the forward pass already fell back: the error is the eager network's own
            raise
        forward.fall_back(err)
        reset()
        return step()


def _root_cause(err: BaseException) -> str:
    """'Type: first line' of the innermost exception (dynamo wraps the compiler's error in BackendCompilerFailed)."""
    while getattr(err, "inner_exception", None) is not None or err.__cause__ is not None:
        err = getattr(err, "inner_exception", None) or err.__cause__
    lines = [s for s in str(err).strip().splitlines() if s.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def maybe_compile(net: torch.nn.Module, enabled: bool, what: str, **kwargs):
    """`CompiledNet(net, what)` when `enabled`, else `net` itself."""
    return CompiledNet(net, what, **kwargs) if enabled else net


def cached(net: torch.nn.Module, enabled: bool, what: str, cuda_graphs: bool = False):
    """`maybe_compile`, one wrapper per network object and mode: a sampler called batch after batch compiles (or
    fails and logs) once, not once per batch. The wrappers are kept on the module outside nn.Module's registry (so
    they are no submodules and not in the state dict) and go away with it. `cuda_graphs` implies `enabled`."""
    if not (enabled or cuda_graphs):
        return net
    wrappers = net.__dict__.setdefault("_pipeline_compiled", {})
    if cuda_graphs not in wrappers:
        wrappers[cuda_graphs] = CompiledNet(net, what, cuda_graphs=cuda_graphs)
    return wrappers[cuda_graphs]
