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
from typing import Callable

import torch


class CompiledNet:
    """`net(x, labels)` through torch.compile, falling back to the eager `net` (with a logged reason) on failure.

    A failure is caught wherever compilation happens: at the first call, or at a recompilation for a new input
    shape or train / eval mode. The backward graph is compiled together with the forward one, so a failure there
    surfaces at the forward call too.
    """

    def __init__(self, net: torch.nn.Module, what: str, backend="inductor", log: Callable[[str], None] | None = None,
                 **options):
        self.net, self.what = net, what
        self.fallback_reason: str | None = None
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._compiled = torch.compile(net, backend=backend, **options)

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def __call__(self, *args, **kwargs):
        if self._compiled is not None:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - any compiler failure; a real error recurs in the eager call
                self.fallback_reason = _root_cause(err)
                self._compiled = None
                self._log(f"warning: {self.what}: torch.compile failed ({self.fallback_reason}); running the network "
                          "eagerly (same results, no compilation speed-up)")
        return self.net(*args, **kwargs)


def _root_cause(err: BaseException) -> str:
    """'Type: first line' of the innermost exception (dynamo wraps the compiler's error in BackendCompilerFailed)."""
    while getattr(err, "inner_exception", None) is not None or err.__cause__ is not None:
        err = getattr(err, "inner_exception", None) or err.__cause__
    lines = [s for s in str(err).strip().splitlines() if s.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def maybe_compile(net: torch.nn.Module, enabled: bool, what: str, **kwargs):
    """`CompiledNet(net, what)` when `enabled`, else `net` itself."""
    return CompiledNet(net, what, **kwargs) if enabled else net


def cached(net: torch.nn.Module, enabled: bool, what: str):
    """`maybe_compile`, one wrapper per network object: a sampler called batch after batch compiles (or fails and
    logs) once, not once per batch. The wrapper is kept on the module outside nn.Module's registry (so it is not a
    submodule and not in the state dict) and goes away with it."""
    if not enabled:
        return net
    wrapper = net.__dict__.get("_pipeline_compiled")
    if wrapper is None:
        wrapper = CompiledNet(net, what)
        object.__setattr__(net, "_pipeline_compiled", wrapper)
    return wrapper
