"""Fast samplers (pipeline/samplers/fast_samplers.py) on exact Gaussian-mixture scores: their schedules, their convergence
order, the samples they draw, where their tensors live, and the params that select them.

- Convergence: the final-state error against a DOP853 solution of the probability-flow ODE at rtol = atol = 1e-10
  (float64, same prior draw z, 16 rows of the 2-D mixture; the reference differs from an RK45 solution at 1e-9 by
  about 2e-9), at M = 48, 64, 96, 128, 192 steps, where every error is at least 2e-7, i.e. 100x the reference's
  own error, and the local slopes have settled (measured from M = 4: Heun's local slopes are 2.6, 2.3, 2.2 below
  M = 32, DPM-Solver-3's swing between 2.4 and 5.5 below M = 48). The fitted slope of log(error) against log(M)
  must be within 0.3 of the order: 1 for Euler / DDIM (η = 0) / DPM-Solver-1, 2 for Heun / DPM-Solver-2 /
  DPM-Solver++(2M), 3 for DPM-Solver-3. `pytest -s` prints the slopes.
- Samples: the PC tests' targets and tolerances (tests/test_samplers.py): 2-D mixture (n = 2000; weights, component
  means and covariances within 4 s.e., MMD^2 below the null bound) and 784-D N(μ, 0.25^2 I) (n = 64; pooled mean
  error < 3% of the std, variance ratio within 0.05 of 1). The 784-D variance ratio measures the solver's
  truncation error (its own s.e. is 0.006), so it decides the step count; SAMPLE_CASES states the measured values.
"""
import math
from functools import lru_cache

import pytest
import torch
from conftest import assert_close_f32
from test_samplers import GAUSS, MIX, N_2D, N_784, SDES, assert_gaussian, gaussian_errors, mixture_errors, mmd_null_bound  # noqa: F401
from torch.overrides import TorchFunctionMode

from pipeline.config import ParamsError, load_params
from pipeline.core import rng
from pipeline.core.losses import get_score_fn
from pipeline.core.sde import VESDE, VPSDE
from pipeline.models import zoo as models
from pipeline.report.results import sampler_label
from pipeline.samplers import sampling
from pipeline.samplers.fast_samplers import Schedule, ddim_sample, dpm_solver_sample, heun_sample, snap_to_levels
from pipeline.samplers.sampling import draw, ode_sample

F64 = torch.float64
# name -> (function, settings, order of convergence as an ODE solver or None for the stochastic ones)
SAMPLERS = {
    "euler": (heun_sample, {"order": 1}, 1),
    "heun": (heun_sample, {"order": 2}, 2),
    "heun_churn": (heun_sample, {"order": 2, "s_churn": 1.0, "s_tmin": 0.05, "s_tmax": 1.0}, None),
    "ddim": (ddim_sample, {}, 1),
    "ddim_eta1": (ddim_sample, {"eta": 1.0}, None),
    "dpm1": (dpm_solver_sample, {"order": 1}, 1),
    "dpm2": (dpm_solver_sample, {"order": 2}, 2),
    "dpm3": (dpm_solver_sample, {"order": 3}, 3),
    "dpm++2m": (dpm_solver_sample, {"order": 2, "multistep": True}, 2),
}
NFE_PER_STEP = {"euler": 1, "heun": 2, "heun_churn": 2, "ddim": 1, "ddim_eta1": 1, "dpm1": 1, "dpm2": 2, "dpm3": 3,
                "dpm++2m": 1}


def run(name, sde, score_fn, shape, steps, eps, **kw):
    fn, settings, _ = SAMPLERS[name]
    return fn(sde, score_fn, shape, steps, eps=eps, **settings, **kw)


def applies(name, sde_name):
    return not (name.startswith("ddim") and sde_name == "vesde")


