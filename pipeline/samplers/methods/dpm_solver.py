"""`method: dpm_solver`: DPM-Solver 1-3 single-step (Lu et al. 2022a) or DPM-Solver++(2M) multistep (Lu et al. 2022b)
on the logSNR grid (`fast_samplers.dpm_solver_sample`)."""
from pipeline.samplers.fast_samplers import dpm_solver_sample
from pipeline.samplers.method import FewStepMethod, denoise_nfe, register


@register
class DPMSolver(FewStepMethod):
    name = "dpm_solver"
    default_grid = "logsnr"

    def sample(self, params, s, sde, score_fn, shape, generator, device="cpu"):
        return dpm_solver_sample(sde, score_fn, shape, order=s.solver_order, multistep=s.multistep,
                                 lower_order_final=s.lower_order_final,
                                 **self.grid_args(params, s, generator, device))

    def nfe_terms(self, s, num_scales):
        return 1 if s.multistep else s.solver_order, denoise_nfe(s)

    def label(self, s):
        name = f"DPM-Solver++({s.solver_order}M)" if s.multistep else f"DPM-Solver-{s.solver_order}"
        return f"{name}, {s.num_steps} steps"
