"""Paper-style reports from synthetic metrics files: cell contents (ours ± std, paper value, difference, "not run"),
the layouts of Score SDE Tables 1-3 and NCSN Table 1 with the papers' numbers in their own columns, a missing metric
said once per table, the summary (what ran, hardware, time, headline, what is not comparable), the training-data
grid beside the samples, the loss and FD/FID-against-NFE figures, LaTeX that is well formed, and a self-contained
index.html measured in headless Chromium at two widths (where it is installed) with its preview.png."""
import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT
from PIL import Image

from pipeline import atomic, browser, figures, hardware, published, report, report_summary
from pipeline import report_tables as rt
from pipeline.cli import main
from pipeline.config import load_params
from pipeline.stages.report import build, real_grid
from pipeline.stages.train import loss_csv

CIFAR = ["ddpm", "ddpm_ve", "ncsnpp_cont", "ddpmpp_cont_vp", "ncsn"]
ALL_CELLS = set(published.TABLE1)


def _png(path: Path, color=(200, 30, 30), size=(20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    img.putpixel((0, 0), (0, 0, 0))
    img.save(path)


def _stat(mean, std):
    return {"mean": mean, "std": std, "n": 5, "values": []}


def _eval(root, suite, exp, sampler, nfe, fid=None, is_=None, fd=None, cis=None, seconds=None):
    inc = {"status": "computed", "fid": _stat(*fid), **({"is": _stat(*is_)} if is_ else {})} if fid else \
        {"status": "not computed: weights missing"}
    ev = {"nfe": _stat(nfe, 0.0), "inception": inc, "classifier": {"fd": _stat(*fd), **({"is": _stat(*cis)} if cis else {}),
                                                                    **({"kd": _stat(0.5, 0.01)} if cis else {})}
          if fd else {"status": "not computed: this dataset has no classifier evaluator"}, "num_samples": 200,
          "num_seeds": 5, **({"seconds": seconds} if seconds is not None else {})}
    f = root / "runs" / suite / exp / "eval" / f"{sampler}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(ev))


@pytest.fixture
def suite_root(tmp_path, monkeypatch):
    """The cifar10 presets of CIFAR (copied) plus a Fashion-MNIST suite `fm`; synthetic results for some stages."""
    monkeypatch.setenv("PIPELINE_TRACKING", "off")
    root = tmp_path / "repo"
    (root / "params/cifar10").mkdir(parents=True)
    for name in CIFAR:
        shutil.copy(ROOT / f"params/cifar10/{name}.yaml", root / f"params/cifar10/{name}.yaml")
    fm = yaml.safe_load((ROOT / "params/fmnist/ncsnpp_cont.yaml").read_text())
    fm["suite"] = "fm"
    (root / "params/fm").mkdir()
    (root / "params/fm/ncsnpp_cont.yaml").write_text(yaml.safe_dump(fm))
    # Table 1 cells: VP ancestral P1000 (ddpm's default sampler `pc`) and VE probability-flow P1000
    _eval(root, "cifar10", "ddpm", "pc", 1000, fid=(3.30, 0.02), is_=(9.40, 0.10))
    _eval(root, "cifar10", "ddpm_ve", "flow_p1000", 1000, fid=(15.00, 0.10))
    # Table 3: ncsnpp_cont evaluated; ddpmpp_cont_vp evaluated without Inception weights
    _eval(root, "cifar10", "ncsnpp_cont", "pc", 2000, fid=(2.50, 0.03), is_=(9.70, 0.05))
    _eval(root, "cifar10", "ddpmpp_cont_vp", "pc", 1000)
    # Table 2: ddpmpp_cont_vp bits/dim and its ODE sampler
    (root / "runs/cifar10/ddpmpp_cont_vp/likelihood.json").write_text(
        json.dumps({"bpd": {"mean": 3.2, "stderr": 0.01}, "nfe": 150.0}))
    _eval(root, "cifar10", "ddpmpp_cont_vp", "ode", 140, fid=(4.00, 0.05))
    # figures: sample grids, controllable examples, a loss curve
    _png(root / "runs/cifar10/ddpm/samples/pc/grid.png")
    _png(root / "runs/cifar10/ncsnpp_cont/samples/pc/grid.png", (30, 200, 30))
    ctrl = root / "runs/cifar10/ncsnpp_cont/controllable"
    _png(ctrl / "inpainting.png", (30, 30, 200))
    _png(ctrl / "colorization.png", (200, 200, 30))
    done = {"status": "done", "num_images": 8, "num_steps": 1000, "predictor": "reverse_diffusion",
            "corrector": "langevin", "nfe": 2000, "seconds": 12.0}
    (ctrl / "info.json").write_text(json.dumps({"tasks": {"inpainting": {**done, "mse_unknown": 0.05},
                                                          "colorization": {**done, "mse_color": 0.02}}}))
    (root / "runs/cifar10/ddpm/loss.csv").write_text("step,loss\n0,1.0\n50,0.5\n100,0.25\n")
    return root


def _tables(root, suite="cifar10"):
    return {t.key: t for t in rt.tables(report.collect_experiments(root, suite))}


def _row(table, exp, col=1):
    return next(r for r in table.rows if r[col] == exp)


def test_numbers_and_cells():
    assert report.number(3.3, 0.02) == "3.30 ± 0.02"
    assert report.number(3.28125, 0.0041) == "3.281 ± 0.004"  # more decimals when the error bar needs them
    assert report.number(2.38) == "2.38"
    assert report.cell({"mean": 3.30, "std": 0.02}, (3.24, 0.02), True) == "3.30 ± 0.02; paper 3.24 ± 0.02; Δ +0.06"
    assert report.cell({"mean": 3.2, "stderr": 0.01}, (3.16, None), True, key="stderr") == "3.20 ± 0.01; paper 3.16; Δ +0.04"
    assert report.cell(None, (3.24, 0.02), True) == "not run; paper 3.24 ± 0.02"
    assert report.cell("not computed: weights missing", (3.17, None), True) == "not computed: weights missing; paper 3.17"
    assert report.cell({"mean": 5.0, "std": 0.1}, (2.38, None), False) == "5.00 ± 0.10; paper 2.38 (CIFAR-10, not comparable)"
    assert report.cell({"mean": 5.0, "std": None}, None, True) == "5.00; paper —"


def test_table1_layout(suite_root):
    t = _tables(suite_root)["table1"]
    cols = ["P1000", "P2000", "C2000", "PC1000"]
    assert t.columns == ["predictor"] + cols * 2
    assert t.md_columns() == ["predictor"] + [f"VE {c}" for c in cols] + [f"VP {c}" for c in cols]
    assert t.groups == [("", "", 1), ("VE", "Variance Exploding SDE (SMLD)", 4), ("VP", "Variance Preserving SDE (DDPM)", 4)]
    assert [r[0] for r in t.rows] == ["ancestral sampling", "reverse diffusion", "probability flow"]
    anc, rev, flow = t.rows
    assert anc[5] == "pc: 3.30 ± 0.02; paper 3.24 ± 0.02; Δ +0.06"  # VP ancestral P1000 = ddpm's default sampler
    assert flow[1] == "flow_p1000: 15.00 ± 0.10; paper 15.41 ± 0.15; Δ -0.41"
    assert flow[2] == "flow_p2000: not run; paper 10.54 ± 0.08"
    assert rev[4] == "pc: not run; paper 3.60 ± 0.02"  # VE reverse diffusion PC1000 = ddpm_ve's default sampler
    assert anc[3] == "c2000: not run; paper 20.43 ± 0.07" and anc[7] == "c2000: not run; paper 19.06 ± 0.06"
    assert rev[3] == flow[3] == rev[7] == flow[7] == "↑ (corrector only: same cell)"
    assert all(len(r) == 9 for r in t.rows)


def test_table1_without_its_experiments_says_so(suite_root):
    (suite_root / "params/cifar10/ddpm_ve.yaml").unlink()
    t = _tables(suite_root)["table1"]
    assert t.rows[0][1] == "not run; paper 4.98 ± 0.06 (experiment ddpm_ve not in this suite)"
    assert t.rows[0][5] == "pc: 3.30 ± 0.02; paper 3.24 ± 0.02; Δ +0.06"
    for name in ("ddpm", "ncsn"):
        (suite_root / f"params/cifar10/{name}.yaml").unlink()
    assert {"table1", "ncsn"}.isdisjoint(_tables(suite_root))  # no Table 1 / NCSN experiments: no such table


@pytest.mark.parametrize("sde,exp", sorted(published.TABLE1_EXPERIMENTS.items()))
def test_table1_presets_cover_every_cell_with_table5_snr(sde, exp):
    _, p = load_params(ROOT / f"params/cifar10/{exp}.yaml")
    cells = {}
    for name, s in p.sampler_settings().items():
        where = rt.table1_cell(s, p.model.num_scales)
        if where:
            assert where not in cells, f"{name} and {cells[where][0]} are both {where}"
            cells[where] = (name, s)
    assert set(cells) == ALL_CELLS
    for (pred, col), (name, s) in cells.items():
        assert (s.num_steps or 1000) == (2000 if col in ("P2000", "C2000") else 1000), name
        assert s.probability_flow == (pred == "probability_flow"), name
        if (pred, col) in published.TABLE5_SNR:
            assert s.corrector == "langevin" and s.snr == published.TABLE5_SNR[(pred, col)][sde], name
        else:
            assert s.corrector == "none", name
    assert p.training.continuous is False and p.training.sde == {"VE": "vesde", "VP": "vpsde"}[sde]
    assert p.model.name == "ddpm" and p.eval.num_seeds == 5  # DDPM architecture; Table 1: 5 runs


def test_every_published_row_has_a_cifar10_preset_with_the_paper_protocol():
    names = set(published.TABLE3) | set(published.TABLE2) | set(published.NCSN_TABLE1) | set(published.TABLE1_EXPERIMENTS.values())
    for name in sorted(names):
        _, p = load_params(ROOT / f"params/cifar10/{name}.yaml")
        assert (p.suite, p.data.dataset, p.data.num_channels, p.data.image_size) == ("cifar10", "cifar10", 3, 32), name
        assert (p.eval.num_samples, p.eval.feature_net, p.eval.fid_mode) == (50000, "inception", "legacy_tensorflow"), name
        if name in published.TABLE2:
            odes = [s for s in p.sampler_settings().values() if s.method == "ode"]
            assert p.eval.enable_bpd and p.eval.bpd_num_repeats == 5, name
            assert [(s.rtol, s.atol, s.ode_method) for s in odes] == [(1e-5, 1e-5, "RK45")], name
        if name not in ("ncsn", "ncsnv2"):
            assert p.eval.controllable == ["inpainting", "colorization"], name


def test_table3_and_ncsn_tables(suite_root):
    tabs = _tables(suite_root)
    t3 = tabs["table3"]
    assert t3.columns == ["model (paper)", "experiment", "sampler", "NFE"] + ["FID ↓", "IS ↑"] * 3
    assert t3.groups == [("", "", 4), ("ours", "ours: CIFAR-10, Inception-v3", 2),
                         ("paper (CIFAR-10)", "paper: CIFAR-10, Inception-v3", 2), ("Δ", "Δ ours − paper", 2)]
    assert t3.md_columns()[4:] == ["ours FID ↓", "ours IS ↑", "paper (CIFAR-10) FID ↓", "paper (CIFAR-10) IS ↑",
                                   "Δ FID ↓", "Δ IS ↑"]
    assert [r[1] for r in t3.rows] == ["ncsn", "ddpm", "ddpmpp_cont_vp", "ncsnpp_cont", "ddpm_ve"]  # the paper's order
    assert _row(t3, "ncsnpp_cont")[3:] == ["2000", "2.50 ± 0.03", "9.70 ± 0.05", "2.38", "9.83", "+0.12", "-0.13"]
    assert _row(t3, "ddpm")[4:] == ["3.30 ± 0.02", "9.40 ± 0.10", "3.17", "9.46 ± 0.11", "+0.13", "-0.06"]
    # one row without Inception weights among rows with them: the reason stays in its cells
    assert _row(t3, "ddpmpp_cont_vp")[4:] == ["not computed: weights missing"] * 2 + ["2.55", "9.58", "—", "—"]
    assert _row(t3, "ncsn")[3:] == ["not run", "not run", "not run", "25.32", "8.87 ± 0.12", "—", "—"]
    assert _row(t3, "ddpm_ve")[0] == "—" and _row(t3, "ddpm_ve")[6:8] == ["—", "—"]
    assert t3.above == []
    nc = tabs["ncsn"]
    assert nc.columns[4:] == ["Inception score ↑", "FID ↓", "Inception score ↑", "FID ↓"]  # the NCSN paper's order
    assert nc.rows == [["NCSN (Song & Ermon 2019)", "ncsn", "ALD (100 steps/level, reference step)", "not run",
                        "not run", "not run", "8.87 ± 0.12", "25.32"]]


def test_table2_nll_and_ode_fid_with_nfe(suite_root):
    t = _tables(suite_root)["table2"]
    assert t.columns == ["model (paper)", "experiment", "NLL, bits/dim ↓", "NFE (NLL)", "FID (ODE) ↓", "NFE (ODE)",
                         "NLL, bits/dim ↓", "FID (ODE) ↓", "NLL ↓", "FID (ODE) ↓"]
    assert [g[1] for g in t.groups] == ["", "ours: CIFAR-10", "paper: CIFAR-10", "Δ ours − paper"]
    assert [r[1] for r in t.rows] == ["ddpm", "ddpmpp_cont_vp"]
    assert _row(t, "ddpmpp_cont_vp") == ["DDPM++ cont. (VP)", "ddpmpp_cont_vp", "3.20 ± 0.01", "150", "4.00 ± 0.05",
                                         "140", "3.16", "3.93", "+0.04", "+0.07"]
    assert _row(t, "ddpm") == ["DDPM", "ddpm", "not run", "not run", "not run", "not run", "3.28", "3.37", "—", "—"]


def test_a_metric_of_a_family_no_row_has_is_left_out(suite_root):
    _eval(suite_root, "fm", "ncsnpp_cont", "pc", 200, fd=(46.58, 4.85))  # classifier FD only (2-D points: no IS)
    tabs = _tables(suite_root, "fm")
    assert tabs["table3"].columns[4:] == ["FD ↓", "FID ↓", "IS ↑"] and tabs["table3"].rows[0][4:] == ["46.58 ± 4.85",
                                                                                                     "2.38", "9.83"]
    s = tabs["samplers"]
    assert s.columns[4:] == ["FD (classifier) ↓", "sampling time"]
    assert [a.split(" left out")[0] for a in s.above] == ["KD (dataset-classifier features)",
                                                         "IS (dataset-classifier features)", "FID / KID / IS (Inception-v3)"]


def test_other_dataset_is_not_compared(suite_root):
    _eval(suite_root, "fm", "ncsnpp_cont", "pc", 200, fd=(46.58, 4.85), cis=(4.36, 0.02))
    t = _tables(suite_root, "fm")["table3"]
    # offline suite: the dataset-classifier columns, the paper's values in their own block, labelled once
    assert t.groups == [("", "", 4), ("ours", "ours: Fashion-MNIST, dataset classifier", 2),
                        ("paper (CIFAR-10)", "paper: CIFAR-10, Inception-v3", 2)]
    assert t.columns[4:] == ["FD ↓", "IS ↑", "FID ↓", "IS ↑"]
    assert t.rows == [["NCSN++ cont. (VE)", "ncsnpp_cont", "PC: reverse_diffusion + langevin, snr 0.16, 100 steps",
                       "200", "46.58 ± 4.85", "4.36 ± 0.02", "2.38", "9.83"]]
    assert "no difference is computed" in t.note and "Fashion-MNIST" in t.note


def test_no_cell_is_blank_or_zero(suite_root):
    shutil.rmtree(suite_root / "runs")  # nothing run at all
    tabs = _tables(suite_root)
    assert list(tabs) == ["table3", "table2", "table1", "ncsn", "samplers", "controllable", "lineage"]
    for t in tabs.values():
        for row in t.rows:
            assert len(row) == len(t.columns), t.key
            for c in row:
                assert c.strip() and not re.fullmatch(r"[0.]+", c), (t.key, row)
    assert all(r[3].startswith("not run") and r[4].startswith("not run") for r in tabs["table3"].rows)
    assert all(c == "not run" for r in tabs["samplers"].rows for c in r[3:])
    assert tabs["controllable"].rows[0][2:] == ["not run", "not run"]


def test_lineage_table_names_the_run_of_every_number(suite_root):
    f = suite_root / "runs/cifar10/ncsnpp_cont/eval/pc.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "mlflow_run_id": "abc123"}))
    (suite_root / "runs/cifar10/ncsnpp_cont/train_metrics.json").write_text(json.dumps({"mlflow_run_id": None}))
    rows = {(r[0], r[1]): r[3] for r in _tables(suite_root)["lineage"].rows}
    assert rows[("ncsnpp_cont", "evaluate (pc)")] == "abc123"
    assert rows[("ncsnpp_cont", "train")] == "tracking skipped"  # ran, MLflow off or unreachable
    assert rows[("ddpm", "train")] == "not run"
    assert rows[("ddpmpp_cont_vp", "likelihood")] == "tracking skipped"  # the fixture's likelihood.json has no id
    assert ("ncsn", "likelihood") not in rows  # bits/dim not requested


def test_controllable_table(suite_root):
    t = _tables(suite_root)["controllable"]
    assert _row(t, "ncsnpp_cont", 0)[2:] == [
        "8 images, reverse_diffusion + langevin, 1000 steps, NFE 2000, 12.0 s; MSE hidden half 0.0500",
        "8 images, reverse_diffusion + langevin, 1000 steps, NFE 2000, 12.0 s; MSE colour 0.0200"]
    assert _row(t, "ddpm", 0)[2:] == ["not run", "not run"]
    assert [r[0] for r in t.rows] == ["ddpm", "ddpm_ve", "ddpmpp_cont_vp", "ncsnpp_cont"]  # suite order; ncsn has no key


def test_quality_against_nfe_points(suite_root):
    exps = report.collect_experiments(suite_root, "cifar10")
    metric, pts = rt.nfe_points(exps)
    assert metric == "FID (Inception-v3)"  # some results have Inception FID: only those are plotted
    got = sorted((p["experiment"], p["sampler"], p["nfe"], p["value"], p["std"]) for p in pts)
    assert got == [("ddpm", "pc", 1000, 3.30, 0.02), ("ddpm_ve", "flow_p1000", 1000, 15.00, 0.10),
                   ("ddpmpp_cont_vp", "ode", 140, 4.00, 0.05), ("ncsnpp_cont", "pc", 2000, 2.50, 0.03)]
    _eval(suite_root, "fm", "ncsnpp_cont", "pc", 200, fd=(46.58, 4.85))
    metric, pts = rt.nfe_points(report.collect_experiments(suite_root, "fm"))
    assert metric == "FD (dataset classifier)" and [(p["nfe"], p["value"]) for p in pts] == [(200, 46.58)]


def _tex_ok(tex: str) -> None:
    unescaped = re.sub(r"\\[{}]", "", tex)
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == tex.count(r"\begin{table}") > 0
    for block in re.findall(r"\\begin\{tabular\}\{(l+)\}(.*?)\\end\{tabular\}", tex, re.S):
        ncols = len(block[0])
        for line in block[1].splitlines():
            if line.endswith(r"\\") and r"\multicolumn" not in line:
                assert len(re.findall(r"(?<!\\)&", line)) == ncols - 1, line


def test_report_stage_writes_tables_figures_and_one_html(suite_root, monkeypatch):
    monkeypatch.setenv(browser.ENV_VAR, "off")  # the browser check has its own tests
    assert main(["report", "--suite", "cifar10", "--root", str(suite_root)]) == 0
    out = suite_root / "reports/cifar10"
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs == ["colorization-ncsnpp_cont.png", "inpainting-ncsnpp_cont.png", "loss_curves.png",
                    "quality_vs_nfe.png", "samples-ddpm-pc.png", "samples-ncsnpp_cont-pc.png"]
    plot = Image.open(out / "figures/quality_vs_nfe.png")
    assert plot.size == (700, 450) and len(np.unique(np.asarray(plot.convert("RGB")).reshape(-1, 3), axis=0)) > 20  # drawn, not blank
    md = (out / "README.md").read_text()
    for title in ("Sample quality (Score SDE Table 3 layout)", "Score SDE Table 2 layout", "Score SDE Table 1 layout",
                  "NCSN (Song & Ermon 2019, Table 1 layout)", "Controllable generation", "## Summary",
                  "Not comparable with the papers", "## Samples beside the training data"):
        assert title in md, title
    assert "| VE P1000 | VE P2000 | VE C2000 | VE PC1000 | VP P1000 |" in md
    assert all(f"(figures/{f})" in md for f in figs)
    assert "No training-data grid for CIFAR-10: data/prepared/cifar10 is missing" in md  # said, not silently absent
    assert "No preview.png and no browser check: disabled by PIPELINE_CHROMIUM=off" in md
    assert not (out / "preview.png").exists()
    tex = (out / "tables.tex").read_text()
    _tex_ok(tex)
    assert r"\multicolumn{4}{c}{Variance Exploding SDE (SMLD)} & \multicolumn{4}{c}{Variance Preserving SDE (DDPM)}" in tex
    assert r"3.30 $\pm$ 0.02; paper 3.24 $\pm$ 0.02; $\Delta$ +0.06" in tex
    assert r"\multicolumn{2}{c}{paper: CIFAR-10, Inception-v3}" in tex
    page = (out / "index.html").read_text()
    assert page.count("<table") == 8 and "src='figures/" not in page  # self-contained: no relative file links
    for f in figs:
        assert base64.b64encode((out / "figures" / f).read_bytes()).decode() in page, f
    assert page.index("id='summary'") < page.index("id='table3'")  # the summary comes first


def test_latex_escaping():
    assert report.tex_escape("a_b & 50% ± Δ {x} #1 —") == r"a\_b \& 50\% $\pm$ $\Delta$ \{x\} \#1 ---"
    _tex_ok(report.latex(["a_b", "c"], [["{", "}"]], caption="t", label="x"))


# --- an offline suite as the default one runs it: every stage done, no Inception weights ---------------------------
HW = {"cpu": "Test CPU 9000", "cpu_count": 2, "gpu": None, "gpu_count": 0, "processes": 1, "torch": "2.99.0",
      "cuda": None, "python": "3.11.7", "platform": "Linux"}
FM = ["ddpmpp_cont_subvp", "ddpmpp_cont_vp", "ncsn", "ncsnpp_cont"]


def _prepared(root: Path, dataset: str, n: int = 100, size: int = 28) -> np.ndarray:
    """A prepared training split of n images, each a different uint8 constant (so the chosen indices are visible)."""
    x = np.broadcast_to((np.arange(n, dtype=np.uint8) * 2)[:, None, None, None], (n, 1, size, size)).copy()
    folder = root / "data/prepared" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "train.npz", x=x, y=np.zeros(n, np.int64))
    split = {"count": n, "dtype": "uint8", "shape": list(x.shape), "sha256": atomic.sha256(folder / "train.npz")}
    (folder / "manifest.json").write_text(json.dumps({"dataset": dataset, "kind": "images", "splits": {"train": split}}))
    return x


@pytest.fixture
def fm_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_TRACKING", "off")
    root = tmp_path / "fmrepo"
    (root / "params/fm").mkdir(parents=True)
    for name in FM:
        raw = yaml.safe_load((ROOT / f"params/fmnist/{name}.yaml").read_text())
        (root / f"params/fm/{name}.yaml").write_text(yaml.safe_dump({**raw, "suite": "fm"}))
    for i, name in enumerate(FM):
        run = root / "runs/fm" / name
        _, p = load_params(root / f"params/fm/{name}.yaml")
        for k, sampler in enumerate(p.sampler_settings()):
            _eval(root, "fm", name, sampler, 100 + 10 * k, fd=(50.0 + i, 1.0), cis=(4.0, 0.1), seconds=3.0)
            info = {"seconds": 20.0, "num_samples": p.eval.num_samples, "num_seeds": p.eval.num_seeds, "hardware": HW}
            (run / "samples" / sampler).mkdir(parents=True)
            (run / "samples" / sampler / "info.json").write_text(json.dumps(info))
            _png(run / "samples" / sampler / "grid.png", (30 + 40 * i, 90, 10 * k))
        (run / "train_metrics.json").write_text(json.dumps({"step": 1000, "seconds": 100.0, "ema_eval_loss": 0.5,
                                                           "hardware": HW, "mlflow_run_id": None}))
        (run / "loss.csv").write_text(loss_csv([(s, 2.0 / s) for s in range(1, 201)], [(100, 0.03), (200, 0.02)]))
    (root / "runs/fm/ddpmpp_cont_subvp/likelihood.json").write_text(
        json.dumps({"bpd": {"mean": 3.71, "stderr": 0.07}, "nfe": 62.0, "seconds": 50.0}))
    (root / "data/evaluator/fashion_mnist").mkdir(parents=True)
    (root / "data/evaluator/fashion_mnist/metrics.json").write_text(json.dumps({"seconds": 40.0, "test_accuracy": 0.9}))
    _prepared(root, "fashion_mnist")
    return root


def test_a_metric_no_row_has_is_said_once_per_table_and_its_columns_dropped(fm_root):
    tabs = _tables(fm_root, "fm")
    cells = [c for t in tabs.values() for r in t.rows for c in r]
    assert not any("weights missing" in c or "not computed" in c for c in cells)  # in no cell ...
    assert not any("CIFAR-10" in c or "not comparable" in c for c in cells)  # the paper's dataset: in the headers only
    for key in ("table3", "table2", "ncsn", "samplers"):
        t = tabs[key]
        assert len(t.above) == 1, key  # ... but once above each table, with the fix
        assert "PIPELINE_INCEPTION_WEIGHTS" in t.above[0] and "eval.inception_weights" in t.above[0], key
        ours_cols = [c for c, g in zip(t.md_columns(), _group_of(t)) if g == "ours"]
        assert not any("FID" in c or "KID" in c for c in ours_cols), (key, ours_cols)
    assert not any("Inception" in c for c in tabs["samplers"].columns)
    t3 = tabs["table3"]
    assert _row(t3, "ncsnpp_cont")[4:] == ["53.00 ± 1.00", "4.00 ± 0.10", "2.38", "9.83"]  # the paper's value stays
    assert _row(t3, "ncsn")[4:] == ["52.00 ± 1.00", "4.00 ± 0.10", "25.32", "8.87 ± 0.12"]
    t2 = tabs["table2"]
    assert _row(t2, "ddpmpp_cont_subvp") == ["DDPM++ cont. (sub-VP)", "ddpmpp_cont_subvp", "3.71 ± 0.07", "62",
                                             "50.00 ± 1.00", "100", "3.02", "3.16"]
    assert t2.columns[4] == "FD (ODE) ↓" and [g[1] for g in t2.groups][1:] == ["ours: Fashion-MNIST", "paper: CIFAR-10"]
    md = report.table_markdown(t3)
    assert md.count("PIPELINE_INCEPTION_WEIGHTS") == 1 and md.index("> FID / IS") < md.index("| model (paper)")


def _group_of(t):
    return [short for short, _, span in t.groups for _ in range(span)]


def test_summary_says_what_ran_where_how_long_and_what_is_not_comparable(fm_root):
    exps = report.collect_experiments(fm_root, "fm")
    lines, head, caveats = report_summary.summary(exps, report.collect_datasets(fm_root, exps))
    what, hw, time = (v for _, v in lines)
    assert what.startswith("4 of 4 experiments trained on Fashion-MNIST (28×28×1, 100 training images) for 1,000 steps")
    assert "5 of 5 sampler runs sampled and evaluated (200 samples × 5 seeds each)" in what
    assert "bits/dim for 1 of 1" in what and "inpainting" not in what  # no controllable output in the fixture
    assert hw == "Test CPU 9000 (2 CPUs), no GPU; torch 2.99.0."
    # 4 x 100 s train, 5 x 20 s sample, 5 x 3 s evaluate, 50 s likelihood, 40 s dataset classifier
    assert time.startswith("605 s (10.1 min) of stage time: train 400 s, sample 100 s, evaluate 15 s, likelihood 50 s, "
                           "dataset classifier 40 s.")
    assert head.columns[-1] == "paper (CIFAR-10, Inception-v3)"
    row = next(r for r in head.rows if r[0] == "ddpmpp_cont_subvp")
    assert row[2] == "1,000 steps × batch 32" and row[5] == "FD 50.00 ± 1.00 (classifier); 3.71 ± 0.07 bits/dim (5 seeds)"
    assert row[6] == "DDPM++ cont. (sub-VP): FID 2.61"
    assert [c.split(":")[0] for c in caveats] == ["Dataset", "Metric", "Sample count", "Checkpoint"]
    assert "Fashion-MNIST" in caveats[0] and "50,000" in caveats[2]


def test_summary_before_anything_ran(suite_root):
    shutil.rmtree(suite_root / "runs")
    exps = report.collect_experiments(suite_root, "cifar10")
    lines, head, _ = report_summary.summary(exps, report.collect_datasets(suite_root, exps))
    what, hw, time = (v for _, v in lines)
    assert what.startswith("nothing yet: 5 experiments configured") and "previews the layout" in what
    assert hw == "no stage has run yet." and time == "no stage has run yet."
    assert all(r[5] == "not run" for r in head.rows)
    assert report_summary.not_comparable(exps) == ["Nothing has run yet, so there is no number to compare."]


def test_training_data_grid_is_deterministic_and_shaped_like_the_sample_grids(fm_root, tmp_path):
    x = _prepared(fm_root, "fashion_mnist")  # 100 images, image i filled with 2 i
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    caption = real_grid(fm_root, "fashion_mnist", a, 64)
    real_grid(fm_root, "fashion_mnist", b, 64)
    assert a.read_bytes() == b.read_bytes() and "64 images of the Fashion-MNIST training split (100)" in caption
    img = np.asarray(Image.open(a).convert("L"))
    assert img.shape == (8 * 30 + 2, 8 * 30 + 2)  # torchvision's grid: 8 per row, 2 px padding, like grid.png
    idx = np.sort(np.random.default_rng(0).choice(100, 64, replace=False))
    tiles = [int(img[2 + 30 * (i // 8) + 14, 2 + 30 * (i % 8) + 14]) for i in range(64)]
    assert tiles == [int(x[i, 0, 0, 0]) for i in idx]  # the drawn training images, in index order


def test_report_shows_each_experiments_samples_beside_the_training_data(fm_root, monkeypatch):
    monkeypatch.setenv(browser.ENV_VAR, "off")
    built = build(fm_root, "fm", fm_root / "out")
    real = [f for f in built["figures"] if f["kind"] == "real"]
    assert [(f["dataset"], f["file"]) for f in real] == [("fashion_mnist", "real-fashion_mnist.png")]
    page = (fm_root / "out/index.html").read_text()
    block = page[page.index("<div class='cmp'>"):]
    assert block.index("real-fashion_mnist.png") < block.index("samples-ddpmpp_cont_subvp-ode.png")
    assert all(f"<h3>{name}</h3>" in block for name in FM)
    md = (fm_root / "out/README.md").read_text()
    assert "| ncsnpp_cont | ![training data](figures/real-fashion_mnist.png) | ![" in md


def test_loss_curve_with_ema_evaluation_and_its_figure(fm_root, tmp_path):
    c = figures.read_curve(fm_root / "runs/fm/ncsn/loss.csv")
    assert len(c["train"]) == 200 and c["eval"] == [(100, 0.03), (200, 0.02)]
    assert figures.read_curve(tmp_path / "absent.csv") == {"train": [], "eval": []}
    assert figures.read_curve(_write(tmp_path / "old.csv", "step,loss\n1,0.5\n2,0.4\n")) == \
        {"train": [(1, 0.5), (2, 0.4)], "eval": []}  # loss.csv written before the EMA column
    out = tmp_path / "loss.png"
    figures.loss_plot(out, {n: {**c, "final": 0.02, "ylabel": "loss", "title": n} for n in ("a", "b", "c")})
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[:2] == (2 * 330, 2 * 520)  # 3 experiments: 2 x 2 panels
    orange = np.abs(img.astype(int) - (255, 127, 14)).sum(-1) < 30
    assert orange.sum() > 50  # the EMA evaluation curve is drawn


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_quality_against_nfe_has_error_bars_in_both_directions(fm_root):
    _, pts = rt.nfe_points(report.collect_experiments(fm_root, "fm"))
    assert {(p["std"], p["nfe_std"], p["seeds"]) for p in pts} == {(1.0, 0.0, 5)}


def test_hardware_is_recorded():
    import torch

    h = hardware.describe(processes=2)
    assert h["cpu"] and h["cpu"] != "unknown" and h["torch"] == torch.__version__ and h["processes"] == 2
    assert (h["gpu"] is None) == (not torch.cuda.is_available())


# --- headless Chromium --------------------------------------------------------------------------------------------
def _chromium():
    exe = browser.find()
    if not exe:
        pytest.skip("Chromium is not installed (apt-get install chromium): the rendering check needs it")
    return exe


def test_browser_probe_catches_what_a_reader_would_see(tmp_path):
    """The probe itself: a wide table, a page wider than the window, a broken image and a console error are caught."""
    exe = _chromium()
    page = tmp_path / "bad.html"
    ok_png = base64.b64encode((lambda b: (Image.new("RGB", (4, 4)).save(b, "png"), b.getvalue())[1])(io.BytesIO())).decode()
    page.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>"
                    "<div class='tw' style='overflow-x:auto'><table id='wide'><tr><td style='min-width:1500px'>x</td>"
                    "</tr></table></div><div style='width:1400px'>wide</div>"
                    f"<img src='missing.png'><img src='data:image/png;base64,{ok_png}'>"
                    "<script>console.error('boom')</script></body></html>")
    c = browser.check(page, 1280, exe=exe)
    assert c["scroll_width"] > c["inner_width"] == 1280
    assert [t["overflow"] > 200 for t in c["tables"]] == [True] and c["tables"][0]["id"] == "wide"
    assert (c["images"], c["images_loaded"]) == (2, 1) and "boom" in c["console_errors"]
    assert any("missing.png" in e for e in c["console_errors"])
    assert not list(tmp_path.glob(".probe-*"))  # the probe copy is removed


@pytest.mark.parametrize("suite", ["cifar10", "fm"])
def test_html_renders_in_headless_chromium(suite, suite_root, fm_root, tmp_path):
    exe = _chromium()
    root = suite_root if suite == "cifar10" else fm_root
    built = build(root, suite, tmp_path / "rep")
    out = tmp_path / "rep"
    checks = json.loads((out / "render_check.json").read_text())
    assert checks["browser"] == browser.version(exe) and [c["width"] for c in checks["checks"]] == [1280, 800]
    n_img = len(built["figures"])
    for c in checks["checks"]:
        assert c["scroll_width"] <= c["inner_width"] == c["width"], c  # no horizontal scroll at 1280 nor 800 px
        assert (c["images"], c["images_loaded"], c["broken_images"]) == (n_img, n_img, []), c
        assert c["console_errors"] == [], c
    wide = checks["checks"][0]
    assert [t["id"] for t in wide["tables"] if t["overflow"]] == [], wide["tables"]  # every table fits at 1280 px
    md = (out / "README.md").read_text()
    assert "![preview: the top of index.html](preview.png)" in md and "at 1280 px: page 1280 px wide" in md
    shot = np.asarray(Image.open(out / "preview.png").convert("RGB"))
    assert shot.shape == (1800, 1280, 3) and len({tuple(c) for c in shot.reshape(-1, 3)[::7]}) > 50
    page = (out / "index.html").resolve()
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table") == len(built["tables"]) + 1  # + the summary's headline table
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', dom)) == n_img
    if suite == "cifar10":
        assert "Variance Exploding SDE (SMLD)" in dom and "pc: 3.30 ± 0.02; paper 3.24 ± 0.02; Δ +0.06" in dom
        big = np.asarray(Image.open(io.BytesIO(_shot(exe, page, tmp_path))).convert("RGB"))
        for rgb in [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]:  # every embedded grid was decoded
            assert (np.abs(big.astype(int) - rgb).sum(-1) == 0).any(), rgb


def _shot(exe, page, tmp_path) -> bytes:
    shot = tmp_path / "full.png"
    assert browser.screenshot(page, shot, 1280, 6000, exe=exe)
    return shot.read_bytes()
