"""The report's "Claims" table: one row per headline claim of the two papers that a suite can test, with the paper's
evidence, our measurement with error bars and a verdict by one stated rule (`verdict`).

A claim compares two quantities where lower is better (FD, bits/dim). Its measurements are found by *settings*, not
by sampler names: among an experiment's sampler evaluations (eval/<sampler>.json) and FD-vs-NFE curve points
(curves/nfe.json), the records whose settings differ only in what the claim is about. Rows a suite cannot measure
say what would measure them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from pipeline.report.render import Table

K_STD = 2.0  # the verdict rule's width: mean ± K_STD × (std over seeds, or standard error for bits/dim)
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTED = "reproduced", "not reproduced", "inconclusive", "not tested"
RULE = (f"Verdict rule: a claim \"A is lower (better) than B\" is *reproduced* when the intervals mean ± {K_STD:g} std "
        f"of A and B do not overlap and A is below, *not reproduced* when they do not overlap and A is above, and "
        f"*inconclusive* when they overlap or an error bar is missing (one seed). Std: over sampling seeds for FD, "
        f"the standard error over test images for bits/dim. Paired values are decided by their difference instead: "
        f"FDs drawn from the same noise seed by seed (every sampler of an experiment; common random numbers) and "
        f"bits/dim of two models on the same test images with the same dequantization noise: *reproduced* when the "
        f"mean difference ± {K_STD:g} std over seeds (FD) or ± {K_STD:g} standard errors over images (bits/dim) "
        f"lies below 0, *not reproduced* when above, *inconclusive* when across. *Not tested*: the suite has no "
        f"experiment for it. Metric: bits/dim for the likelihood claim; for the sampler claims the FD of the dataset "
        f"classifier's features, compared only between records of equal sample count drawn from the same noise: the "
        f"FD's upward small-sample bias is then about the same on both sides, and the seed-by-seed difference is "
        f"precise (common random numbers). KD, unbiased at any count but noisier at these counts, is in the All "
        f"samplers table.")
NFE_MATCH = 0.05  # two samplers have "equal NFE" when their measured mean NFEs differ by at most 5%


@dataclass
class Value:
    mean: float
    err: float | None  # std over seeds (FD) or standard error (bits/dim); None: one seed
    label: str  # what was measured, e.g. "PC: reverse_diffusion + langevin, NFE 200"
    per: list[float] | None = None  # the values behind the mean: per sampling seed (FD) or per test image (bits/dim)
    pair: tuple | None = None  # what `per` was measured on; equal on two values = the same noise / images, unit by unit
    err_kind: str = "std"  # "std" over seeds or "se" (standard error) over images: the paired difference's width too

    def text(self, nd: int = 2) -> str:
        err = f" ± {self.err:.{nd}f}" if self.err is not None and math.isfinite(self.err) else " (1 seed)"
        return f"{self.label}: {self.mean:.{nd}f}{err}"


def paired(better: Value, worse: Value) -> Value | None:
    """The unit-by-unit difference better - worse (mean ± std over seeds, or ± standard error over images) when both
    were measured on the same units (`pair`: the same sampling noise seed by seed, or the same test images with the
    same dequantization noise), else None. Pairing removes what both share (the noise draw, the image) from the
    comparison: common random numbers."""
    a, b = better.per, worse.per
    if not (better.pair and better.pair == worse.pair and a and b and len(a) == len(b) >= 2):
        return None
    d = [u - v for u, v in zip(a, b)]
    n = len(d)
    m = sum(d) / n
    std = math.sqrt(sum((x - m) ** 2 for x in d) / (n - 1))
    unit = "seed" if better.err_kind == "std" else "image"
    return Value(m, std if better.err_kind == "std" else std / math.sqrt(n), f"difference per {unit} over {n}")


def verdict(better: Value, worse: Value, k: float = K_STD) -> str:
    """REPRODUCED when [m ± k·err] of `better` lies wholly below that of `worse`, NOT_REPRODUCED when wholly above,
    else INCONCLUSIVE (overlap, or a missing error bar). Paired values (`paired`) are decided by their difference
    instead: [d ± k·err_d] wholly below 0, wholly above, or across it."""
    if (d := paired(better, worse)) is not None:
        better, worse = d, Value(0.0, 0.0, "0")
    if better.err is None or worse.err is None or not (math.isfinite(better.err) and math.isfinite(worse.err)):
        return INCONCLUSIVE
    if better.mean + k * better.err < worse.mean - k * worse.err:
        return REPRODUCED
    if better.mean - k * better.err > worse.mean + k * worse.err:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combined(better: Value, others: list[Value]) -> str:
    """`better` against every alternative: reproduced only when it beats each, not reproduced when any beats it."""
    vs = [verdict(better, o) for o in others]
    if NOT_REPRODUCED in vs:
        return NOT_REPRODUCED
    return REPRODUCED if all(v == REPRODUCED for v in vs) else INCONCLUSIVE


# --- measurements of one experiment --------------------------------------------------------------------------------
def fd_records(x: dict) -> list[dict]:
    """Every FD measurement of an experiment: {settings (dict), nfe, fd (mean/std record), source, num_samples (per
    seed)}. Sampler evaluations first (more samples), then curve points. FDs are compared only between records of
    equal num_samples: the Fréchet distance is biased upwards at small sample counts."""
    out = []
    for name, s in x["samplers"].items():
        ev = s.get("eval") or {}
        fd, nfe = (ev.get("classifier") or {}).get("fd"), (ev.get("nfe") or {}).get("mean")
        if isinstance(fd, dict) and fd.get("mean") is not None and nfe is not None:
            out.append({"settings": s["settings"].model_dump(), "nfe": nfe, "fd": fd, "source": f"sampler {name}",
                        "num_samples": ev.get("num_samples"), "pair": _noise(x, ev.get("num_samples"))})
    for pt in ((x.get("curves") or {}).get("nfe") or {}).get("records") or []:  # curves/nfe.json
        fd, nfe = pt.get("fd") or {}, (pt.get("nfe") or {}).get("mean")
        if fd.get("mean") is not None and nfe is not None:
            out.append({"settings": pt["setting"], "nfe": nfe, "fd": fd, "source": f"curve {pt['curve']}",
                        "num_samples": pt.get("num_samples"), "pair": _noise(x, pt.get("num_samples"))})
    return out


def _noise(x: dict, num_samples) -> tuple:
    """What an FD record's seeds were drawn with: sample i of seed k comes from generator(seed, "sample", k, i) in
    both the sample stage and the curves (pipeline/metrics/curves.py), so records of one experiment seed and sample
    count share their noise seed by seed."""
    return ("sample noise", getattr(x["params"], "seed", None), num_samples)


def _value(rec: dict, label: str) -> Value:
    return Value(rec["fd"]["mean"], rec["fd"].get("std"), f"{label}, NFE {rec['nfe']:.0f}", rec["fd"].get("values"),
                 rec.get("pair"))


def _pc_kind(s: dict) -> str | None:
    if s.get("method") != "pc" or s.get("probability_flow"):
        return None
    p, c = s.get("predictor") != "none", s.get("corrector") != "none"
    return "PC" if p and c else "P" if p else "C" if c else None


def pc_vs_parts(x: dict) -> tuple[list[Value], str] | None:
    """PC against predictor-only and corrector-only at equal NFE (Score SDE Table 1): the largest NFE at which the
    experiment has all three with the same predictor / corrector as the PC record."""
    recs = [r for r in fd_records(x) if _pc_kind(r["settings"]) and r["settings"].get("noise_removal", True)]
    best = None
    for pc in (r for r in recs if _pc_kind(r["settings"]) == "PC"):
        s = pc["settings"]
        match = lambda r, kind: (_pc_kind(r["settings"]) == kind and r["num_samples"] == pc["num_samples"]  # noqa: E731
                                 and abs(r["nfe"] - pc["nfe"]) <= NFE_MATCH * pc["nfe"]
                                 and (kind == "C" or r["settings"]["predictor"] == s["predictor"])
                                 and (kind == "P" or r["settings"]["corrector"] == s["corrector"]))
        p = next((r for r in recs if match(r, "P")), None)
        c = next((r for r in recs if match(r, "C")), None)
        if p and c and (best is None or pc["nfe"] > best[0]["nfe"]):
            best = (pc, p, c)
    if best is None:
        return None
    pc, p, c = best
    s = pc["settings"]
    return [_value(pc, f"PC ({s['predictor']} + {s['corrector']})"), _value(p, f"P ({s['predictor']})"),
            _value(c, f"C ({s['corrector']})")], x["experiment"]


def ode_vs_pc(x: dict) -> tuple[list[Value], str] | None:
    """The probability-flow ODE (RK45) against the experiment's best PC sampler (Score SDE Tables 2 and 3)."""
    recs = fd_records(x)
    ode = [r for r in recs if r["settings"].get("method") == "ode" and r["source"].startswith("sampler")]
    if not ode:
        return None
    pc = [r for r in recs if r["num_samples"] == ode[0]["num_samples"] and (
        _pc_kind(r["settings"]) == "PC" or (_pc_kind(r["settings"]) == "P" and r["source"].startswith("sampler")))]
    if not pc:
        return None
    best_pc = min(pc, key=lambda r: r["fd"]["mean"])
    return [_value(best_pc, "PC"), _value(ode[0], "ODE (RK45)")], x["experiment"]


