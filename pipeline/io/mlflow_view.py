"""Where a reviewer lands in the MLflow UI: the experiment's tags that open the runs table ("Model training", not MLflow
3's GenAI overview) with the result runs, their FD, NFE and sampler columns, sorted by FD; and the URLs of that view
and of a run.

MLflow 3.17's UI picks its view from the URL parameter `workflowType` (`machine_learning` or `genai`, the default; the
choice is then kept in the browser) and reads a saved runs-table state from the experiment tag
`mlflow.sharedViewState.<key>` when the URL says `viewStateShareKey=<key>` (filter, sort, columns; plain JSON). The
tag `mlflow.experimentKind = custom_model_development` says the same to UIs that read the experiment's kind.
"""
from __future__ import annotations

import json
import os
import urllib.parse

VIEW_KEY = "results"
WORKFLOW = "machine_learning"
DEFAULT_UI = "http://127.0.0.1:5000"  # `make ui`
UI_ENV = "PIPELINE_MLFLOW_UI"  # the UI's address when the tracking URI is not a server (a SQLite store)

# The result runs' columns, left to right: the metrics a reviewer compares, then what distinguishes the rows.
METRICS = ("fd", "fid", "nfe", "kd", "is", "mmd2", "sw2")
PARAMS = ("sampler.method", "sampler.num_steps", "sampler.predictor", "sampler.corrector")
TAGS = ("pipeline.sde", "pipeline.model")


def column(kind: str, name: str) -> str:
    """The UI's column key: `metrics.`fd``, `params.`sampler.method``, `tags.`pipeline.sde``."""
    return f"{kind}.`{name}`"


def results_view() -> dict:
    """The runs-table state of the results view: result runs only (one per experiment and sampler), FD ascending."""
    return {"searchFilter": "tags.`pipeline.kind` = 'result'", "orderByKey": column("metrics", "fd"), "orderByAsc": True,
            "selectedColumns": [column("metrics", m) for m in METRICS] + [column("params", p) for p in PARAMS]
            + [column("tags", t) for t in TAGS],
            "columnWidths": {**{k: 250 for k in ("tags.`mlflow.runName`", "attributes.`Run Name`")},
                             **{column("metrics", m): 90 for m in METRICS}},
            "runsHiddenMode": "SHOW_ALL"}


def experiment_tags(suite: str) -> dict[str, str]:
    return {"mlflow.experimentKind": "custom_model_development",
            f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(results_view(), separators=(",", ":")),
            "mlflow.note.content": f"Suite `{suite}` of the score-SDE reproduction: one run per suite, under it one per "
                                   "experiment, under that one per stage; the result runs (`tags.pipeline.kind = "
                                   "'result'`) hold one (experiment, sampler) each, with FD, NFE and the sampler's "
                                   "settings. The report is an artifact of the suite run."}


def ui_base(tracking_uri: str | None = None) -> str:
    """The UI's address: the tracking server when the tracking URI is one, else $PIPELINE_MLFLOW_UI or `make ui`'s."""
    uri = tracking_uri if tracking_uri is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
    if urllib.parse.urlsplit(uri).scheme in ("http", "https"):
        return uri.rstrip("/")
    return os.environ.get(UI_ENV, DEFAULT_UI).rstrip("/")


def runs_url(base: str, experiment_id: str) -> str:
    """The results view of an experiment (suite) in the "Model training" runs table."""
    q = urllib.parse.urlencode({"workflowType": WORKFLOW, "viewStateShareKey": VIEW_KEY})
    return f"{base}/#/experiments/{experiment_id}/runs?{q}"


def run_url(base: str, run_id: str, experiment_id: str | None = None) -> str:
    """A run's page (the UI finds its experiment when `experiment_id` is None)."""
    where = f"experiments/{experiment_id}/runs/{run_id}" if experiment_id else f"runs/{run_id}"
    return f"{base}/#/{where}?workflowType={WORKFLOW}"
