"""The sampling-method registry: a method is one declaration (pipeline.names.SAMPLING_METHOD_TABLE, plain data the
params schema reads) and one registered module (pipeline/samplers/methods/<name>.py), and every consumer goes through
them: `sampling.draw`, `sampling.sample_with_score` (the controllable stage), the curves' NFE, the report's labels
and the params checks.

- A method added here, in this file only ("prior": prior draws, NFE 0), is drawn, counted, labelled and validated.
- Each method's declared NFE equals the score evaluations its sampler makes on an exact Gaussian-mixture score.
- A key set on a method that does not read it is refused naming the key, for every (method, key) the declarations
  give; the default method's (PC) keys carry over into other methods unread, as `samplers:` entries inherit them.
"""
import pytest
import torch

from pipeline import names
from pipeline.config import ParamsError, SamplingConfig, load_params, unread_keys, validate
from pipeline.core import rng
from pipeline.core.experiment import make_sde, sample_shape
from pipeline.core.mixtures import GaussianMixture
from pipeline.metrics import curves
from pipeline.models import zoo as models
from pipeline.report.results import sampler_label, sampler_text
from pipeline.samplers import sampling
from pipeline.samplers.method import METHODS, Method, register

SMOKE = "params/smoke.yaml"  # digits 8x8, VP, continuous, an MLP


# --- (a) a method added by one declaration and one registration ------------------------------------------------------
class Prior(Method):
    """Draws from the prior x_T ~ p_T: no score evaluation."""

    name = "prior"

    def sample(self, params, s, sde, score_fn, shape, generator, device="cpu"):
        return sde.prior_sampling(shape, generator, device=device), 0

    def nfe(self, s, num_scales):
        return 0

    def label(self, s):
        return "prior draws (no score)"


@pytest.fixture
def prior(monkeypatch):
    """The new method: its declaration (what the params schema reads) and its registered code, nothing else."""
    monkeypatch.setitem(names.SAMPLING_METHOD_TABLE, "prior", names.SamplingMethod("prior", keys=(), knob=None))
    register(Prior)
    try:
        yield
    finally:
        del METHODS["prior"]


def test_a_new_method_is_drawn_counted_labelled_and_validated(prior):
    _, p = load_params(SMOKE, ["samplers.prior={method: prior}", "eval.controllable=[]"])
    s = p.sampler_settings()["prior"]
    net = models.build(p).eval()
    gens = lambda: [rng.generator(0, "t", i) for i in range(3)]  # noqa: E731
    with torch.no_grad():
        x, nfe = sampling.draw(p, s, net, 3, gens())
    assert nfe == 0 and torch.equal(x, make_sde(p).prior_sampling(sample_shape(p, 3), gens()))
    x2, _ = sampling.sample_with_score(p, s, make_sde(p), None, sample_shape(p, 3), gens())  # the controllable path
    assert torch.equal(x, x2)
    assert curves.nfe_of(s, p.model.num_scales) == 0
    assert sampler_label(s) == "prior draws (no score)" and sampler_text("prior", s) == "prior draws (no score)"
    _, p = load_params(SMOKE, ["sampling.method=prior", "samplers={}", "eval.controllable=[]"])  # the default sampler
    assert p.sampling.method == "prior"
    with pytest.raises(ParamsError) as e:  # it reads no fast-sampler key
        load_params(SMOKE, ["samplers.prior={method: prior, eta: 0.5}"])
    assert e.value.key == "samplers.prior.eta" and "applies to method ddim only, not prior" in e.value.message


def test_a_method_without_its_code_is_refused(monkeypatch):
    """`sample` and `label` are abstract; a method that declares a curve knob must say its NFE on it (nfe_terms)."""
    monkeypatch.setitem(names.SAMPLING_METHOD_TABLE, "prior", names.SamplingMethod("prior", keys=(), knob=None))

    class Unlabelled(Method):
        name = "prior"

        def sample(self, params, s, sde, score_fn, shape, generator, device="cpu"):
            return Prior.sample(self, params, s, sde, score_fn, shape, generator, device)

    with pytest.raises(TypeError, match="abstract class Unlabelled with abstract method '?label"):
        register(Unlabelled)
    monkeypatch.setitem(names.SAMPLING_METHOD_TABLE, "prior", names.SamplingMethod("prior", keys=(), knob="num_steps"))

    class Uncounted(Prior):
        nfe = Method.nfe  # the NFE from the knob's line, which this method does not give

    with pytest.raises(TypeError, match="'prior' declares the curve knob 'num_steps' but has no nfe_terms"):
        register(Uncounted)
    assert "prior" not in METHODS


