"""The smoke experiment end to end through `dvc repro` in a temporary copy of the repository; DVC's metrics, plots and
experiments views and `snakemake --report` over that one run; then the rerun rules: a sampler setting reruns only
that sampler's stages and the report; a model setting reruns train onwards."""
import functools
import json
import re
import shutil
import sqlite3
import subprocess
import time

import pytest
from conftest import venv_env
from e2e_util import copy_repo, publish_smoke_reference, python, run, smoke_reference_lock
from test_dag import snakemake_jobs

DVC = "pipelines/smoke/dvc.yaml"
SMOKE = "runs/smoke/smoke"
ALL_DOWNSTREAM_OF_TRAIN = {"train-smoke", "sample-smoke-pc", "sample-smoke-ode", "evaluate-smoke-pc",
                           "evaluate-smoke-ode", "likelihood-smoke", "controllable-smoke", "report-smoke"}


@functools.lru_cache(maxsize=None)
def dvc_children(repo) -> dict[str, set[str]]:
    """stage -> the stages that consume its outputs, from `dvc dag` (3 s a call). No test changes the DAG's shape
    (edits change values and code, not which stage reads which output), so one call per copy serves them all."""
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', run(["dvc", "dag", "--dot", DVC], repo).stdout)
    children: dict[str, set[str]] = {}
    for a, b in edges:
        children.setdefault(a.split(":")[-1], set()).add(b.split(":")[-1])
    return children


def dvc_would_run(repo) -> set[str]:
    """Stages `dvc status` names as changed, plus everything downstream of them in `dvc dag` (what repro reruns)."""
    status = run(["dvc", "status", "--json", DVC], repo).stdout
    changed = {name.split(":")[-1] for name in json.loads(status or "{}")}
    children = dvc_children(repo)
    todo, seen = list(changed), set(changed)
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in seen:
                seen.add(c)
                todo.append(c)
    return seen


def snakemake_would_run(repo) -> set[str]:
    r = run(["snakemake", "-n", "-p", "-c1", "--config", "suite=smoke"], repo)
    jobs = snakemake_jobs(r.stdout + r.stderr)
    names = set()
    for j in jobs:  # name jobs like DVC stages, from their command line
        m = re.search(r"pipeline (\w+) (?:--params params/(\w+)\.yaml|--dataset (\w+)|--suite (\w+))(?: --sampler (\w+))?", j["cmd"])
        names.add("-".join(x for x in (m.group(1), m.group(2) or m.group(3) or m.group(4), m.group(5)) if x))
    return names


def edit(repo, old: str, new: str) -> None:
    f = repo / "params/smoke.yaml"
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new, 1))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    t0 = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
        mp.setenv("OMP_NUM_THREADS", "1")  # the threads of a Snakemake job (a rule's): float sums depend on them
        with smoke_reference_lock(tmp_path_factory):  # test_slurm.py compares its SLURM run with this one's outputs
            run(["dvc", "repro", DVC], repo, timeout=900)
            publish_smoke_reference(repo, tmp_path_factory)
        print(f"\nsmoke suite through dvc repro: {time.perf_counter() - t0:.0f} s")
        # adopt DVC's outputs in Snakemake's metadata (records params without running anything)
        run(["snakemake", "-c1", "--touch", "--forceall", "--config", "suite=smoke"], repo)
    return repo


