"""The dress rehearsal of a suite (`make rehearse SUITE=S`): every stage of S's DAG, at miniature scale, on a CPU.

A rehearsal is a generated suite named `rehearsal-S`. Its params files are S's with the miniature override set below
applied (`miniature`), written with its dvc.yaml to pipelines/rehearsal-S/ (git-ignored), where the DAG finds a
generated suite's params (`pipeline.workflow.dag.GENERATED_PARAMS`). Its outputs are those of
any suite, under its own name: runs/rehearsal-S/, reports/rehearsal-S/, the MLflow experiment
score-repro/rehearsal-S; it shares only the data stages of a real dataset (data/<kind>/<dataset>, the same files for
every suite). Where S's dataset is absent and has a synthetic stand-in (`names.Dataset.stand_in_for`), the rehearsal
runs on the stand-in instead: same shape and classes, labelled synthetic in its data and in the report's banner.

The override set shrinks what costs time and keeps what decides which code runs: every experiment, sampler setting,
SDE, network (its resolutions, attention, resampling, embeddings: only the width and the residual blocks per
resolution shrink), predictor, corrector and task of S. The suite-name prefix `rehearsal-` is reserved for rehearsals.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

from pipeline.config import Params, ParamsError, validate
from pipeline.io.provenance import tracked_values
from pipeline.models.zoo import check_params
from pipeline.names import DATASET_TABLE, sampling_method

PREFIX = "rehearsal-"

# The miniature scale (README.md, "Dress rehearsal"): FIXED keys are set in every file they concern (the noise
# classifier's with class_conditional, the curves' with a curves block); RULES shrink the values the preset has.
STEPS = 2  # optimizer steps: the loop, the EMA, a snapshot (and its MLflow grid) and the final weights all run
NUM_SCALES = 25  # noise levels / PC steps at most: above beta_max = 20, which VP's DDPM table needs (docs/papers.md §3)
WIDTHS = (8, 16, 32, 64)  # model.nf: the smallest the network builds with (the DDPM U-Net's GroupNorm has 32 groups)
SAMPLES = 10  # per seed: the 10 Inception-Score splits of the NCSN presets need as many
SEEDS = 2  # sampling seeds at most: the ± over seeds is still computed
FAST_STEPS = 4  # solver steps at most of the few-step samplers (heun, dpm_solver, ddim)
STEPS_EACH = 2  # ALD / Langevin steps per noise level at most
ODE_TOL = 1e-2  # rtol = atol at least of the probability-flow ODE (sampling and bits/dim)

FIXED: dict[str, Any] = {
    "training.n_iters": STEPS, "training.batch_size": 8, "training.snapshot_freq": STEPS, "training.log_freq": 1,
    "training.eval_freq": STEPS, "training.num_processes": 1, "training.accelerate_config": None,
    "training.gradient_accumulation_steps": 1, "training.compile": False,
    "data.max_train": 256,  # the train stage reads at most this many training images
    "eval.num_samples": SAMPLES, "eval.batch_size": SAMPLES, "eval.num_processes": 1, "eval.bpd_num_repeats": 1,
    "eval.bpd_max_images": 4, "eval.controllable_images": 2,
    "eval.classifier.n_iters": STEPS, "eval.classifier.batch_size": 8, "eval.classifier.test_images": 16,
    "eval.classifier.nf": 8, "eval.class_conditional.samples_per_class": 1,
    "curves.num_samples": 4, "curves.num_seeds": 1, "curves.checkpoints.num_samples": 4,
    "curves.checkpoints.num_seeds": 1,
}
RULES: dict[str, str] = {  # the rest of the set, in words (what `miniature` does)
    "model.nf": f"the smallest of {', '.join(map(str, WIDTHS))} the network builds with",
    "model.num_res_blocks": "1 where set (the deep presets differ from the others by this count only)",
    "model.num_scales": f"at most {NUM_SCALES}; PC num_steps (sampling, samplers, controllable_steps) scaled by the "
                        "same factor, so P2000 stays twice P1000",
    "num_steps of heun / dpm_solver / ddim": f"at most {FAST_STEPS}",
    "n_steps_each": f"at most {STEPS_EACH}",
    "rtol, atol, eval.bpd_rtol, eval.bpd_atol": f"at least {ODE_TOL:g}",
    "eval.num_seeds, curves.num_seeds": f"at most {SEEDS} / 1",
    "training.ckpt_freq": f"1 where set (kept weights at every step before the last: a checkpoint curve of {STEPS - 1})",
    "eval.bpd_steps": "[1] where set (bits/dim of the weights kept at step 1 as well)",
    "training.mixed_precision": "fp16 (CUDA only) becomes no; bf16 and no stay",
    "sampling.compile, sampling.cuda_graphs": "false (compiling costs about a minute per stage on a CPU)",
    "curves.nfe, curves.ode_tols, curves.nfe_by_curve": "the first two targets, the first tolerance, the first target",
    "eval.feature_net": "classifier where the Inception-v3 weights are absent (the rehearsal says the real run needs "
                        "them)",
    "data.dataset": "its synthetic stand-in where the dataset is absent (data/raw/<dataset>) and has one",
}


def is_rehearsal(suite: str) -> bool:
    return suite.startswith(PREFIX)


def name(suite: str) -> str:
    """The generated suite that rehearses `suite`."""
    return PREFIX + suite


def source(suite: str) -> str:
    """The suite a rehearsal rehearses."""
    return suite.removeprefix(PREFIX)


def override_text() -> str:
    """The override set in one sentence, for the report's banner (the whole set: FIXED, RULES, README.md)."""
    f = FIXED
    return (f"{f['training.n_iters']} training steps at batch {f['training.batch_size']} on at most "
            f"{f['data.max_train']} training images; networks of width nf {WIDTHS[0]} (or the least they build with) and "
            f"one residual block per resolution; at most {NUM_SCALES} noise levels and PC steps (P2000 stays 2N); "
            f"{SAMPLES} samples x at most {SEEDS} seeds per sampler; ODE tolerances at least {ODE_TOL:g}; "
            f"{f['eval.bpd_max_images']} test images for bits/dim, {f['eval.controllable_images']} for controllable "
            "generation (the whole set: README.md, \"Dress rehearsal\")")


