"""A slice of the cifar10 dress rehearsal end to end (`python -m pipeline rehearse`), in a temporary copy of the
repository: two presets: NCSN's RefineNet with ALD and the DDPM U-Net with PC, the probability-flow ODE, bits/dim and
controllable generation, on the synthetic stand-in. `.ci/run` rehearses the whole suite (`make rehearse
SUITE=cifar10`), NCSN++ included; a third preset here cost about a minute of `make test`."""
import json

import pytest
import yaml
from e2e_util import copy_repo, python, run

from pipeline.stages.rehearse import unfilled_cells

SLICE = ("ncsn", "ddpm_cont_vp")


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("rehearse") / "repo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_CHROMIUM", "off")  # the browser check of the page: tests/test_report_page.py
        # MLflow tracking (2.5 s of each of the 14 stages' start): tests/test_e2e.py checks the lineage of a run against
        # its dvc.lock, and `make rehearse` in .ci/run rehearses the whole suite with it; here the Lineage table's
        # cells must still say why they hold no run ("tracking skipped")
        mp.setenv("PIPELINE_TRACKING", "off")
        r = run([python(), "-m", "pipeline", "rehearse", "--suite", "cifar10", "--synthetic", "--cores", "2",
                 *(a for e in SLICE for a in ("--only", e))], repo, timeout=900, check=False)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
    return repo, r


def test_every_report_cell_is_filled(rehearsed):
    repo, r = rehearsed
    readme = (repo / "reports/rehearsal-cifar10/README.md").read_text()
    assert unfilled_cells(readme) == []
    for section in ("Sample quality (Score SDE Table 3 layout)", "Likelihood and probability-flow ODE",
                    "NCSN (Song & Ermon 2019, Table 1 layout)", "All samplers", "Controllable generation",
                    "Lineage"):
        assert f"## {section}" in readme, section
    for exp in SLICE:  # a number where the suite would say "not run": the default sampler's FD of each experiment
        row = next(line for line in readme.splitlines() if line.startswith(f"| {exp} | 2 steps × batch 8 |"))
        assert "FD " in row and "not run" not in row
    lineage = readme.split("## Lineage", 1)[1].split("\n## ", 1)[0]
    assert lineage.count("| tracking skipped |") > 2 * len(SLICE)
    result = json.loads((repo / "pipelines/rehearsal-cifar10/result.json").read_text())
    dag = yaml.safe_load((repo / "pipelines/rehearsal-cifar10/dvc.yaml").read_text())["stages"]
    assert len(dag) > 4 * len(SLICE) and result["stages"] == len(dag)
    outs = [o if isinstance(o, str) else next(iter(o)) for st in dag.values() for o in st.get("outs", [])]
    assert outs and [o for o in outs if not (repo / o).exists()] == []  # every stage of the rehearsal's DAG ran
    assert result["unfilled_cells"] == [] and "passed" in r.stdout


def test_report_and_outputs_say_rehearsal_and_synthetic(rehearsed):
    repo, _ = rehearsed
    readme = (repo / "reports/rehearsal-cifar10/README.md").read_text()
    banners = [line for line in readme.splitlines()[:6] if line.startswith("> **")]
    assert banners[0].startswith("> **DRESS REHEARSAL of suite cifar10, not a result")
    assert banners[1].startswith("> **SYNTHETIC data generated offline") and "stand-in for CIFAR-10" in banners[1]
    assert "<p class='banner'>DRESS REHEARSAL" in (repo / "reports/rehearsal-cifar10/index.html").read_text()
    manifest = json.loads((repo / "data/prepared/cifar10_synthetic/manifest.json").read_text())
    assert manifest["synthetic"].startswith("SYNTHETIC") and manifest["splits"]["train"]["shape"] == [2000, 3, 32, 32]
    assert (repo / "data/raw/cifar10_synthetic/SYNTHETIC.json").exists()
    ev = json.loads((repo / "runs/rehearsal-cifar10/ddpm_cont_vp/eval/ode.json").read_text())
    assert ev["provenance"]["stage"] == "evaluate-ddpm_cont_vp-ode" and ev["classifier"]["fd"]["mean"] > 0
    assert json.loads((repo / "runs/rehearsal-cifar10/ddpm_cont_vp/likelihood.json").read_text())["provenance"]


def test_never_mixes_with_the_suite(rehearsed):
    """The suite's own outputs and the real dataset's folders stay untouched; the rehearsal's params live beside its
    dvc.yaml, out of params/."""
    repo, _ = rehearsed
    assert not (repo / "runs/cifar10").exists() and not (repo / "data/raw/cifar10").exists()
    assert not list((repo / "params").rglob("*rehearsal*"))
    assert sorted(p.name for p in (repo / "pipelines/rehearsal-cifar10/params").iterdir()) == [f"{e}.yaml" for e in
                                                                                               sorted(SLICE)]
    assert (repo / "pipelines/rehearsal-cifar10/dvc.yaml").exists()
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # every rehearsal output is git-ignored