@pytest.mark.timeout(1200)
def test_smoke_outputs_are_real(repo):
    ev = json.loads((repo / "runs/smoke/smoke/eval/pc.json").read_text())
    fd = ev["classifier"]["fd"]
    assert fd["n"] == 2 and fd["mean"] > 0 and fd["std"] is not None
    assert ev["inception"]["status"].startswith("not computed")
    lik = json.loads((repo / "runs/smoke/smoke/likelihood.json").read_text())
    assert 0 < lik["bpd"]["mean"] < 12 and lik["nfe"] > 10 and lik["bpd"]["stderr"] > 0
    train = json.loads((repo / "runs/smoke/smoke/train_metrics.json").read_text())
    assert train["step"] == 300 and train["final_loss"] < 1.0
    report = (repo / "reports/smoke/README.md").read_text()
    assert f"{fd['mean']:.4g}" in report and "| not run" not in report
    assert (repo / "reports/smoke/index.html").stat().st_size > 1000
    with sqlite3.connect(repo / "mlflow.db") as db:
        stages = {r[0] for r in db.execute("select value from tags where key = 'pipeline.stage'")}
        commits = {r[0] for r in db.execute("select value from tags where key = 'git.commit'")}
    assert {"train", "sample/pc", "sample/ode", "evaluate/pc", "likelihood", "report"} <= stages
    assert all(len(c) == 40 for c in commits)


@pytest.mark.timeout(600)
def test_up_to_date_after_repro(repo):
    assert dvc_would_run(repo) == set()


@pytest.mark.timeout(300)
def test_fd_per_second_benchmark_reproduces_the_run(repo, tmp_path):
    """benchmarks/bench_fd_per_second.py, read against this run (--root): its `base:` variant trains and samples as the
    train and sample stages do, so its FDs are the evaluate stage's, seed for seed."""
    bench = [str(repo / "benchmarks/bench_fd_per_second.py"), "--root", str(repo), "--params", "params/smoke.yaml",
             "--variant", "base:", "--samples", "64", "--seeds", "2", "--out", str(tmp_path / "fd.json")]
    run([python(), *bench], repo, timeout=240)
    got = json.loads((tmp_path / "fd.json").read_text())["results"]["base"]
    ev = json.loads((repo / SMOKE / "eval/pc.json").read_text())["classifier"]["fd"]
    assert got["steps"] == 300 and got["fd"]["values"] == pytest.approx(ev["values"], rel=1e-6)


@pytest.mark.timeout(300)
def test_fd_checkpoints_benchmark_reproduces_the_run(repo, tmp_path):
    """benchmarks/bench_fd_checkpoints.py on this run's trained model with the default sampler draws the sample
    stage's samples: its FDs are the evaluate stage's, seed for seed (and the raw weights give other ones)."""
    bench = [str(repo / "benchmarks/bench_fd_checkpoints.py"), "--root", str(repo), "--params", "params/smoke.yaml",
             "--ckpt", f"{SMOKE}/train/model.pt", "--samples", "64", "--seeds", "2"]
    run([python(), *bench, "--out", str(tmp_path / "ema.json")], repo, timeout=240)
    run([python(), *bench, "--raw", "--out", str(tmp_path / "raw.json")], repo, timeout=240)
    (got,) = json.loads((tmp_path / "ema.json").read_text())
    (raw,) = json.loads((tmp_path / "raw.json").read_text())
    ev = json.loads((repo / SMOKE / "eval/pc.json").read_text())["classifier"]["fd"]
    assert got["sampler"] == "pc" and got["fd"]["values"] == pytest.approx(ev["values"], rel=1e-6)
    assert raw["fd"]["values"] != pytest.approx(ev["values"], rel=1e-3)


# --- MLflow as a reviewer reads it (pipeline/io/tracking.py, lineage.py, mlflow_view.py) ----------------------------
def mlflow_runs(repo):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("score-repro/smoke")
    return client, exp, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.mark.timeout(300)
