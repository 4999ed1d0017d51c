"""`method: heun`: Heun (order 2) or Euler (order 1) steps on the EDM time grid with optional churn (Karras et al.
2022, Alg. 1-2; `fast_samplers.heun_sample`)."""
from pipeline.samplers.fast_samplers import heun_sample
from pipeline.samplers.method import FewStepMethod, denoise_nfe, register


@register
class Heun(FewStepMethod):
    name = "heun"
    default_grid = "edm"

    def sample(self, params, s, sde, score_fn, shape, generator, device="cpu"):
        return heun_sample(sde, score_fn, shape, order=s.solver_order, s_churn=s.s_churn, s_tmin=s.s_tmin,
                           s_tmax=s.s_tmax, s_noise=s.s_noise, **self.grid_args(params, s, generator, device))

    def nfe_terms(self, s, num_scales):
        return s.solver_order, denoise_nfe(s)

    def label(self, s):
        churn = f", churn {s.s_churn:g}" if s.s_churn > 0 else ""
        return f"{'Heun' if s.solver_order == 2 else 'Euler'} (EDM), {s.num_steps} steps{churn}"
