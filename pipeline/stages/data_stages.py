"""`download` and `prepare`: per dataset, shared by every experiment on it."""
from __future__ import annotations

from pipeline.io import data, tracking
from pipeline.stages.common import add_common_arguments, dataset_arg

SPECS = [  # the stages' declarations, read by the DAG and the CLI (pipeline/workflow/commands.py)
    dict(command="download", help="fetch a dataset's raw files (torchvision layout; offline sources first)",
         scope="dataset", order=10, outs=("raw",), local=True),  # local: compute nodes often lack the internet
    dict(command="prepare", help="raw files -> uint8 NCHW arrays per split + manifest with sha256",
         scope="dataset", order=20, deps=("raw",), outs=("prepared",)),
]


def add_arguments(p, name: str) -> None:
    add_common_arguments(p, params_required=False)
    p.add_argument("--dataset", help="dataset name (instead of --params)")


def run(args) -> int:
    ds = dataset_arg(args)
    if args.stage == "download":
        out = data.download(args.root, ds)
        print(f"downloaded {ds} -> {out}")
        return 0
    out = data.prepare(args.root, ds)
    manifest = (out / "manifest.json").read_text()
    tracking.log_dataset_stage(args.root, ds, "prepare", out)
    print(f"prepared {ds} -> {out}\n{manifest}")
    return 0
