"""Random draws from explicit generators: one `torch.Generator`, or a list with one generator per batch row.

With a list, row i is drawn from generator i alone, so a sample never depends on the batch size or on which other
samples share its batch (docs/architecture.md, "Determinism by seed"). Draws are made on the generator's device and
then moved to `device`, so a CPU generator gives the same numbers whatever device the sampler runs on.

The project's one seeding scheme: `seed_for(experiment seed, stage, index, ...)` hashes its parts, so a draw depends
only on what it is for, never on the batch size, the process count or the order of other draws.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Optional, Sequence, Union

import torch

RowGenerators = Union[torch.Generator, Sequence[torch.Generator]]


def seed_for(*parts) -> int:
    """A 63-bit seed from (experiment seed, stage, index, ...): sha256 of the parts joined by '/'."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*parts, device="cpu") -> torch.Generator:
    """A generator on `device` seeded with `seed_for(*parts)`."""
    g = torch.Generator(device=device)
    g.manual_seed(seed_for(*parts))
    return g


def _check(generator: Optional[RowGenerators], shape: Sequence[int]) -> None:
    if generator is None:
        raise ValueError("a torch.Generator (or a list with one per batch row) is required: "
                         "no draw uses the global RNG")
    if not isinstance(generator, torch.Generator):
        if len(shape) == 0 or len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} per-row generators for a batch of shape {tuple(shape)}")


def _draw(sample_one: Callable[[tuple, torch.Generator], torch.Tensor], shape: Sequence[int],
          generator: Optional[RowGenerators], device, dtype) -> torch.Tensor:
    _check(generator, shape)
    shape = tuple(int(s) for s in shape)
    if isinstance(generator, torch.Generator):
        out = sample_one(shape, generator)
    else:
        out = torch.stack([sample_one(shape[1:], g) for g in generator]) if shape[0] else torch.empty(shape)
    return out.to(device=device, dtype=dtype)


def randn(shape: Sequence[int], generator: Optional[RowGenerators], device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws N(0, I) of `shape`."""
    return _draw(lambda s, g: torch.randn(s, generator=g, device=g.device), shape, generator, device, dtype)


def rand(shape: Sequence[int], generator: Optional[RowGenerators], device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Uniform draws U[0, 1) of `shape`."""
    return _draw(lambda s, g: torch.rand(s, generator=g, device=g.device), shape, generator, device, dtype)


def rademacher(shape: Sequence[int], generator: Optional[RowGenerators], device="cpu",
               dtype=torch.float32) -> torch.Tensor:
    """Rademacher draws: ±1 with probability 1/2 each (Hutchinson–Skilling probe vectors)."""
    return _draw(lambda s, g: torch.randint(0, 2, s, generator=g, device=g.device).float() * 2.0 - 1.0,
                 shape, generator, device, dtype)


def randint(high: int, shape: Sequence[int], generator: Optional[RowGenerators], device="cpu") -> torch.Tensor:
    """Uniform integers in {0, ..., high-1} of `shape` (a noise-level index per row)."""
    return _draw(lambda s, g: torch.randint(0, int(high), s, generator=g, device=g.device), shape, generator,
                 device, torch.long)
