"""`mlflow_view`: the URL of a suite's results in the MLflow UI (the "Model training" runs table: one row per
experiment and sampler with FD, NFE and the sampler's settings, sorted by FD); with `--screenshot PNG`, that view in
headless Chromium (a temporary `mlflow server` over the store), e.g. reports/<suite>/mlflow.png (`make mlflow-png`)."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import StageError
from pipeline.io import mlflow_view, tracking
from pipeline.stages.common import check_name_arg, inside_root

SPEC = dict(  # this command's declaration, read by the CLI (pipeline/workflow/commands.py)
    command="mlflow_view", order=170,
    help="print the URL of a suite's results in the MLflow UI; --screenshot PNG renders it in headless Chromium",
)


def add_arguments(p, name: str) -> None:
    p.add_argument("--suite", default="default", help="suite name (the `suite:` key of the params files)")
    p.add_argument("--base", default=None, help="the UI's address (default: the tracking server, else $PIPELINE_MLFLOW_UI "
                                                f"or {mlflow_view.DEFAULT_UI}, `make ui`'s)")
    p.add_argument("--screenshot", default=None, metavar="PNG", help="render the view and write a screenshot here")
    p.add_argument("--root", default=None)


def run(args) -> int:
    check_name_arg("--suite", "suite", args.suite)
    uri = tracking.tracking_uri(args.root)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    from pipeline.report import mlflow_page

    try:
        exp = mlflow_page.experiment_id(uri, args.suite)
    except LookupError as e:
        raise StageError(str(e)) from None
    print(mlflow_view.runs_url((args.base or mlflow_view.ui_base(uri)).rstrip("/"), exp))
    if args.screenshot:
        png = inside_root(Path(args.root), os.path.relpath(Path(args.screenshot).resolve(), Path(args.root)))
        png.parent.mkdir(parents=True, exist_ok=True)
        try:
            _, text = mlflow_page.results_view(uri, args.suite, png)
        except (OSError, RuntimeError) as e:
            raise StageError(f"--screenshot: {e}") from None
        print(f"wrote {png} ({'the results table' if 'matching runs' in text else 'no runs table found: check it'})")
    return 0
