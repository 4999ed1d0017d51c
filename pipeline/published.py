"""Published CIFAR-10 numbers (PAPERS.md §7), keyed by the experiment names of params/cifar10/."""

# Score SDE Table 3 (FID, IS; PC sampler, 50k samples) and NCSN Table 1.
TABLE3 = {
    "ncsn": {"model": "NCSN", "fid": 25.32, "is": 8.87, "is_std": 0.12},
    "ncsnv2": {"model": "NCSNv2", "fid": 10.87, "is": 8.40, "is_std": 0.07},
    "ddpm": {"model": "DDPM", "fid": 3.17, "is": 9.46, "is_std": 0.11},
    "ddpmpp": {"model": "DDPM++", "fid": 2.78, "is": 9.64},
    "ddpmpp_cont_vp": {"model": "DDPM++ cont. (VP)", "fid": 2.55, "is": 9.58},
    "ddpmpp_cont_subvp": {"model": "DDPM++ cont. (sub-VP)", "fid": 2.61, "is": 9.56},
    "ddpmpp_cont_deep_vp": {"model": "DDPM++ cont. (deep, VP)", "fid": 2.41, "is": 9.68},
    "ddpmpp_cont_deep_subvp": {"model": "DDPM++ cont. (deep, sub-VP)", "fid": 2.41, "is": 9.57},
    "ncsnpp": {"model": "NCSN++", "fid": 2.45, "is": 9.73},
    "ncsnpp_cont": {"model": "NCSN++ cont. (VE)", "fid": 2.38, "is": 9.83},
    "ncsnpp_cont_deep": {"model": "NCSN++ cont. (deep, VE)", "fid": 2.20, "is": 9.89},
}

# Score SDE Table 2 (test NLL in bits/dim; FID with the probability-flow ODE sampler).
TABLE2 = {
    "ddpm": {"model": "DDPM", "nll": 3.28, "fid_ode": 3.37},
    "ddpm_cont_vp": {"model": "DDPM cont. (VP)", "nll": 3.21, "fid_ode": 3.69},
    "ddpm_cont_subvp": {"model": "DDPM cont. (sub-VP)", "nll": 3.05, "fid_ode": 3.56},
    "ddpmpp_cont_vp": {"model": "DDPM++ cont. (VP)", "nll": 3.16, "fid_ode": 3.93},
    "ddpmpp_cont_subvp": {"model": "DDPM++ cont. (sub-VP)", "nll": 3.02, "fid_ode": 3.16},
    "ddpmpp_cont_deep_vp": {"model": "DDPM++ cont. (deep, VP)", "nll": 3.13, "fid_ode": 3.08},
    "ddpmpp_cont_deep_subvp": {"model": "DDPM++ cont. (deep, sub-VP)", "nll": 2.99, "fid_ode": 2.92},
}

# Score SDE Table 1 (FID mean ± std over 5 runs), discrete SMLD (VE) / DDPM (VP) models.
TABLE1 = {
    ("ancestral_sampling", "P1000"): {"VE": (4.98, .06), "VP": (3.24, .02)},
    ("ancestral_sampling", "P2000"): {"VE": (4.88, .06), "VP": (3.24, .02)},
    ("ancestral_sampling", "PC1000"): {"VE": (3.62, .03), "VP": (3.21, .02)},
    ("reverse_diffusion", "P1000"): {"VE": (4.79, .07), "VP": (3.21, .02)},
    ("reverse_diffusion", "P2000"): {"VE": (4.74, .08), "VP": (3.19, .02)},
    ("reverse_diffusion", "PC1000"): {"VE": (3.60, .02), "VP": (3.18, .01)},
    ("probability_flow", "P1000"): {"VE": (15.41, .15), "VP": (3.59, .04)},
    ("probability_flow", "P2000"): {"VE": (10.54, .08), "VP": (3.23, .03)},
    ("probability_flow", "PC1000"): {"VE": (3.51, .04), "VP": (3.06, .03)},
    ("none", "C2000"): {"VE": (20.43, .07), "VP": (19.06, .06)},
}