def denoising(x: dict) -> tuple[list[Value], str] | None:
    """Final denoising step on (noise_removal) against off, all other settings equal (Score SDE App. G), at the largest
    NFE where the experiment has both."""
    recs, best = fd_records(x), None
    for off in (r for r in recs if r["settings"].get("noise_removal") is False):
        key = {k: v for k, v in off["settings"].items() if k != "noise_removal"}
        on = next((r for r in recs if r["settings"].get("noise_removal") is True and r["num_samples"] == off["num_samples"]
                   and {k: v for k, v in r["settings"].items() if k != "noise_removal"} == key), None)
        if on and (best is None or off["nfe"] > best[1]["nfe"]):  # the largest NFE: the best samples of the pair
            best = (on, off)
    if best is None:
        return None
    on, off = best
    m = off["settings"]["method"]
    return [_value(on, f"{m}, denoised"), _value(off, f"{m}, not denoised")], x["experiment"]


# --- claims --------------------------------------------------------------------------------------------------------
@dataclass
class Claim:
    claim: str
    evidence: str
    measure: Callable[[list[dict]], tuple[list[Value], str] | None]  # (better, worse, ...) values and the experiment
    untested: str  # what would measure it, when the suite does not


def _first(exps: list[dict], fn) -> tuple[list[Value], str] | None:
    return next((m for x in exps if (m := fn(x))), None)