def test_an_undeclared_method_is_refused():
    with pytest.raises(ParamsError) as e:
        load_params(SMOKE, ["samplers.prior={method: prior}"])
    assert e.value.key == "samplers.prior.method" and "'pc', 'ode'" in e.value.message, e.value
    with pytest.raises(ValueError, match="no declaration"):
        register(Prior)
    with pytest.raises(ValueError, match="unknown sampling method 'prior'"):
        sampling.method("prior")


def test_the_registry_and_the_declarations_agree():
    assert list(names.SAMPLING_METHOD_TABLE) == list(names.SAMPLING_METHODS)
    assert set(METHODS) == set(names.SAMPLING_METHODS) == {"pc", "ode", "ald", "heun", "dpm_solver", "ddim"}
    for name, m in METHODS.items():
        assert m.name == name and m.spec is names.SAMPLING_METHOD_TABLE[name]
        assert set(m.spec.keys) <= set(SamplingConfig.model_fields) - set(names.COMMON_SAMPLING_KEYS)


# --- (b) the declared NFE is what the sampler spends -----------------------------------------------------------------
MIX = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [0.3, 0.2])
S = lambda **kw: SamplingConfig(**kw)  # noqa: E731
SETTINGS = {  # every registered method: a few settings, each changing a term of its NFE
    "pc": [S(method="pc"), S(method="pc", noise_removal=False, num_steps=7),
           S(method="pc", predictor="reverse_diffusion", corrector="langevin", n_steps_each=2),
           S(method="pc", predictor="reverse_diffusion", corrector="langevin", order="paper", num_steps=9),
           S(method="pc", predictor="none", corrector="langevin", num_steps=6)],
    "ode": [S(method="ode", rtol=1e-3, atol=1e-3), S(method="ode", rtol=1e-3, atol=1e-3, noise_removal=True)],
    "ald": [S(method="ald", n_steps_each=2), S(method="ald", n_steps_each=1, noise_removal=True)],
    "heun": [S(method="heun", num_steps=5), S(method="heun", num_steps=5, solver_order=1, noise_removal=False),
             S(method="heun", num_steps=4, s_churn=2.0)],
    "dpm_solver": [S(method="dpm_solver", num_steps=4, solver_order=k) for k in (1, 2, 3)]
                  + [S(method="dpm_solver", num_steps=6, multistep=True, noise_removal=False)],
    "ddim": [S(method="ddim", num_steps=5), S(method="ddim", num_steps=5, eta=1.0, noise_removal=False)],
}


def _toy_params(sde: str, continuous: bool):
    """A 2-D toy experiment; beta_max 1: the VP DDPM table allows any number of steps."""
    return validate({"data": {"dataset": "gmm", "image_size": 2, "num_channels": 1},
                     "model": {"name": "mlp", "num_scales": 12, "beta_max": 1.0, "sigma_max": 5.0},
                     "training": {"sde": sde, "continuous": continuous}, "eval": {"enable_bpd": False}}, "toy.yaml")


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_methods_nfe_is_what_its_sampler_spends(name):
    assert set(SETTINGS) == set(METHODS)  # a new method needs its settings here
    m = sampling.method(name)
    for sde_name in m.spec.sdes:
        p = _toy_params(sde_name, continuous="continuous" in m.spec.models)
        sde = make_sde(p)
        for s in SETTINGS[name]:
            where = f"{name} on {sde_name}: {s.model_dump(exclude_defaults=True)}"
            gens = [rng.generator(0, "nfe", i) for i in range(4)]
            with torch.no_grad():
                x, spent = m.sample(p, s, sde, MIX.score_fn(sde), sample_shape(p, 4), gens)
            expected = m.nfe(s, p.model.num_scales)
            assert x.shape == (4, 2) and torch.isfinite(x).all(), where
            if m.spec.knob is None:  # adaptive: measured only
                assert expected is None and spent > 0, where
            else:
                assert spent == expected == curves.nfe_of(s, p.model.num_scales), where


# --- (c) a key on a method that does not read it ---------------------------------------------------------------------
VALUES = {"rtol": 1e-3, "atol": 1e-3, "ode_method": "RK23", "step_lr": 1e-4, "step_convention": "paper",
          "solver_order": 1, "multistep": True, "time_grid": "edm", "rho": 5.0, "s_churn": 1.0, "s_tmin": 0.1,
          "s_tmax": 2.0, "s_noise": 1.1, "eta": 0.5,
          "lower_order_final": False}  # a valid value other than the default of each refusable key
