"""Training and using the noise-conditional classifier p_t(y | x(t)) for class-conditional sampling (Score SDE Sec. 5,
App. I.1): cross-entropy on perturbed data x(t) ~ p_0t(x(t) | x(0)) = N(m(t) x(0), std(t)² I), t ~ U(ε, T), for the
experiment's SDE; its log-probabilities are what `controllable.conditional_score_fn` differentiates (Eq. 48-49).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pipeline.core import rng
from pipeline.core.sde import SDE, batch_view


def noise_classifier_inputs(sde: SDE, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_in x, log σ̂(t)): the input scaled to about unit variance, c_in = 1 / sqrt(m(t)² + std(t)²) (EDM's c_in with
    σ_data = 1, Karras et al. 2022, Table 1; = 1 for VP), and the noise label log σ̂ = log(std(t) / m(t)) = -λ(t)
    (the paper embeds log σ for VE, where m = 1). The one place the noise classifier's conditioning is defined."""
    m, std = sde.marginal_coeffs(t.to(x.dtype))
    c_in = torch.rsqrt(m ** 2 + std ** 2)
    return x * batch_view(c_in.to(x.dtype), x), (torch.log(std) - torch.log(m)).to(x.dtype)


def logp_fn(sde: SDE, net) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(x(t), t) -> log p_t(y | x(t)), shape (batch, classes): the noise classifier as `conditional_score_fn` takes it."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_in, labels = noise_classifier_inputs(sde, x, t)
        return F.log_softmax(net(x_in, labels), dim=1)

    return fn


def perturb(sde: SDE, x0: torch.Tensor, generator, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(x(t), t): t ~ U(ε, T) and x(t) = m(t) x(0) + std(t) z, one draw per row from `generator`."""
    t = eps + (sde.T - eps) * rng.rand((x0.shape[0],), generator, device=x0.device, dtype=x0.dtype)
    mean, std = sde.marginal_prob(x0, t)
    return mean + batch_view(std, x0) * rng.randn(x0.shape, generator, device=x0.device, dtype=x0.dtype), t


def perturbed_ce_loss(sde: SDE, net, x0: torch.Tensor, y: torch.Tensor, generator, eps: float = 1e-5) -> torch.Tensor:
    """E_t E_{x(t) | x(0)} [-log p_t(y | x(t))], the noise classifier's training loss (App. I.1), averaged over the batch."""
    xt, t = perturb(sde, x0, generator, eps)
    return F.nll_loss(logp_fn(sde, net)(xt, t), y)


def train_noise_classifier(sde: SDE, net, x: torch.Tensor, y: torch.Tensor, n_iters: int, batch_size: int,
                           lr: float, seed, eps: float = 1e-5, progress: bool = False) -> list[float]:
    """Train `net` in place on images x (model range, on the net's device) with labels y; returns the loss per step.

    Step i draws its batch indices, times and noise from `rng.generator(seed, "classifier", i)` alone (reproducible and
    resumable without RNG state). AdamW with a one-cycle schedule peaking at `lr`; the net is left in eval mode.
    """
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=n_iters)
    net.train()
    losses = []
    bar = tqdm(range(n_iters), desc="train noise classifier", disable=not progress,
               mininterval=0.2 if progress else 15.0)
    for step in bar:
        g = rng.generator(seed, "classifier", step)  # the stream's name kept: the same draws as before
        idx = torch.randint(x.shape[0], (batch_size,), generator=g).to(x.device)
        loss = perturbed_ce_loss(sde, net, x[idx], y[idx], g, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    net.eval()
    return losses


@torch.no_grad()
def accuracy_at_times(sde: SDE, net, x: torch.Tensor, y: torch.Tensor, times: Sequence[float], seed,
                      batch_size: int = 500) -> dict[float, float]:
    """Top-1 accuracy of argmax_y p_t(y | x(t)) on x(t) = m(t) x + std(t) z at each fixed t (noise from
    `rng.generator(seed, "classifier-test", t)`)."""
    fn = logp_fn(sde, net)
    out = {}
    for t in times:
        g = rng.generator(seed, "classifier-test", t)
        z = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
        hits = 0
        for s in range(0, x.shape[0], batch_size):
            xb = x[s:s + batch_size]
            tb = torch.full((xb.shape[0],), float(t), device=x.device, dtype=x.dtype)
            mean, std = sde.marginal_prob(xb, tb)
            pred = fn(mean + batch_view(std, xb) * z[s:s + batch_size], tb).argmax(1)
            hits += int((pred == y[s:s + batch_size]).sum())
        out[float(t)] = hits / x.shape[0]
    return out