# training keys that do not change what a step of training does: the likelihood claim pairs two SDEs at one step
# (its length, what it keeps and logs, where it runs)
_RUN_LENGTH_KEYS = {"sde", "n_iters", "ckpt_freq", "snapshot_freq", "snapshot_keep", "log_freq", "eval_freq",
                    "snapshot_sampling", "num_processes", "accelerate_config", "compile"}


def _recipe(x: dict) -> tuple:
    """An experiment's network and training recipe apart from the SDE and the run's length."""
    p = x["params"]
    train = {k: v for k, v in p.training.model_dump().items() if k not in _RUN_LENGTH_KEYS}
    optim = getattr(p, "optim", None)
    return repr(p.model.model_dump()), repr(optim.model_dump() if optim is not None else None), repr(train)


def bpd_by_step(x: dict) -> dict[int, dict]:
    """The experiment's bits/dim records by training step: the final weights' and those of eval.bpd_steps."""
    lik = x.get("likelihood") or {}
    if not (lik.get("bpd") or {}).get("mean"):
        return {}
    final = lik.get("step") or x["params"].training.n_iters
    return {int(final): lik, **{int(k): r for k, r in (lik.get("at_step") or {}).items()}}


def subvp_vs_vp(exps: list[dict]) -> tuple[list[Value], str] | None:
    """bits/dim of a sub-VP and a VP experiment with the same network and training recipe, at the same training step
    (the later of the steps both scored: their final weights or those kept at eval.bpd_steps) (Score SDE Table 2)."""
    def value(x, step):
        rec = bpd_by_step(x)[step]["bpd"]
        per = rec.get("per_image")  # same images, same dequantization noise: the experiments' values pair up
        pair = (f"the same {len(per)} test images" if per else None, getattr(x["params"], "seed", None),
                repr(getattr(x["params"], "data", None)))
        return Value(rec["mean"], rec.get("stderr"), f"{x['experiment']} bits/dim", per, pair if per else None, "se")
    for sub in (x for x in exps if x["sde"] == "subvpsde" and bpd_by_step(x)):
        for vp in (x for x in exps if x["sde"] == "vpsde" and _recipe(x) == _recipe(sub)):
            common = set(bpd_by_step(sub)) & set(bpd_by_step(vp))
            if common:
                step = max(common)
                return [value(sub, step), value(vp, step)], f"{sub['experiment']} vs {vp['experiment']}, both at " \
                    f"training step {step:,}"
    return None


