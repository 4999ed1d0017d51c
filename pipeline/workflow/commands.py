"""The command table: each `python -m pipeline COMMAND` and the module under `pipeline/stages/` that runs it.

The CLI dispatches through it, and the DAG reads it to derive each stage's code dependencies from that module's
imports (`pipeline.workflow.code_deps`).
"""

# command -> (module under pipeline.stages, one-line help)
COMMANDS = {
    "download": ("data_stages", "fetch a dataset's raw files (torchvision layout; offline sources first)"),
    "prepare": ("data_stages", "raw files -> uint8 NCHW arrays per split + manifest with sha256"),
    "evaluator": ("evaluator", "train the dataset classifier (offline FD/KD/IS) and cache reference statistics"),
    "train": ("train", "train the experiment's score model with Accelerate (resumable snapshots, EMA)"),
    "sample": ("sample", "draw eval.num_samples samples with one sampler setting (.npz + grid PNG)"),
    "evaluate": ("evaluate", "FD/KD/IS on the classifier; FID/KID/IS on Inception-v3 when its weights exist"),
    "likelihood": ("likelihood", "test-set bits/dim with the probability-flow ODE"),
    "controllable": ("controllable", "inpainting / colorization examples from a few test images, class-conditional samples (PNG grids)"),
    "curves": ("curves", "classifier FD against NFE per sampler and against training step (best checkpoint)"),
    "classifier": ("classifier", "train the noise-conditional classifier p_t(y | x(t)) for class-conditional sampling"),
    "report": ("report", "paper-style tables beside the published numbers (Markdown, LaTeX, HTML)"),
    "import": ("import_ckpt", "convert a reference checkpoint (score_sde, ncsn, ncsnv2) into this project's format"),
    "describe": ("describe", "print an experiment's resolved params, parameter count and stages as JSON"),
    "stale": ("commit", "print the outputs of every stale stage (dvc status, or a provenance stamp that differs) for snakemake --forcerun"),
    "commit": ("commit", "record in dvc.lock the stages whose outputs were made by their current code, params and data"),
    "dag": ("dag_cmd", "write dvc.yaml for a suite from params/ (the Snakefile reads the same DAG)"),
}


def stage_module(command: str) -> str:
    """The dotted module that runs `command`, e.g. "pipeline.stages.sample"."""
    return f"pipeline.stages.{COMMANDS[command][0]}"
