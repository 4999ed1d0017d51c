"""Published CIFAR-10 numbers (docs/papers.md §7, the only source used here), keyed by the experiment names of
params/cifar10/. The report compares an experiment with these numbers only when it ran on `DATASET`.

Tuples are (mean, std); a missing std means the paper printed none.
"""

DATASET = "cifar10"

# The papers' evaluation protocol (docs/papers.md §8) and Table 3's checkpoint rule (§7): what a row must match for
# its difference from the paper to mean anything.
NUM_SAMPLES = 50000
FEATURE_NET = "Inception-v3"
CHECKPOINT_TABLE3 = "the checkpoint with the best FID"
CHECKPOINT_TABLE2 = "the last checkpoint"

# Score SDE, Table 3: sample quality (FID ↓, IS ↑), best-FID checkpoint, PC sampler, 50k samples. The NCSN, NCSNv2 and
# DDPM rows are the numbers of their own papers as Table 3 quotes them. Row order = the paper's.
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

# Score SDE, Table 2: test NLL in bits/dim (↓) and FID with the probability-flow ODE sampler (↓); last checkpoint.
TABLE2 = {
    "ddpm": {"model": "DDPM", "nll": 3.28, "fid_ode": 3.37},
    "ddpm_cont_vp": {"model": "DDPM cont. (VP)", "nll": 3.21, "fid_ode": 3.69},
    "ddpm_cont_subvp": {"model": "DDPM cont. (sub-VP)", "nll": 3.05, "fid_ode": 3.56},
    "ddpmpp_cont_vp": {"model": "DDPM++ cont. (VP)", "nll": 3.16, "fid_ode": 3.93},
    "ddpmpp_cont_subvp": {"model": "DDPM++ cont. (sub-VP)", "nll": 3.02, "fid_ode": 3.16},
    "ddpmpp_cont_deep_vp": {"model": "DDPM++ cont. (deep, VP)", "nll": 3.13, "fid_ode": 3.08},
    "ddpmpp_cont_deep_subvp": {"model": "DDPM++ cont. (deep, sub-VP)", "nll": 2.99, "fid_ode": 2.92},
}

# Score SDE, Table 1: FID (mean ± std over 5 runs) of reverse-time SDE solvers on the discrete SMLD (VE) and DDPM (VP)
# models, both with the DDPM architecture, N = 1000. P2000 interpolates between noise scales; C2000 runs correctors
# only (one value per SDE: the predictor does not enter). Layout: rows = predictor, columns = sampler, a VE and a VP
# block. TABLE1_EXPERIMENTS names the params/cifar10/ experiment that holds each block's model.
TABLE1_PREDICTORS = {"ancestral_sampling": "ancestral sampling", "reverse_diffusion": "reverse diffusion",
                     "probability_flow": "probability flow"}
TABLE1_COLUMNS = ("P1000", "P2000", "C2000", "PC1000")
TABLE1_SDES = {"VE": "Variance Exploding SDE (SMLD)", "VP": "Variance Preserving SDE (DDPM)"}
TABLE1_EXPERIMENTS = {"VE": "ddpm_ve", "VP": "ddpm"}
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

# Score SDE, Table 5 (docs/papers.md §3): the best signal-to-noise ratio r of the Langevin corrector for each Table 1 cell
# that has one (PC1000 per predictor; C2000). The Table 1 sampler variants in params/cifar10/ use these.
TABLE5_SNR = {
    ("ancestral_sampling", "PC1000"): {"VE": 0.17, "VP": 0.01},
    ("reverse_diffusion", "PC1000"): {"VE": 0.16, "VP": 0.01},
    ("probability_flow", "PC1000"): {"VE": 0.17, "VP": 0.04},
    ("none", "C2000"): {"VE": 0.22, "VP": 0.27},
}

# NCSN paper (Song & Ermon 2019), Table 1: unconditional CIFAR-10, Inception score ↑ and FID ↓. NCSNv2 (Song & Ermon
# 2020) on CIFAR-10: FID 10.87, IS 8.40 — marked [?] in docs/papers.md §7 (the NCSNv2 paper itself was not checked);
# Score SDE Table 3 quotes the same numbers with IS ± .07.
NCSN_TABLE1 = {
    "ncsn": {"model": "NCSN (Song & Ermon 2019)", "is": 8.87, "is_std": 0.12, "fid": 25.32},
    "ncsnv2": {"model": "NCSNv2 (Song & Ermon 2020) [?]", "is": 8.40, "is_std": 0.07, "fid": 10.87},
}