# --- the transformation of one params file ---------------------------------------------------------------------
def _get(raw: dict, key: str):
    """The value of a dotted key, None where it is absent."""
    return tracked_values(raw, [key])[key]


def _set(raw: dict, key: str, value, create: bool = False) -> None:
    """raw[a][b] = value for "a.b" where the group exists (every group with `create`)."""
    *groups, last = key.split(".")
    cur = raw
    for part in groups:
        if not isinstance(cur.get(part), dict):
            if not create:
                return
            cur[part] = {}
        cur = cur[part]
    cur[last] = value


def _each_setting(raw: dict) -> list[dict]:
    """Every sampler setting mapping of a params file: sampling, samplers.*, the class-conditional and curves ones."""
    out = [raw.get("sampling"), *(raw.get("samplers") or {}).values(), _get(raw, "eval.class_conditional.sampling"),
           *((_get(raw, "curves.samplers") or {}).values()), _get(raw, "curves.checkpoints.sampler")]
    return [s for s in out if isinstance(s, dict)]


def _applies(raw: dict, key: str) -> bool:
    """Whether a FIXED key concerns this experiment: the noise classifier's with class_conditional, the curves' with
    a curves block (the checkpoint curve's with one), every other key always."""
    if key.startswith(("eval.classifier.", "eval.class_conditional.")):
        return "class_conditional" in (_get(raw, "eval.controllable") or [])
    if key.startswith("curves."):
        return isinstance(_get(raw, ".".join(key.split(".")[:-1])), dict)
    return True


