"""Exponential moving average of weights with the reference warm-up: decay = min(rate, (1 + n) / (10 + n))."""
from __future__ import annotations

import torch
import torch.nn as nn


class EMA:
    def __init__(self, model: nn.Module, rate: float):
        self.rate = rate
        self.num_updates = 0
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        n = self.num_updates
        decay = min(self.rate, (1 + n) / (10 + n))
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
