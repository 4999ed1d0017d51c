"""`method: ode`: the probability-flow ODE with scipy's adaptive solver (Score SDE Sec. 4.3; `sde_samplers.ode_sample`).
Its NFE is the solver's: an FD-vs-NFE curve sweeps its tolerances (curves.ode_tols)."""
from pipeline.samplers.method import Method, register, sampling_eps
from pipeline.samplers.sde_samplers import ode_sample


@register
class ODE(Method):
    name = "ode"

    def sample(self, params, s, sde, score_fn, shape, generator, device="cpu"):
        return ode_sample(sde, score_fn, shape, rtol=s.rtol, atol=s.atol, eps=sampling_eps(params, s),
                          method=s.ode_method, denoise=s.noise_removal, generator=generator, device=device)

    def label(self, s):
        return f"ODE ({s.ode_method}, rtol {s.rtol:g})"