def ncsn_noise_levels(exps: list[dict]) -> tuple[list[Value], str] | None:
    """Two NCSN (ALD) experiments that differ only in the noise levels (σ_1 = sigma_max, L = num_scales): the one with
    more levels / larger σ_1 should sample better (NCSN Sec. 4.2; NCSNv2 Techniques 1-2)."""
    def key(x):
        m = x["params"].model.model_dump()
        return {k: v for k, v in m.items() if k not in ("sigma_max", "num_scales")}, x["params"].training.model_dump()
    def fd(x):
        ev = x["samplers"][x["default_sampler"]].get("eval") or {}
        rec = (ev.get("classifier") or {}).get("fd") or {}
        m = x["params"].model
        return Value(rec["mean"], rec.get("std"), f"{x['experiment']} (σ_1 {m.sigma_max:g}, L {m.num_scales})") \
            if rec.get("mean") is not None else None
    ald = [x for x in exps if x["samplers"][x["default_sampler"]]["settings"].method == "ald" and fd(x)]
    for a in ald:
        for b in ald:
            ma, mb = a["params"].model, b["params"].model
            if a is not b and key(a) == key(b) and ma.sigma_max >= mb.sigma_max and ma.num_scales >= mb.num_scales \
                    and (ma.sigma_max, ma.num_scales) != (mb.sigma_max, mb.num_scales):
                return [fd(a), fd(b)], f"{a['experiment']} vs {b['experiment']}"
    return None


CLAIMS = [
    Claim("PC sampling beats predictor-only and corrector-only sampling at equal NFE",
          "Score SDE Table 1 (CIFAR-10 FID): VE reverse diffusion PC1000 3.60 vs P2000 4.74, C2000 20.43; "
          "VP 3.18 vs 3.19, 19.06",
          lambda exps: _first(exps, pc_vs_parts),
          "a PC sampler with its predictor-only and corrector-only variants at equal NFE (samplers or FD-vs-NFE "
          "curves)"),
    Claim("sub-VP SDE gives better likelihood (lower bits/dim) than the VP SDE",
          "Score SDE Table 2 (CIFAR-10 NLL): DDPM++ cont. sub-VP 3.02 vs VP 3.16; DDPM cont. 3.05 vs 3.21",
          subvp_vs_vp, "bits/dim of a sub-VP and a VP experiment with the same network and training recipe at a step both "
                       "scored (eval.enable_bpd; eval.bpd_steps for the longer run)"),
    Claim("The probability-flow ODE samples slightly worse than PC on the same model",
          "Score SDE Tables 2-3 (CIFAR-10 FID): DDPM++ cont. (VP) ODE 3.93 vs PC 2.55",
          lambda exps: _first(exps, ode_vs_pc), "an experiment with both a PC and an ODE sampler"),
    Claim("The final denoising step improves sample quality",
          "Score SDE App. G (denoising at the last step removes residual noise; FID degrades without it); "
          "NCSNv2 Sec. 4 (Jolicoeur-Martineau et al. note the same for ALD)",
          lambda exps: _first(exps, denoising),
          "two samplers that differ only in sampling.noise_removal"),
    Claim("More noise levels and a larger σ_1 improve NCSN samples",
          "NCSN Sec. 4.2 (annealing over L = 10 levels is essential); NCSNv2 Techniques 1-2 (σ_1 ≈ the largest "
          "pairwise data distance, more levels): CIFAR-10 FID 25.32 (NCSN) vs 10.87 (NCSNv2)",
          ncsn_noise_levels,
          "two NCSN experiments that differ only in model.sigma_max / model.num_scales (two more NCSN trainings "
          "and ALD samplers, about 10 more minutes than the default suite allows)"),
]


def _row(c: Claim, exps: list[dict]) -> list[str]:
    m = c.measure(exps)
    if m is None:
        return [c.claim, c.evidence, f"not measured here: needs {c.untested}", NOT_TESTED]
    values, where = m
    v = combined(values[0], values[1:])
    pairs = [d.text(3) for o in values[1:] if (d := paired(values[0], o))]
    return [c.claim, c.evidence, f"{where}: " + "; ".join(val.text() for val in values)
            + (f" (paired: {'; '.join(pairs)})" if pairs else ""), v]


def _anything_ran(exps: list[dict]) -> bool:
    return any(x.get("likelihood") or fd_records(x) or any(s.get("eval") for s in x["samplers"].values())
               for x in exps)


def claims_table(exps: list[dict]) -> Table:
    ran = _anything_ran(exps)
    rows = [_row(c, exps) if ran else [c.claim, c.evidence, "not run", "not run"] for c in CLAIMS]
    return Table("claims", "Claims of the papers, checked", ["claim", "paper's evidence", "ours (FD or bits/dim)",
                                                              "verdict"], rows, note=RULE)
