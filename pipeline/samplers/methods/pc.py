"""`method: pc`: the predictor-corrector sampler (Score SDE, Alg. 1-3; `sde_samplers.pc_sample`) with the predictor and
corrector named in the setting (pipeline/samplers/predictors.py, correctors.py)."""
from pipeline.samplers.method import Method, register, sampling_eps
from pipeline.samplers.sde_samplers import pc_sample


@register
class PC(Method):
    name = "pc"

    def sample(self, params, s, sde, score_fn, shape, generator, device="cpu"):
        return pc_sample(sde, score_fn, shape, predictor=s.predictor, corrector=s.corrector, snr=s.snr,
                         n_steps=s.n_steps_each, eps=sampling_eps(params, s), denoise=s.noise_removal,
                         generator=generator, probability_flow=s.probability_flow, order=s.order,
                         num_steps=s.num_steps, device=device)

    def nfe_terms(self, s, num_scales):
        """Order "reference": M (p + c n); "paper": M p + (M - 1) c n (no corrector after the last predictor step),
        p = 1 with a predictor, c = 1 with a corrector, n = n_steps_each. The last predictor step's mean is the
        denoised sample: no extra evaluation."""
        p = int(s.predictor != "none")
        cn = s.n_steps_each if s.corrector != "none" else 0
        if s.order == "paper" and p:
            return p + cn, -cn
        return p + cn, 0

    def label(self, s):
        pred = s.predictor + (" (probability flow)" if s.probability_flow else "")
        steps = f", {s.num_steps} steps" if s.num_steps else ""
        return f"PC: {pred} + {s.corrector}" + (f", snr {s.snr:g}" if s.corrector != "none" else "") + steps
