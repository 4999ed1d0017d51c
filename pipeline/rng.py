"""Random draws from explicit generators: one `torch.Generator`, or a list with one generator per batch row.

With a list, row i is drawn from generator i alone, so a sample never depends on the batch size or on which other
samples share its batch (ARCHITECTURE.md, "Determinism by seed"). Draws are made on the generator's device and then
moved to `device`, so a CPU generator gives the same numbers whatever device the sampler runs on.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

RowGenerators = Union[torch.Generator, Sequence[torch.Generator]]


def per_row_generators(seed: int, first_row: int, count: int) -> list[torch.Generator]:
    """Generators for rows `first_row .. first_row+count-1` of a run seeded with `seed` (row i gets seed+i)."""
    return [torch.Generator().manual_seed(int(seed) + first_row + i) for i in range(count)]


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
