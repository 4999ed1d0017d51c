"""The training loop on Accelerate: one loop for CPU, one GPU, DDP and several machines.

Determinism by step: the batch and the loss noise of step n are drawn from generators seeded by (seed, n, sample
index), so a resumed run needs only weights, EMA, optimizer and step, and 2 processes x B/2 see the same global batch
as 1 process x B. Snapshots are atomic folders with checksums; the newest complete one is resumed.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.core import losses
from pipeline.core.ema import EMA, decay_of
from pipeline.core.experiment import make_sde
from pipeline.core.rng import generator, seed_for
from pipeline.core.scaling import to_model_range
from pipeline.errors import StageError
from pipeline.io import atomic, checkpoint
from pipeline.io.progress import bar as tqdm
from pipeline.models import zoo as models
from pipeline.speed import compiled


class TrainingDiverged(StageError):
    pass


@dataclass
class TrainResult:
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, EMA evaluation loss) every eval_freq
    final_loss: float = float("nan")
    ema_eval_loss: float = float("nan")
    seconds: float = 0.0
    images_per_s: float = 0.0
    resumed_from: int = 0


def batch_indices(n_data: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Global batch of step `step` (0-based): consecutive slices of per-epoch permutations seeded by (seed, epoch)."""
    start = step * batch
    out, pos = [], start
    while len(out) < batch:
        epoch, offset = divmod(pos, n_data)
        perm = np.random.default_rng(seed_for(seed, "epoch", epoch)).permutation(n_data)
        take = perm[offset: offset + batch - len(out)]
        out.extend(take.tolist())
        pos += len(take)
    return np.asarray(out)


def make_batch(params, data: torch.Tensor, idx: np.ndarray, step: int) -> torch.Tensor:
    """The training batch for global indices `idx` (random flip and dequantization drawn per sample)."""
    d = params.data
    x = data[torch.as_tensor(idx)]
    if x.dtype != torch.uint8:  # 2-D toys: float points, used as they are
        return x.float()
    gens = [generator(params.seed, "augment", step, int(i)) for i in idx]
    x = to_model_range(x, d.centered, dequantize_with=gens if d.uniform_dequantization else None)
    if d.random_flip:
        flip = torch.tensor([bool(torch.rand((), generator=g) < 0.5) for g in gens])
        x[flip] = x[flip].flip(-1)
    return x


def loss_generators(params, step: int, idx_positions: range) -> list[torch.Generator]:
    """One generator per position in the global batch: the loss noise of a sample does not depend on sharding."""
    return [generator(params.seed, "loss", step, j) for j in idx_positions]


def learning_rate(optim_cfg, step: int) -> float:
    """Linear warm-up to optim.lr over optim.warmup steps (reference: lr * min(step / warmup, 1))."""
    if optim_cfg.warmup <= 0:
        return optim_cfg.lr
    return optim_cfg.lr * min((step + 1) / optim_cfg.warmup, 1.0)


# --- snapshots ----------------------------------------------------------------------------------------------------
def _checksums(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): atomic.sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "checksums.json"}


def valid_snapshots(folder: Path) -> list[tuple[int, Path]]:
    """Complete snapshots, newest first; a truncated or corrupt one is reported and skipped."""
    out = []
    for d in sorted(folder.glob("step_*"), reverse=True):
        sums = d / "checksums.json"
        try:
            expected = json.loads(sums.read_text())
            ok = expected == _checksums(d)
        except (OSError, ValueError):
            ok = False
        if ok:
            out.append((int(d.name.split("_")[1]), d))
        else:
            print(f"warning: snapshot {d} is incomplete or corrupt (checksum mismatch); using an older one")
    return out