PC_KEYS = set(names.SAMPLING_METHOD_TABLE[names.DEFAULT_SAMPLING_METHOD].keys)
CASES = [(m.name, key) for m in names.SAMPLING_METHOD_TABLE.values()
         for key in SamplingConfig.model_fields
         if key not in set(m.keys) | PC_KEYS | set(names.COMMON_SAMPLING_KEYS)]


def _experiment_for(method: str) -> list[str]:
    """--set overrides of params/smoke.yaml giving an experiment `method` runs on."""
    m = names.SAMPLING_METHOD_TABLE[method]
    return ["samplers={}", f"training.sde={m.sdes[0]}", f"training.continuous={'continuous' in m.models}"]


def test_every_refusable_key_has_a_value():
    assert {key for _, key in CASES} == set(VALUES) and len(CASES) >= 40


@pytest.mark.parametrize("method,key", CASES, ids=[f"{m}-{k}" for m, k in CASES])
def test_a_key_the_method_does_not_read_is_refused(method, key):
    need = {"method": method, **{k: 10 for k in names.SAMPLING_METHOD_TABLE[method].required}}
    flow = lambda over: "samplers.x={" + ", ".join(f"{k}: {v}" for k, v in over.items()) + "}"  # noqa: E731
    with pytest.raises(ParamsError) as e:
        load_params(SMOKE, _experiment_for(method) + [flow({**need, key: VALUES[key]})])
    assert e.value.key == f"samplers.x.{key}", e.value
    assert f"{key} applies to method" in e.value.message and f"not {method}" in e.value.message
    _, p = load_params(SMOKE, _experiment_for(method) + [flow(need)])  # the same setting without the key passes
    assert unread_keys(p.sampler_settings()["x"]) == []


def test_messages_name_the_readers_and_the_default_methods_keys_carry_over():
    with pytest.raises(ParamsError, match=r"samplers\.x\.eta: eta applies to method ddim only, not heun"):
        load_params(SMOKE, ["samplers.x={method: heun, num_steps: 5, eta: 0.5}"])
    with pytest.raises(ParamsError, match=r"samplers\.x\.time_grid: time_grid applies to methods heun, dpm_solver, "
                                          r"ddim only, not pc"):
        load_params(SMOKE, ["samplers.x={method: pc, time_grid: edm}"])
    # a value inherited from `sampling:` counts: a heun default sampler's churn must be reset for the ODE
    with pytest.raises(ParamsError, match=r"samplers\.ode\.s_churn: s_churn applies to method heun only"):
        load_params(SMOKE, ["sampling.method=heun", "sampling.num_steps=10", "sampling.s_churn=5"])
    load_params(SMOKE, ["sampling.method=heun", "sampling.num_steps=10", "sampling.s_churn=5",
                        "samplers.ode={method: ode, rtol: 0.001, atol: 0.001, s_churn: 0}"])
    # PC keys (the default method's) are unread elsewhere but never refused
    _, p = load_params(SMOKE, ["samplers.x={method: ode, predictor: reverse_diffusion, corrector: langevin}"])
    assert p.sampler_settings()["x"].predictor == "reverse_diffusion"


@pytest.mark.parametrize("sets,key,words", [
    (["sampling.method=ddim", "sampling.num_steps=5", "training.sde=vesde"], "sampling.method", "vpsde or subvpsde"),
    (["sampling.method=ald", "training.sde=vesde"], "sampling.method", "trained discretely"),  # NCSN: the levels
    (["sampling.method=ald", "training.continuous=false"], "sampling.method", "runs on vesde"),
    (["sampling.method=dpm_solver"], "sampling.num_steps", "needs num_steps"),
    (["sampling.method=heun", "sampling.num_steps=5", "sampling.solver_order=3"], "sampling.solver_order", "up to 2"),
    (["sampling.method=dpm_solver", "sampling.num_steps=5", "sampling.multistep=true", "sampling.solver_order=3"],
     "sampling.solver_order", "with multistep takes solver_order up to 2"),
    (["eval.controllable=[class_conditional]", "eval.class_conditional.sampling={method: ald}", "training.sde=vesde",
      "training.continuous=false"], "eval.class_conditional.sampling.method",
     "class-conditional sampling runs pc, ode, heun, dpm_solver or ddim, not ald"),
])
def test_where_a_method_runs_is_its_declaration(sets, key, words):
    with pytest.raises(ParamsError) as e:
        load_params(SMOKE, ["samplers={}"] + sets)
    assert e.value.key == key and words in e.value.message, e.value