# --- schedules ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sde_name", list(SDES))
def test_schedule_is_the_sdes_kernel_and_inverts(sde_name):
    make, eps = SDES[sde_name]
    sde, sch = make(1000), Schedule(make(1000))
    ts = torch.linspace(eps, 1.0, 101, dtype=F64)
    m, std = sde.marginal_coeffs(ts)
    got = torch.tensor([sch.coeffs(float(t)) for t in ts], dtype=F64)
    assert torch.allclose(got[:, 0], m, rtol=1e-14, atol=0) and torch.allclose(got[:, 1], std, rtol=1e-14, atol=0)
    for t in ts.tolist():
        assert sch.t_of_lam(sch.lam(t)) == pytest.approx(t, rel=1e-11, abs=1e-14)
    for grid in ("edm", "logsnr", "uniform"):
        g = sch.grid(grid, 12, eps)
        assert len(g) == 13 and g[0] == 1.0 and g[-1] == eps and all(a > b for a, b in zip(g, g[1:])), grid
    sh = [sch.sigma_hat(t) for t in sch.grid("edm", 12, eps, rho=7.0)]  # Karras et al. Eq. 5 in σ/α
    lo, hi = sh[-1] ** (1 / 7), sh[0] ** (1 / 7)
    assert sh == pytest.approx([(hi + i / 12 * (lo - hi)) ** 7 for i in range(13)], rel=1e-10)
    lam = [sch.lam(t) for t in sch.grid("logsnr", 12, eps)]
    assert lam == pytest.approx([lam[0] + i / 12 * (lam[-1] - lam[0]) for i in range(13)], rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("sde_name", ["vpsde", "subvpsde"])
def test_first_order_solvers_are_one_update(sde_name):
    """Euler in σ̂ = σ/α, DDIM (η = 0), DPM-Solver-1 and DPM-Solver++ order 1 on the same grid: one update,
    x_t = (α_t/α_s) x_s - σ_t (e^h - 1) ε̂_s, written four ways (float64, to 1e-12)."""
    make, eps = SDES[sde_name]
    sde = make(1000)
    z = sde.prior_sampling((8, 2), torch.Generator().manual_seed(0), dtype=F64)
    kw = dict(eps=eps, z=z, dtype=F64, time_grid="edm")
    outs = [heun_sample(sde, MIX.score_fn(sde), z.shape, 10, order=1, **kw)[0],
            ddim_sample(sde, MIX.score_fn(sde), z.shape, 10, **kw)[0],
            dpm_solver_sample(sde, MIX.score_fn(sde), z.shape, 10, order=1, **kw)[0],
            dpm_solver_sample(sde, MIX.score_fn(sde), z.shape, 10, order=1, multistep=True, **kw)[0]]
    for x in outs[1:]:
        assert torch.allclose(x, outs[0], atol=1e-12, rtol=0)


# --- convergence order --------------------------------------------------------------------------------------------
CONV_STEPS = (48, 64, 96, 128, 192)
SLOPE_TOL = 0.3


@lru_cache(maxsize=None)
def _reference(sde_name):
    make, eps = SDES[sde_name]
    sde = make(1000)
    z = sde.prior_sampling((16, 2), torch.Generator().manual_seed(0), dtype=F64)
    ref, _ = ode_sample(sde, MIX.score_fn(sde), z.shape, rtol=1e-10, atol=1e-10, eps=eps, method="DOP853", z=z,
                        dtype=F64)
    return sde, eps, z, ref


def fitted_slope(steps, errors) -> float:
    """Least-squares slope of -log(error) against log(steps)."""
    x = torch.log(torch.tensor(steps, dtype=F64))
    y = -torch.log(torch.tensor(errors, dtype=F64))
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc ** 2).sum())


ORDER_CASES = [(s, n) for s in SDES for n, (_, _, order) in SAMPLERS.items() if order and applies(n, s)]


@pytest.mark.parametrize("sde_name,name", ORDER_CASES)
def test_convergence_order(sde_name, name):
    sde, eps, z, ref = _reference(sde_name)
    errors = []
    for M in CONV_STEPS:
        x, nfe = run(name, sde, MIX.score_fn(sde), z.shape, M, eps, z=z, dtype=F64)
        assert nfe == NFE_PER_STEP[name] * M
        errors.append(float((x - ref).abs().max()))
    slope, order = fitted_slope(CONV_STEPS, errors), SAMPLERS[name][2]
    print(f"\n{sde_name:8s} {name:8s} order {order}: fitted slope {slope:.3f}; max errors "
          + " ".join(f"{e:.2e}" for e in errors) + f" at M = {CONV_STEPS}")
    assert min(errors) > 2e-7, errors  # far above the reference's own error
    assert abs(slope - order) < SLOPE_TOL, (slope, errors)