def save_snapshot(accelerator, folder: Path, step: int, ema: EMA | None, keep: int, losses=(), on_write=None,
                  eval_losses=(), fingerprint: str | None = None) -> None:
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:09d}"
    with atomic.atomic_dir(final) as tmp:
        accelerator.save_state(str(tmp), safe_serialization=False)
        if on_write is not None:
            on_write(step, tmp)
        (tmp / FINGERPRINT).write_text(json.dumps({"fingerprint": fingerprint}))
        torch.save({"step": step, "ema": ema.state_dict() if ema else None,
                    "losses": torch.tensor(list(losses), dtype=torch.float64),
                    "eval_losses": torch.tensor(list(eval_losses), dtype=torch.float64).reshape(-1, 2)},
                   tmp / "pipeline_state.pt")
        (tmp / "checksums.json").write_text(json.dumps(_checksums(tmp), indent=1))
    for _, old in valid_snapshots(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


FINGERPRINT = "fingerprint.json"  # in each snapshot (under its checksums): what made the steps it holds


def snapshot_fingerprint(path: Path) -> str | None:
    try:
        return json.loads((path / FINGERPRINT).read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def set_aside(folder: Path) -> Path:
    """Move the snapshots folder to `<folder>.superseded/<UTC time>`: kept, never deleted, out of the resume path."""
    dest = folder.with_name(folder.name + ".superseded") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    n = 0
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{dest.name.split('.')[0]}.{n}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder.rename(dest)
    return dest


def resumable(snapshot_dir: Path, n_iters: int, fingerprint: str | None, say=print) -> list[tuple[int, Path]]:
    """The snapshots training may resume from, newest first: complete ones at most `n_iters` steps in. When the newest
    was made with another fingerprint (other code, params or data), the whole folder (kept weights included) is set
    aside and training starts at step 0; `fingerprint=None` (no provenance asked for) resumes as before."""
    if not snapshot_dir.exists():
        return []
    for stale in snapshot_dir.glob(".step_*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)  # a snapshot whose writer was killed half-way
    snaps = valid_snapshots(snapshot_dir)
    if snaps and fingerprint is not None and snapshot_fingerprint(snaps[0][1]) != fingerprint:
        made = snapshot_fingerprint(snaps[0][1])
        aside = set_aside(snapshot_dir)
        say(f"snapshots made by other code, params or data (fingerprint {str(made)[:12]}, now {fingerprint[:12]}) "
            f"moved to {aside}; training starts at step 0")
        return []
    return [(step, path) for step, path in snaps if step <= n_iters]


KEPT_WEIGHTS = "weights"  # snapshot_dir/weights/step_<step>.pt: the weights kept every training.ckpt_freq steps


def keep_weights(folder: Path, params, model, ema: EMA | None, step: int) -> None:
    """The weights as a project checkpoint `folder/step_<step>.pt`, the plain ones and the EMA where kept: the input
    of the checkpoint curve, which evaluates both (Score SDE evaluates checkpoints over training and reports the best,
    Table 3). A few MB each, unlike a resumable snapshot (optimizer state, RNG states)."""
    raw = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checkpoint.save(folder / f"step_{step:09d}.pt", checkpoint.make(
        params, raw, {k: v.cpu() for k, v in ema.weights(model).items()} if ema is not None else None, step))


# --- the loop -----------------------------------------------------------------------------------------------------
def train(params, train_data: torch.Tensor, eval_data: torch.Tensor, snapshot_dir: Path, *, accelerator,
          tracker=None, progress: bool = True, on_snapshot=None, on_step=None,
          on_snapshot_write=None, fingerprint: str | None = None) -> tuple[torch.nn.Module, EMA | None, TrainResult]:
    """Train `params.model` on `train_data` (uint8 NCHW or float points); resume from `snapshot_dir` if possible.

    `accelerator`: the run's Accelerator, from `pipeline.training.launch.make_accelerator(params)` (the one place it
    is built) or a stand-in with the same methods.

    Callbacks: on_snapshot(step, model, ema) after each snapshot (MLflow sample grids); on_step(step, loss) after each
    optimizer step, whose non-None return replaces the loss, and on_snapshot_write(step, folder) while a snapshot is
    half-written (the no-lost-work tests inject SIGKILL and NaN losses through these two). `fingerprint`: what
    makes the steps (`resumable`); each snapshot records it, and only a snapshot with the same one is resumed.
    """
    t_cfg, o_cfg, m_cfg = params.training, params.optim, params.model
    world, rank = accelerator.num_processes, accelerator.process_index
    B, accum = t_cfg.batch_size, t_cfg.gradient_accumulation_steps
    if B % (world * accum):
        raise StageError(f"training.batch_size: {B} is not divisible by processes x gradient_accumulation_steps = {world * accum}")

    torch.manual_seed(params.seed)  # weight initialisation
    net = models.build(params)
    opt_cls = torch.optim.AdamW if o_cfg.optimizer == "AdamW" else torch.optim.Adam
    # foreach: one multi-tensor kernel per update term instead of a loop over parameters (CUDA's default; on CPU
    # 1.06x per NCSN++ / DDPM++ train step, benchmarks/bench_speed.py)
    optimizer = opt_cls(net.parameters(), lr=o_cfg.lr, betas=(o_cfg.beta1, 0.999), eps=o_cfg.eps, weight_decay=o_cfg.weight_decay,
                        foreach=True)
    net, optimizer = accelerator.prepare(net, optimizer)
    # after prepare: the EMA's shadow weights live on the accelerator's device, beside the weights they average
    ema = (EMA(accelerator.unwrap_model(net), m_cfg.ema_rate, decay_of(m_cfg, t_cfg.batch_size))
           if t_cfg.use_ema else None)
    forward = compiled.maybe_compile(net, t_cfg.compile, f"training.compile ({params.model.name})")  # net(x, labels)
    sde = make_sde(params)
    loss_fn = losses.get_loss_fn(sde, continuous=t_cfg.continuous, reduce_mean=t_cfg.reduce_mean,
                                 likelihood_weighting=t_cfg.likelihood_weighting)

    start = 0
    snaps = resumable(snapshot_dir, t_cfg.n_iters, fingerprint, accelerator.print) if accelerator.is_main_process else []
    if world > 1:  # the main process alone sets a stale folder aside; the other ranks read what it left
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            snaps = resumable(snapshot_dir, t_cfg.n_iters, None)
    if snaps:
        step0, path = snaps[0]
        accelerator.load_state(str(path))
        state = torch.load(path / "pipeline_state.pt", map_location="cpu", weights_only=True)
        if ema is not None and state["ema"] is not None:
            ema.load_state_dict(state["ema"])
        start = state["step"]
        accelerator.print(f"resuming from snapshot {path} (step {start})")
    result = TrainResult(step=start, resumed_from=start)
    if snaps and len(state.get("losses", ())):  # the loss curve before the resume point
        result.losses = [(int(s), float(v)) for s, v in state["losses"].tolist()]
    if snaps and len(state.get("eval_losses", ())):
        result.eval_losses = [(int(s), float(v)) for s, v in state["eval_losses"].tolist()]

    stop = {"sig": None}
    old_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(sig="SIGTERM"))
    per_proc = B // world
    micro = per_proc // accum
    t0, done_images = time.perf_counter(), 0
    bar = tqdm(range(start, t_cfg.n_iters), initial=start, total=t_cfg.n_iters, desc="train",
               disable=not (progress and accelerator.is_main_process))
    try:
        for step in bar:
            for g in optimizer.param_groups:
                g["lr"] = learning_rate(o_cfg, step)
            idx = batch_indices(len(train_data), B, step, params.seed)
            mine = range(rank * per_proc, (rank + 1) * per_proc)
            x_all = make_batch(params, train_data, idx[mine.start:mine.stop], step).to(accelerator.device)
            net.train()

            def accumulate():  # forward + backward of the micro-batches; their mean loss
                torch.manual_seed(seed_for(params.seed, "dropout", step, rank))
                total = torch.zeros((), device=accelerator.device)
                for a in range(accum):
                    sl = slice(a * micro, (a + 1) * micro)
                    gens = loss_generators(params, step, range(mine.start + a * micro, mine.start + (a + 1) * micro))
                    ctx = accelerator.no_sync(net) if a < accum - 1 else contextlib.nullcontext()
                    with ctx, accelerator.autocast():
                        loss = loss_fn(forward, x_all[sl], gens) / accum
                        accelerator.backward(loss)
                    total = total + loss.detach()
                return total
            total = compiled.run_with_fallback(forward, accumulate, reset=lambda: optimizer.zero_grad(set_to_none=True))
            if o_cfg.grad_clip > 0:
                grad_norm = accelerator.clip_grad_norm_(net.parameters(), o_cfg.grad_clip)
            else:
                grad_norm = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in net.parameters() if p.grad is not None))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(accelerator.unwrap_model(net))
            mean_loss = accelerator.reduce(total, reduction="mean").item()
            if on_step is not None:
                replaced = on_step(step + 1, mean_loss)
                mean_loss = mean_loss if replaced is None else replaced
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(f"{snapshot_dir}: training.n_iters: loss became {mean_loss} at step {step + 1}; "
                                       "the last good snapshot is kept (lower optim.lr or check the data)")
            done_images += B
            result.step = step + 1
            result.losses.append((step + 1, mean_loss))
            if (step + 1) % t_cfg.log_freq == 0 or step + 1 == t_cfg.n_iters:
                elapsed = time.perf_counter() - t0
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                if tracker is not None and accelerator.is_main_process:
                    tracker.log_metrics({"loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
                                         "grad_norm": float(grad_norm), "it_per_s": (step + 1 - start) / elapsed,
                                         "images_per_s": done_images / elapsed}, step=step + 1)
            if (((step + 1) % t_cfg.eval_freq == 0 or step + 1 == t_cfg.n_iters) and accelerator.is_main_process
                    and eval_data is not None):  # the reference's evaluation loss, under the EMA weights (loss.csv)
                value = evaluation_loss(params, accelerator.unwrap_model(net), ema, eval_data, loss_fn,
                                        accelerator.device, n=64)
                result.eval_losses.append((step + 1, value))
                if tracker is not None:
                    tracker.log_metrics({"ema_eval_loss": value}, step=step + 1)
                net.train()
            if t_cfg.ckpt_freq and (step + 1) % t_cfg.ckpt_freq == 0 and accelerator.is_main_process:
                keep_weights(snapshot_dir / KEPT_WEIGHTS, params, accelerator.unwrap_model(net), ema, step + 1)
            stopping = stop["sig"] is not None  # read once: the handler may fire during the snapshot below
            if world > 1:  # all ranks stop at the same step: a SIGTERM reaches them at slightly different times
                flag = torch.tensor(float(stopping), device=accelerator.device)
                stopping = accelerator.reduce(flag, reduction="sum").item() > 0
            if (step + 1) % t_cfg.snapshot_freq == 0 or stopping:
                save_snapshot(accelerator, snapshot_dir, step + 1, ema, t_cfg.snapshot_keep, result.losses,
                              on_write=on_snapshot_write, eval_losses=result.eval_losses, fingerprint=fingerprint)
                if on_snapshot is not None and accelerator.is_main_process and not stopping:
                    on_snapshot(step + 1, accelerator.unwrap_model(net), ema)
            if stopping:
                accelerator.print(f"{stop['sig'] or 'SIGTERM'}: snapshot written at step {step + 1}; rerun the same "
                                  "command to resume")
                raise SystemExit(143)
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        bar.close()
    result.seconds = time.perf_counter() - t0
    result.images_per_s = done_images / max(result.seconds, 1e-9)
    result.final_loss = float(np.mean([v for _, v in result.losses[-max(1, t_cfg.log_freq):]])) if result.losses else float("nan")
    model = accelerator.unwrap_model(net)
    result.ema_eval_loss = evaluation_loss(params, model, ema, eval_data, loss_fn, accelerator.device)
    return model, ema, result


def evaluation_loss(params, model, ema, eval_data, loss_fn, device, n: int = 256) -> float:
    """Loss on a fixed slice of the test split under the EMA weights (the weights evaluation uses)."""
    if eval_data is None or len(eval_data) == 0:
        return float("nan")
    idx = np.arange(min(n, len(eval_data)))
    x = make_batch(params.model_copy(update={"data": params.data.model_copy(update={"random_flip": False})}), eval_data, idx, 0).to(device)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    if ema is not None:
        model.load_state_dict(ema.weights(model))
    model.eval()
    with torch.no_grad():
        value = float(loss_fn(model, x, [generator(params.seed, "eval-loss", i) for i in idx]))
    model.load_state_dict(saved)
    return value