def miniature(raw: dict, path: str, suite: str, dataset: str, inception: bool) -> dict:
    """A params mapping (as read from `path`, a file of the rehearsed suite) at the rehearsal's scale, FIXED and RULES
    applied, as suite `suite` on `dataset`, with eval.feature_net inception only when `inception` (the weights are
    present). It validates and its network builds: ParamsError naming `path` otherwise."""
    raw = copy.deepcopy(raw)
    for key, value in FIXED.items():
        if _applies(raw, key):
            _set(raw, key, value, create=True)
    raw["suite"] = suite
    _set(raw, "data.dataset", dataset, create=True)
    scale = _shrink_scales(raw)
    base = raw.get("sampling") or {}
    for s in _each_setting(raw):
        few_steps = "num_steps" in sampling_method(s.get("method") or base.get("method") or "pc").required
        if s.get("num_steps") is not None:
            s["num_steps"] = min(s["num_steps"], FAST_STEPS) if few_steps else max(1, math.ceil(s["num_steps"] * scale))
        for key in ("rtol", "atol"):
            if key in s:
                s[key] = max(s[key], ODE_TOL)
        if "n_steps_each" in s:
            s["n_steps_each"] = min(s["n_steps_each"], STEPS_EACH)
        for key in ("compile", "cuda_graphs"):
            s.pop(key, None)
    ev = raw.setdefault("eval", {})
    if ev.get("controllable_steps"):
        ev["controllable_steps"] = max(1, math.ceil(ev["controllable_steps"] * scale))
    for key in ("bpd_rtol", "bpd_atol"):
        if key in ev:
            ev[key] = max(ev[key], ODE_TOL)
    if ev.get("bpd_steps"):
        ev["bpd_steps"] = [1]  # the kept weights before the last step (training.ckpt_freq becomes 1)
    if "num_seeds" in ev:
        ev["num_seeds"] = min(ev["num_seeds"], SEEDS)
    if not inception and ev.get("feature_net") == "inception":
        ev["feature_net"] = "classifier"
    if raw["model"].get("num_res_blocks"):
        raw["model"]["num_res_blocks"] = 1
    t = raw["training"]
    if t.get("ckpt_freq"):
        t["ckpt_freq"] = 1
    if t.get("mixed_precision") == "fp16":
        t["mixed_precision"] = "no"
    _shrink_curves(raw)
    _narrow(raw, path)
    return raw


def _shrink_scales(raw: dict) -> float:
    """model.num_scales at most NUM_SCALES; returns the factor PC step counts are scaled by."""
    m = raw.setdefault("model", {})
    n = m.get("num_scales") or Params.model_fields["model"].default.num_scales
    new = min(n, NUM_SCALES)
    m["num_scales"] = new
    return new / n


def _shrink_curves(raw: dict) -> None:
    c = raw.get("curves")
    if not isinstance(c, dict):
        return
    for key, keep in (("nfe", 2), ("ode_tols", 1)):
        if isinstance(c.get(key), list):
            c[key] = c[key][:keep]
    for name_, targets in (c.get("nfe_by_curve") or {}).items():
        c["nfe_by_curve"][name_] = targets[:1]


def _narrow(raw: dict, path: str) -> None:
    """model.nf: the smallest of WIDTHS that the network builds with (checked on the meta device)."""
    for nf in WIDTHS:
        raw["model"]["nf"] = nf
        try:
            check_params(validate(raw, path), path)
            return
        except ParamsError as e:
            if nf == WIDTHS[-1]:
                raise e from None


# --- which data a rehearsal runs on ------------------------------------------------------------------------------
def stand_in(dataset: str) -> str | None:
    """The synthetic stand-in of `dataset` (names.Dataset.stand_in_for), or None."""
    return next((n for n, d in DATASET_TABLE.items() if d.stand_in_for == dataset), None)


def is_stand_in(dataset: str) -> bool:
    return bool(DATASET_TABLE[dataset].stand_in_for)


def rehearsal_dataset(dataset: str, present: Callable[[str], bool], synthetic: bool = False) -> str:
    """The dataset a rehearsal of an experiment on `dataset` runs on: the dataset itself where `present(dataset)`
    (and not `synthetic`), else its stand-in, else the dataset (its download stage fetches it, as in the suite)."""
    if present(dataset) and not synthetic:
        return dataset
    return stand_in(dataset) or dataset