# --- samples ------------------------------------------------------------------------------------------------------
# (sampler, steps, targets): "both" = the 2-D mixture and the 784-D Gaussian with the PC tolerances, "mixture" =
# the 2-D mixture only. Measured 784-D variance ratios (VE / VP / sub-VP) in the comments.
SAMPLE_CASES = {
    "vesde": [("dpm3", 16, "both"), ("dpm++2m", 50, "both"), ("dpm2", 25, "both"),  # 1.008, 1.011, 1.023
              ("heun", 24, "mixture"), ("euler", 50, "mixture"),  # 1.055, 0.907
              ("heun", 40, "both"), ("heun_churn", 50, "both"),  # 1.024, 1.020
              ("euler", 200, "both"), ("dpm1", 200, "both")],  # 0.981, 0.986
    "vpsde": [("dpm3", 16, "both"), ("dpm++2m", 50, "both"), ("dpm2", 25, "both"),  # 1.009, 1.012, 1.027
              ("heun", 24, "mixture"), ("euler", 50, "mixture"), ("ddim", 50, "mixture"),  # 1.082, 0.884, 0.821
              ("heun", 40, "both"), ("heun_churn", 50, "both"),  # 1.033, 1.026
              ("euler", 200, "both"), ("dpm1", 200, "both"), ("ddim", 200, "both"),  # 0.975, 0.984, 0.957
              ("ddim_eta1", 1000, "both")],  # 0.962 (η = 1 is ancestral sampling: 0.68 at 50 steps, 0.95 at 500)
    "subvpsde": [("dpm3", 16, "both"), ("dpm++2m", 50, "both"),  # 1.011, 1.018
                 ("heun", 24, "mixture"), ("euler", 50, "mixture"), ("ddim", 50, "mixture"),  # 1.111, 0.865, 0.874
                 ("dpm2", 30, "both"), ("heun", 40, "both"), ("heun_churn", 50, "both"),  # 1.038, 1.043, 1.032
                 ("euler", 200, "both"), ("dpm1", 200, "both"), ("ddim", 200, "both"),  # 0.970, 0.973, 0.973
                 ("ddim_eta1", 1000, "both")],  # 0.969
}


@pytest.mark.parametrize("sde_name,name,steps,targets",
                         [(s, n, m, t) for s, cases in SAMPLE_CASES.items() for n, m, t in cases])
def test_samples_match_the_target(sde_name, name, steps, targets, mmd_null_bound):  # noqa: F811
    make, eps = SDES[sde_name]
    sde = make(1000)
    x, nfe = run(name, sde, MIX.score_fn(sde), (N_2D, 2), steps, eps, generator=torch.Generator().manual_seed(1))
    assert nfe == NFE_PER_STEP[name] * steps
    e = mixture_errors(x, MIX.at_time(sde, eps))
    xg, _ = run(name, sde, GAUSS.score_fn(sde), (N_784, 784), steps, eps, generator=torch.Generator().manual_seed(1))
    mean_err, ratio = gaussian_errors(xg, GAUSS.at_time(sde, eps))
    print(f"\n{sde_name:8s} {name:10s} NFE {nfe:4d}: weight z {e['weight_z']:.2f}, mean z {e['mean_z']:.2f}, "
          f"cov z {e['cov_z']:.2f}, MMD^2 {e['mmd2']:.4f} (bound {mmd_null_bound:.4f}); 784-D mean error "
          f"{mean_err:+.4f}, variance ratio {ratio:.3f}{'' if targets == 'both' else ' (not asserted)'}", end="")
    assert e["weight_z"] < 4 and e["mean_z"] < 4 and e["cov_z"] < 4 and e["mmd2"] < mmd_null_bound, e
    if targets == "both":
        assert_gaussian(xg, GAUSS.at_time(sde, eps))


