"""A small time-conditioned MLP score network for 2-D toys and 8x8 digits (the smoke experiment)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from pipeline.core.experiment import sample_shape
from pipeline.models.registry import register


def sinusoidal_embedding(labels: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style positional embedding of (possibly fractional) noise labels, as in DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=labels.device, dtype=torch.float32) / max(half - 1, 1))
    args = labels.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


@register("mlp")
class ScoreMLP(nn.Module):
    """net(x, labels): flattens x, concatenates an embedding of the label (log σ for VE, 999·t for VP).

    Its input is one sample of `experiment.sample_shape`: a 2-D point (n, 2) for the toys, an image (n, C, H, W) else.
    """

    def __init__(self, params):
        super().__init__()
        m = params.model
        self.shape = sample_shape(params, 1)[1:]
        self.log_label = params.training.sde == "vesde" and params.training.continuous
        dim = math.prod(self.shape)
        self.emb_dim = 64
        layers: list[nn.Module] = []
        width = dim + self.emb_dim
        for _ in range(m.num_layers):
            layers += [nn.Linear(width, m.hidden), nn.SiLU()]
            width = m.hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)
        self.scale_by_sigma = m.scale_by_sigma

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        lab = torch.log(labels) * 250.0 if self.log_label else labels
        h = torch.cat([x.reshape(b, -1), sinusoidal_embedding(lab, self.emb_dim)], dim=1)
        out = self.net(h).reshape(x.shape)
        if self.scale_by_sigma:  # NCSN++ convention: output / σ so the net predicts -z (VE, continuous)
            out = out / labels.reshape(b, *([1] * (x.dim() - 1)))
        return out
