"""`method: ddim`: DDIM on a uniform time grid, eta 0 deterministic to 1 ancestral (Song, Meng & Ermon 2021;
`fast_samplers.ddim_sample`); VP and sub-VP SDEs."""
from pipeline.samplers.fast_samplers import ddim_sample
from pipeline.samplers.method import FewStepMethod, denoise_nfe, register


@register
class DDIM(FewStepMethod):
    name = "ddim"
    default_grid = "uniform"

    def sample(self, params, s, sde, score_fn, shape, generator, device="cpu"):
        return ddim_sample(sde, score_fn, shape, eta=s.eta, **self.grid_args(params, s, generator, device))

    def nfe_terms(self, s, num_scales):
        return 1, denoise_nfe(s)

    def label(self, s):
        return f"DDIM (eta {s.eta:g}), {s.num_steps} steps"