def test_noise_removal_returns_the_data_prediction():
    """denoise: x̂_0 = (x_ε + σ_ε² s(x_ε, ε))/α_ε at one more NFE, for every sampler."""
    sde, eps = SDES["vpsde"][0](1000), 1e-3
    z = sde.prior_sampling((4, 2), torch.Generator().manual_seed(3), dtype=F64)
    a, s = Schedule(sde).coeffs(eps)
    for name in SAMPLERS:
        x, nfe = run(name, sde, MIX.score_fn(sde), z.shape, 6, eps, z=z, dtype=F64, generator=rng.generator(1, 0))
        x0, nfe0 = run(name, sde, MIX.score_fn(sde), z.shape, 6, eps, z=z, dtype=F64, generator=rng.generator(1, 0),
                       denoise=True)
        expected = (x + s * s * MIX.score_fn(sde)(x, torch.full((4,), eps, dtype=F64))) / a
        assert nfe0 == nfe + 1 and torch.allclose(x0, expected, atol=1e-12), name


def test_per_row_generators_make_rows_independent_of_batch_size():
    for name, sde in (("heun_churn", VPSDE(0.1, 20.0, 100)), ("ddim_eta1", VPSDE(0.1, 20.0, 100)),
                      ("heun_churn", VESDE(0.01, 50.0, 100))):
        a, _ = run(name, sde, MIX.score_fn(sde), (4, 2), 10, 1e-3, generator=[rng.generator(5, i) for i in range(4)])
        b, _ = run(name, sde, MIX.score_fn(sde), (8, 2), 10, 1e-3, generator=[rng.generator(5, i) for i in range(8)])
        assert_close_f32(a, b[:4], 1e-5, what=name)


# --- discrete models ----------------------------------------------------------------------------------------------
def test_discrete_models_are_queried_on_their_levels():
    """A discrete VE model (100 levels, labels = descending index) and a discrete VP (DDPM) model (1000 steps):
    with `discrete`, every query of Heun and DPM-Solver++(2M) is at a trained level's time, and the samples match."""
    ve = VESDE(0.01, 50.0, 100)
    sig = ve.sigmas_descending

    def ve_model(x, labels):  # the exact score at the trained level σ_labels
        return GAUSS.score(x, torch.log(sig[labels] / 0.01) / math.log(5000), ve)

    vp = VPSDE(0.1, 20.0, 1000)
    abar = vp.alphas_cumprod

    def vp_model(x, labels):  # ε = -sqrt(1 - ᾱ_i) × the exact score of N(sqrt(ᾱ_i) μ, ᾱ_i v + 1 - ᾱ_i)
        a2 = abar[labels].to(x.dtype)[:, None]
        return -(1 - a2).sqrt() * -(x - a2.sqrt() * GAUSS.means[0].to(x.dtype)) / (a2 * 0.0625 + 1 - a2)

    for sde, model, eps in ((ve, ve_model, 1e-5), (vp, vp_model, 1e-3)):
        times = []
        score = get_score_fn(sde, model, continuous=False)

        def spy(x, t, score=score):
            times.append(float(t[0]))
            return score(x, t)

        level_times = torch.tensor([float(sde.level_time(i)) for i in range(sde.N)], dtype=F64)
        for name, steps in (("heun", 40), ("dpm++2m", 50)):
            times.clear()
            x, nfe = run(name, sde, spy, (N_784, 784), steps, eps, generator=torch.Generator().manual_seed(6),
                         discrete=True)
            off = (torch.tensor(times, dtype=F64)[:, None] - level_times).abs().amin(1)  # float32 t: within 1e-7
            assert nfe == len(times) and float(off.max()) < 1e-6, (name, float(off.max()))
            assert_gaussian(x, GAUSS.at_time(sde, float(sde.level_time(0))))
    assert snap_to_levels(ve, [1.0, 0.51, 0.499, 0.497, 1e-5]) == [1.0, 50 / 99, 49 / 99, 0.0]  # repeats dropped