def test_mlflow_one_run_per_result_and_parents_that_say_something(repo, tmp_path):
    """Every run with an FD is a result run with its NFE, its sampler's params and the filter tags; the suite's run
    holds the report; the parents have numbers and a description; no metric starts with a false step-0 point; the
    trained model loads from its run."""
    client, exp, runs = mlflow_runs(repo)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "mlflow.sharedViewState.results" in exp.tags
    kinds = {}
    for r in runs:
        kinds.setdefault(r.data.tags["pipeline.kind"], []).append(r)
    (suite,) = kinds["suite"]
    (parent,) = kinds["parent"]
    assert parent.data.tags["mlflow.parentRunId"] == suite.info.run_id
    train = next(r for r in kinds["stage"] if r.data.tags["pipeline.stage"] == "train")
    results = [r for r in runs if "fd" in r.data.metrics]
    assert sorted(r.info.run_name for r in results) == ["smoke · ode", "smoke · pc"]
    for r in results:
        ev = json.loads((repo / f"{SMOKE}/eval/{r.data.tags['pipeline.sampler']}.json").read_text())
        assert r.data.tags["pipeline.kind"] == "result" and ev["mlflow_run_id"] == r.info.run_id
        assert r.data.metrics["fd"] == pytest.approx(ev["classifier"]["fd"]["mean"])
        assert r.data.metrics["nfe"] == pytest.approx(ev["nfe"]["mean"]) and r.data.metrics["sample_seconds"] > 0
        assert {"fd_std", "kd", "is"} <= set(r.data.metrics)
        assert r.data.params["sampler.method"] == r.data.tags["pipeline.method"]
        for k in ("experiment", "sde", "model", "sampler", "method", "suite", "sample_run_id"):
            assert r.data.tags[f"pipeline.{k}"], k
        assert r.data.tags["pipeline.model_run_id"] == train.info.run_id
        assert "per_seed.json" in {a.path for a in client.list_artifacts(r.info.run_id)}
    assert results[0].data.params["sampler.method"] != results[1].data.params["sampler.method"]
    assert not any(k in r.data.params for r in runs for k in ("num_steps", "method", "snr"))  # one naming scheme
    for r in [suite, parent]:
        assert r.data.metrics and len(r.data.tags["mlflow.note.content"]) > 100, r.info.run_name
    pc = next(r for r in results if r.data.tags["pipeline.sampler"] == "pc")  # the default sampler
    assert parent.data.metrics["headline.fd"] == pytest.approx(pc.data.metrics["fd"])
    assert suite.data.metrics["smoke.fd"] == pytest.approx(pc.data.metrics["fd"]) and "smoke.bpd" in suite.data.metrics
    assert {"index.html", "README.md", "figures"} <= {a.path for a in client.list_artifacts(suite.info.run_id)}
    for r in runs:  # a chart's points are real steps: no step-0 point carrying the final value (system/*: samples)
        for key in (k for k in r.data.metrics if not k.startswith("system/")):
            hist = client.get_metric_history(r.info.run_id, key)
            if len(hist) > 1:
                steps = [m.step for m in hist]
                assert len(set(steps)) == len(steps), (r.info.run_name, key, steps)
                last = max(hist, key=lambda m: m.step)
                assert not any(m.step == 0 and m.value == last.value for m in hist), (r.info.run_name, key)
    metrics = json.loads((repo / f"{SMOKE}/train_metrics.json").read_text())
    ema = client.get_metric_history(train.info.run_id, "ema_eval_loss")
    assert max(ema, key=lambda m: m.step).value == pytest.approx(metrics["ema_eval_loss"]) and min(m.step for m in ema) > 0
    assert any(k.startswith("system/") for k in train.data.metrics)  # log_system_metrics
    assert train.data.tags["hardware.cpu"] and train.data.tags["hardware.torch"]
    import mlflow

    from pipeline.io.checkpoint import load_network
    path = mlflow.artifacts.download_artifacts(train.data.tags["pipeline.model_uri"], dst_path=str(tmp_path),
                                               tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    assert sum(p.numel() for p in load_network(path).parameters()) > 0


@pytest.mark.timeout(300)
def test_mlflow_lineage_tags_are_what_dvc_lock_records(repo):
    """Each stage run's output digests, taken after its outputs were written, equal dvc.lock's after the repro; the
    params file's md5 is there too, and the committed copy is clean (stages' own outputs and dvc.lock aside)."""
    import hashlib

    import yaml
    lock = yaml.safe_load((repo / "pipelines/smoke/dvc.lock").read_text())["stages"]
    locked = {o["path"]: o["md5"] for st in lock.values() for o in st.get("outs", [])}
    _, _, runs = mlflow_runs(repo)
    stage_runs = [r for r in runs if r.data.tags["pipeline.kind"] in ("stage", "result")]
    assert len(stage_runs) == 8  # train, 2 x sample, 2 x evaluate, likelihood, controllable, report
    params_md5 = hashlib.md5((repo / "params/smoke.yaml").read_bytes()).hexdigest()
    for r in stage_runs:
        outs = {k.removeprefix("dvc.out."): v for k, v in r.data.tags.items() if k.startswith("dvc.out.")}
        assert outs and all(locked[path] == md5 for path, md5 in outs.items()), (r.info.run_name, outs)
        assert r.data.tags["git.dirty"] == "false", r.data.tags.get("git.dirty.files")
        if r.data.tags["pipeline.stage"] != "report":
            assert r.data.tags["dvc.params.params/smoke.yaml"] == params_md5


@pytest.mark.timeout(300)
def test_mlflow_results_view_in_chromium(repo, monkeypatch):
    """The URL `make ui` prints opens the "Model training" runs table with the result rows, FD and NFE columns, in
    headless Chromium over a real `mlflow server`; `make mlflow-png`'s command writes the screenshot."""
    from pipeline.report import browser, mlflow_page

    if browser.find() is None:
        pytest.skip("Chromium not found (apt-get install chromium)")
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    r = run(["python", "-m", "pipeline", "mlflow_view", "--suite", "smoke"], repo)  # `make ui`'s line
    assert re.fullmatch(r"http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?workflowType=machine_learning&"
                        r"viewStateShareKey=results\n", r.stdout), r.stdout
    # what `make mlflow-png` runs (`mlflow_view --screenshot`): one server, the screenshot and the page's text
    url, text = mlflow_page.results_view(uri, "smoke", repo / "reports/smoke/mlflow.png")
    assert (repo / "reports/smoke/mlflow.png").stat().st_size > 10_000
    assert "2 matching runs" in text and "smoke · pc" in text and "smoke · ode" in text, text[:3000]
    for column in ("fd", "nfe", "sampler.method"):
        assert f" {column} " in text, column


@pytest.mark.timeout(300)
def test_dvc_metrics_plots_and_experiments(repo, tmp_path):
    """DVC's own views of the repro: metrics, a diff against a commit, the loss plot, the experiments table."""
    fd = json.loads((repo / f"{SMOKE}/eval/pc.json").read_text())["classifier"]["fd"]["mean"]
    bpd = json.loads((repo / f"{SMOKE}/likelihood.json").read_text())["bpd"]["mean"]
    final_loss = json.loads((repo / f"{SMOKE}/train_metrics.json").read_text())["final_loss"]
    # commit the repro as a user would: dvc.lock goes to git, the metrics files to DVC's cache (runs/ is not in git)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "smoke repro"], repo)

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    (ws,) = shown.values()  # the workspace only
    assert ws["data"][f"{SMOKE}/eval/pc.json"]["data"]["classifier"]["fd"]["mean"] == pytest.approx(fd)
    assert ws["data"][f"{SMOKE}/likelihood.json"]["data"]["bpd"]["mean"] == pytest.approx(bpd)
    assert ws["data"][f"{SMOKE}/train_metrics.json"]["data"]["final_loss"] == pytest.approx(final_loss)
    # the commit before the repro had no metrics; HEAD's come from the cache
    diff = json.loads(run(["dvc", "metrics", "diff", "--json", "HEAD~1", "HEAD"], repo).stdout)
    assert diff[f"{SMOKE}/eval/pc.json"]["classifier.fd.mean"] == {"old": None, "new": pytest.approx(fd)}
    assert diff[f"{SMOKE}/likelihood.json"]["bpd.mean"] == {"old": None, "new": pytest.approx(bpd)}

    plots = json.loads(run(["dvc", "plots", "show", "--json", f"{SMOKE}/loss.csv"], repo).stdout)["data"]
    (loss_plot,) = plots[f"{SMOKE}/loss.csv"]
    points = loss_plot["content"]["data"]["values"]
    rows = (repo / f"{SMOKE}/loss.csv").read_text().split()[1:]
    assert len(points) == len(rows) > 0 and loss_plot["content"]["encoding"]["x"]["field"] == "step"
    assert float(points[-1]["loss"]) == pytest.approx(float(rows[-1].split(",")[1]))
    run(["dvc", "plots", "show", "--out", str(tmp_path / "plots")], repo)
    html = (tmp_path / "plots/index.html").read_text()
    assert f"{SMOKE}/loss.csv" in html and "vega" in html

    table = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    head = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    rows_by_rev = {r["rev"]: r for r in table}
    assert {"workspace", head} <= set(rows_by_rev)
    for rev in ("workspace", head):  # HEAD's metrics are read through its dvc.lock from the cache
        metrics = rows_by_rev[rev]["data"]["metrics"]
        assert metrics[f"{SMOKE}/eval/pc.json"]["data"]["classifier"]["fd"]["mean"] == pytest.approx(fd)


@pytest.mark.timeout(300)
def test_snakemake_report(repo, tmp_path):
    """`snakemake --report` over the metadata that `--touch` recorded: grids, metrics, loss curve, report pages."""
    out = tmp_path / "snakemake-report.html"
    r = run(["snakemake", "--report", str(out), "--config", "suite=smoke"], repo)
    html = out.read_text()
    assert r.returncode == 0 and len(html) > 10_000
    for category in ("Samples", "Metrics", "Training", "Report"):
        assert category in html, category
    for name in ("grid.png", "pc.json", "ode.json", "likelihood.json", "loss.csv", "index.html"):
        assert name in html, name


@pytest.mark.timeout(600)
def test_sampler_change_reruns_only_that_sampler(repo):
    edit(repo, "rtol: 0.001", "rtol: 0.002")
    want = {"sample-smoke-ode", "evaluate-smoke-ode", "report-smoke"}
    assert dvc_would_run(repo) == want
    assert snakemake_would_run(repo) == want
    edit(repo, "rtol: 0.002", "rtol: 0.001")


@pytest.mark.timeout(600)
def test_model_change_reruns_train_and_downstream(repo):
    edit(repo, "hidden: 256", "hidden: 128")
    assert dvc_would_run(repo) == ALL_DOWNSTREAM_OF_TRAIN
    assert snakemake_would_run(repo) == ALL_DOWNSTREAM_OF_TRAIN
    edit(repo, "hidden: 128", "hidden: 256")


def edit_code(repo, rel: str, line: str) -> str:
    """Append `line` to a source file of the copy (a code change DVC must notice); returns the old text."""
    f = repo / rel
    old = f.read_text()
    f.write_text(old + line)
    return old


@pytest.mark.timeout(600)
def test_sampler_code_change_reruns_sampling_not_training(repo):
    """pipeline/samplers/correctors.py is imported by every sampler (and the controllable stage), never by train or
    likelihood: DVC and Snakemake rerun exactly the stages that run it, and what consumes their outputs."""
    old = edit_code(repo, "pipeline/samplers/correctors.py", "# a code change\n")
    want = {"sample-smoke-pc", "sample-smoke-ode", "evaluate-smoke-pc", "evaluate-smoke-ode", "controllable-smoke",
            "report-smoke"}
    try:
        assert dvc_would_run(repo) == want
        assert snakemake_would_run(repo) == want  # Snakemake: the edited input is newer than those outputs
    finally:
        (repo / "pipeline/samplers/correctors.py").write_text(old)
    assert dvc_would_run(repo) == set()


@pytest.mark.timeout(600)
def test_sde_code_change_reruns_train_onwards(repo):
    old = edit_code(repo, "pipeline/core/sde.py", "# a code change\n")
    try:
        assert dvc_would_run(repo) == ALL_DOWNSTREAM_OF_TRAIN
    finally:
        (repo / "pipeline/core/sde.py").write_text(old)


# --- make repro's path: DVC and the provenance stamps decide what is stale, Snakemake executes, commit checks --------
def stale(repo, *extra) -> list[str]:
    return run(["python", "-m", "pipeline", "stale", "--suite", "smoke", *extra], repo).stdout.split()


def snakemake_forced(repo, targets: list[str], check=True):
    return run(["snakemake", "-c2", "--config", "suite=smoke", *(["--forcerun", *targets] if targets else [])], repo,
               timeout=900, check=check)


@pytest.mark.timeout(900)
def test_code_edits_rerun_through_stale_snakemake_and_a_commit_that_refuses_what_moved(repo):
    """make repro's round twice over one copy (each round of the smoke suite is about a minute, so one round checks
    both edits).
    1. A line appended to pipeline/metrics/points.py (a module of a package folder): DVC names exactly the evaluate
       stages, and Snakemake sees the edited file as newer than their outputs.
    2. An edit to train's code while train runs: the stage fails naming what moved, the commit step refuses it by
       name (exit 1) and leaves dvc.lock as it was; the next round (`pipeline stale` gives Snakemake the outputs to
       remake) sets the snapshots made by the old code aside, trains from step 0, remakes every stage below train,
       and commits all 11 stages: dvc status is clean."""
    edit_code(repo, "pipeline/metrics/points.py", "# a code change\n")
    assert set(stale(repo, "--names")) == {"evaluate-smoke-pc", "evaluate-smoke-ode"}
    assert {"evaluate-smoke-pc", "evaluate-smoke-ode"} <= snakemake_would_run(repo)  # a file dep: its time is seen
    lock = repo / "pipelines/smoke/dvc.lock"
    before = lock.read_text()
    shutil.rmtree(repo / SMOKE / "snapshots")  # so that train computes its 300 steps again
    proc = subprocess.Popen(["snakemake", "-c1", "--config", "suite=smoke", "--forcerun", f"{SMOKE}/train"], cwd=repo,
                            env=venv_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = repo / SMOKE / "snapshots/step_000000100"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline:
        time.sleep(0.05)
    edit_code(repo, "pipeline/core/sde.py", "# an edit while train runs\n")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0 and "train-smoke: its inputs changed while it ran (code)" in out, out[-3000:]
    r = run(["python", "-m", "pipeline", "commit", "--suite", "smoke"], repo, check=False)
    assert r.returncode == 1 and "error: train-smoke: not committed" in r.stderr
    assert "error: evaluate-smoke-pc: not committed" in r.stderr  # the first edit: its stamp is of the old code
    assert "committed 3 of 11 stages of pipelines/smoke/dvc.yaml to dvc.lock (0 changed, 3 already" in r.stdout
    assert lock.read_text() == before
    run(["python", "-m", "pipeline", "dag"], repo)
    r = snakemake_forced(repo, stale(repo))
    assert "training starts at step 0" in r.stdout + r.stderr and "resuming" not in r.stdout + r.stderr
    assert len(list((repo / f"{SMOKE}/snapshots.superseded").iterdir())) == 1
    r = run(["python", "-m", "pipeline", "commit", "--suite", "smoke"], repo)
    assert "committed 11 of 11 stages of pipelines/smoke/dvc.yaml to dvc.lock (8 changed, 3 already" in r.stdout
    assert dvc_would_run(repo) == set() and stale(repo) == []

