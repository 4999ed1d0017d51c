"""`method: ald`: NCSN v1 annealed Langevin dynamics over a discrete VE model's levels (Song & Ermon 2019, Alg. 1;
`sde_samplers.ald_sample`). It starts from U[0, 1), the NCSN data range, so its samples are mapped to [-1, 1] for
centered data. It samples the network's own score only (not a guided one)."""
from pipeline.samplers.method import Method, denoise_nfe, register
from pipeline.samplers.sde_samplers import ald_sample


@register
class ALD(Method):
    name = "ald"

    def sample(self, params, s, sde, score_fn, shape, generator, device="cpu"):
        x, nfe = ald_sample(sde, score_fn, shape, n_steps_each=s.n_steps_each, step_lr=s.step_lr,
                            convention=s.step_convention, denoise=s.noise_removal, generator=generator,
                            device=device)
        return (x * 2 - 1 if params.data.centered else x), nfe

    def nfe_terms(self, s, num_scales):
        """L n + d: n = n_steps_each at each of the L = num_scales levels, d = 1 with noise_removal."""
        return num_scales, denoise_nfe(s)

    def label(self, s):
        return f"ALD ({s.n_steps_each} steps/level, {s.step_convention} step)"