# --- device placement ---------------------------------------------------------------------------------------------
class OnDevice(TorchFunctionMode):
    """Fails on any torch call whose tensor arguments or results are not on `device`, except inside the per-row
    draws of `pipeline.core.rng` (made on the generator's device by design, then moved)."""

    def __init__(self, device):
        super().__init__()
        self.device, self.exempt, self.calls = torch.device(device), 0, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.exempt:
            self.calls += 1
            stack = [args, kwargs, out]
            while stack:
                v = stack.pop()
                if isinstance(v, torch.Tensor):
                    assert v.device == self.device, f"{getattr(func, '__name__', func)} on {v.device}"
                elif isinstance(v, (list, tuple)):
                    stack.extend(v)
                elif isinstance(v, dict):
                    stack.extend(v.values())
        return out


def test_every_tensor_stays_on_the_requested_device(monkeypatch):
    """Each sampler once on the meta device (no values: a host sync or a CPU tensor in the arithmetic fails)."""
    guard = OnDevice("meta")
    real_draw = rng._draw

    def exempt_draw(*a, **kw):
        guard.exempt += 1
        try:
            return real_draw(*a, **kw)
        finally:
            guard.exempt -= 1

    monkeypatch.setattr(rng, "_draw", exempt_draw)
    for sde_name, (make, eps) in SDES.items():
        sde = make(1000)

        def score(x, t, sde=sde):  # the exact score of N(0, I) under the SDE, computed on x's device
            m, std = sde.marginal_coeffs(t)
            return -x / (m ** 2 + std ** 2)[:, None]

        for name in SAMPLERS:
            if not applies(name, sde_name):
                continue
            with guard:
                x, nfe = run(name, sde, score, (3, 2), 4, eps, device="meta", denoise=True,
                             generator=[rng.generator(0, i) for i in range(3)])
            assert x.device.type == "meta" and x.shape == (3, 2) and nfe == NFE_PER_STEP[name] * 4 + 1
    assert guard.calls > 100
    with pytest.raises(AssertionError, match="on cpu"), guard:  # the guard does catch a stray CPU tensor
        torch.zeros(2, device="meta") + torch.ones(2)


# --- params -------------------------------------------------------------------------------------------------------
BAD = [  # (--set overrides on params/smoke.yaml (VP), the key the error must name)
    (["sampling.method=heun"], "sampling.num_steps"),
    (["sampling.method=heun", "sampling.num_steps=10", "sampling.solver_order=3"], "sampling.solver_order"),
    (["sampling.method=dpm_solver", "sampling.num_steps=10", "sampling.multistep=true", "sampling.solver_order=3"],
     "sampling.solver_order"),
    (["sampling.method=dpm_solver", "sampling.num_steps=10", "sampling.solver_order=4"], "sampling.solver_order"),
    (["sampling.method=ddim", "sampling.num_steps=10", "training.sde=vesde"], "sampling.method"),
    (["samplers.fast={method: ddim, num_steps: 10}", "training.sde=vesde"], "samplers.fast.method"),
    (["samplers.fast={method: dpm_solver, num_steps: 10, eta: 1.0}"], "samplers.fast.eta"),
    (["samplers.fast={method: ddim, num_steps: 10, s_churn: 1.0}"], "samplers.fast.s_churn"),
    (["samplers.fast={method: heun, num_steps: 10, multistep: true}"], "samplers.fast.multistep"),
    (["samplers.fast={method: heun, num_steps: 10, s_tmin: 2.0, s_tmax: 1.0}"], "samplers.fast.s_tmax"),
    (["samplers.fast={method: heun, num_steps: 10, time_grid: cosine}"], "samplers.fast.time_grid"),
    (["samplers.fast={method: heun, num_steps: 0}"], "samplers.fast.num_steps"),
    (["samplers.fast={method: heun, num_steps: 10, rho: -1}"], "samplers.fast.rho"),
    (["samplers.fast={method: ddim, num_steps: 10, eta: -0.5}"], "samplers.fast.eta"),
    (["samplers.fast={method: pc, time_grid: edm}"], "samplers.fast.time_grid"),
    (["sampling.method=euler"], "sampling.method"),
]


