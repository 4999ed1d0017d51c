"""Exponential moving average of the weights, θ̄ ← β θ̄ + (1 - β) θ after each optimizer step, with the decay β of
one of three schedules (`model.ema_schedule`):

- `reference` (Score SDE's code, the papers' runs): β_n = min(rate, (1 + n) / (10 + n)) at update n. The warm-up
  ends at n = (10 rate - 1) / (1 - rate), 8,990 updates for 0.999 and 89,990 for 0.9999: over a 1.3 M-step run
  this is the constant `rate`; over 1,000 steps β is (1 + n) / (10 + n) throughout, an average whose weights grow
  as (m / n)^9, i.e. mostly over the last ~10% of the updates.
- `constant`: β = rate from the first update (no warm-up): over n updates the start keeps rate^n of the weight
  (0.999^1000 = 37%), what a short run must not do.
- `edm` (Karras et al. 2022: an EMA half-life in images, Table 7, ramped up with the run): β = 0.5^(B / h), h = min(halflife_kimg · 1000,
  rampup_ratio · n · B) images for batch size B: the average spans a fixed fraction of the images seen so far, so it
  fits a run of any length, up to a half-life cap.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn

from pipeline.names import EMA_SCHEDULES


def ema_decay(n: int, schedule: str, rate: float, batch_size: int = 1, halflife_kimg: float = 500.0,
              rampup_ratio: float | None = 0.05) -> float:
    """β at update n = 1, 2, ... of `schedule` (module docstring)."""
    if n < 1:
        raise ValueError(f"EMA updates count from 1, got {n}")
    if schedule == "reference":
        return min(rate, (1 + n) / (10 + n))
    if schedule == "constant":
        return rate
    if schedule == "edm":
        halflife = halflife_kimg * 1000.0
        if rampup_ratio:
            halflife = min(halflife, rampup_ratio * n * batch_size)
        return 0.5 ** (batch_size / max(halflife, 1e-8))
    raise ValueError(f"unknown EMA schedule {schedule!r}: one of {', '.join(EMA_SCHEDULES)}")


def decay_of(model_cfg, batch_size: int) -> Callable[[int], float]:
    """The decay function of a params file's model block (`ema_schedule`, `ema_rate`, `ema_halflife_kimg`,
    `ema_rampup_ratio`) for a global batch of `batch_size` images."""
    return partial(ema_decay, schedule=model_cfg.ema_schedule, rate=model_cfg.ema_rate, batch_size=batch_size,
                   halflife_kimg=model_cfg.ema_halflife_kimg, rampup_ratio=model_cfg.ema_rampup_ratio)


class EMA:
    """Shadow weights (float32) of `model`, updated with β = `decay(n)` (default: the reference schedule at `rate`)."""

    def __init__(self, model: nn.Module, rate: float, decay: Callable[[int], float] | None = None):
        self.rate = rate
        self.decay = decay or partial(ema_decay, schedule="reference", rate=rate)
        self.num_updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = self.decay(self.num_updates)
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(decay).add_(v.detach().float(), alpha=1 - decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return {"rate": self.rate, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        """Loads a saved state onto the device of the current shadow weights (a snapshot is read to the CPU)."""
        self.rate, self.num_updates = state["rate"], state["num_updates"]
        self.shadow = {k: v.to(self.shadow[k].device if k in self.shadow else v.device).clone()
                       for k, v in state["shadow"].items()}

    def weights(self, like: nn.Module) -> dict:
        ref = like.state_dict()
        return {k: self.shadow[k].to(ref[k].dtype) for k in ref}