@pytest.mark.parametrize("sets,key", BAD, ids=[k + ":" + s[-1] for s, k in BAD])
def test_bad_fast_sampler_settings_name_their_key(sets, key):
    with pytest.raises(ParamsError) as e:
        load_params("params/smoke.yaml", sets)
    assert e.value.key == key and len(str(e.value).splitlines()) == 1, str(e.value)


def test_draw_runs_each_fast_sampler_from_params():
    _, p = load_params("params/smoke.yaml", [
        "samplers.heun={method: heun, num_steps: 5, s_churn: 2.0}",
        "samplers.dpm3={method: dpm_solver, num_steps: 4, solver_order: 3}",
        "samplers.dpm2m={method: dpm_solver, num_steps: 6, multistep: true, time_grid: edm}",
        "samplers.ddim={method: ddim, num_steps: 7, eta: 0.5, noise_removal: false}"])
    net = models.build(p).eval()
    expected = {"heun": 11, "dpm3": 13, "dpm2m": 7, "ddim": 7}  # noise_removal (default true) adds one NFE
    for name, nfe_expected in expected.items():
        gens = [rng.generator(0, i) for i in range(3)]
        with torch.no_grad():
            x, nfe = draw(p, p.sampler_settings()[name], net, 3, gens)
        assert nfe == nfe_expected and x.shape == (3, 1, 8, 8) and torch.isfinite(x).all(), name
    assert set(sampling.METHODS) >= {"heun", "dpm_solver", "ddim"}
    labels = {n: sampler_label(p.sampler_settings()[n]) for n in expected}
    assert labels == {"heun": "Heun (EDM), 5 steps, churn 2", "dpm3": "DPM-Solver-3, 4 steps",
                      "dpm2m": "DPM-Solver++(2M), 6 steps", "ddim": "DDIM (eta 0.5), 7 steps"}, labels


# --- DPM-Solver++(2M): a first-order last step on short grids ------------------------------------------------------
# Final-state max error against the DOP853 reference at M = 10 (float64, 16 rows of the 2-D mixture), without / with
# `lower_order_final`, measured: uniform grid (diffusers' spacing) VP 0.425 / 0.173, sub-VP 0.734 / 0.286; edm grid
# VE 0.277 / 0.250, VP 0.445 / 0.353, sub-VP 0.741 / 0.630; logSNR grid (this project's default) 0.98-0.99x. From
# M = 15 on, the two are the same solver.
@pytest.mark.parametrize("sde_name", list(SDES))
def test_lower_order_final_step_shrinks_the_short_grid_error(sde_name):
    sde, eps, z, ref = _reference(sde_name)

    def error(M, grid, low):
        x, nfe = dpm_solver_sample(sde, MIX.score_fn(sde), z.shape, M, order=2, multistep=True, lower_order_final=low,
                                   eps=eps, z=z, dtype=F64, time_grid=grid)
        assert nfe == M
        return float((x - ref).abs().max())

    for grid in ("logsnr", "edm", "uniform"):
        assert error(10, grid, True) < error(10, grid, False), grid
        assert error(15, grid, True) == error(15, grid, False), grid  # 15 steps and more: second order throughout
    if sde_name != "vesde":  # VE's uniform grid is its logSNR grid
        assert error(10, "uniform", True) < 0.5 * error(10, "uniform", False)


def test_lower_order_final_is_a_dpm_solver_key():
    base = ["samplers={}", "sampling.method=dpm_solver", "sampling.num_steps=10", "sampling.multistep=true"]
    assert load_params("params/smoke.yaml", base)[1].sampling.lower_order_final is True
    assert load_params("params/smoke.yaml", base + ["sampling.lower_order_final=false"])[1].sampling.lower_order_final is False
    with pytest.raises(ParamsError, match="lower_order_final"):
        load_params("params/smoke.yaml", ["samplers={}", "sampling.method=heun", "sampling.num_steps=10",
                                          "sampling.lower_order_final=false"])
