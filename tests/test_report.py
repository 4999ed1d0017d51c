"""Paper-style reports from synthetic metrics files: cell contents (ours ± std, paper value, difference, "not run"),
the layouts of Score SDE Tables 1-3 and NCSN Table 1 with the papers' numbers in their own column blocks, a metric
missing from some rows, the paper presets behind the tables, the FD/FID-against-NFE points, LaTeX that is well formed
and a self-contained index.html. tests/test_report_page.py: the summary, figures and the browser check."""
import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT
from PIL import Image

from pipeline.cli import main
from pipeline.config import load_params
from pipeline.report import browser, published
from pipeline.report import results as report
from pipeline.report import tables as rt

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
    # the report logic under test, not the preset's current default: PC (reverse diffusion + Langevin) as default
    fm["sampling"] = {"method": "pc", "predictor": "reverse_diffusion", "corrector": "langevin", "snr": 0.16,
                      "n_steps_each": 1, "num_steps": 100}
    fm.pop("samplers", None)
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
        # IS protocol: NCSN's 10 splits (mean ± std), Score SDE's one split over all samples (TF-GAN)
        assert p.eval.is_splits == (10 if name in ("ncsn", "ncsnv2") else 1), name
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
    assert list(tabs) == ["table3", "table2", "table1", "ncsn", "samplers", "claims", "controllable", "lineage"]
    for t in tabs.values():
        for row in t.rows:
            assert len(row) == len(t.columns), t.key
            for c in row:
                assert c.strip() and not re.fullmatch(r"[0.]+", c), (t.key, row)
    assert all(r[3].startswith("not run") and r[4].startswith("not run") for r in tabs["table3"].rows)
    assert all(c == "not run" for r in tabs["samplers"].rows for c in r[3:])
    assert tabs["controllable"].rows[0][2:] == ["not run", "not run"]
    assert all(r[2:] == ["not run", "not run"] for r in tabs["claims"].rows)


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
    assert page.count("<table") == 9 and "src='figures/" not in page  # self-contained: no relative file links
    for f in figs:
        assert base64.b64encode((out / "figures" / f).read_bytes()).decode() in page, f
    assert page.index("id='summary'") < page.index("id='table3'")  # the summary comes first


def test_latex_escaping():
    assert report.tex_escape("a_b & 50% ± Δ {x} #1 —") == r"a\_b \& 50\% $\pm$ $\Delta$ \{x\} \#1 ---"
    _tex_ok(report.latex(["a_b", "c"], [["{", "}"]], caption="t", label="x"))


def test_is_protocol_of_each_experiment_and_split_std_cells(suite_root):
    """The tables say which IS protocol each experiment uses; an IS over 10 splits shows ± its std over splits."""
    f = suite_root / "runs/cifar10/ncsn/eval/ald.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"nfe": _stat(1001, 0.0), "num_samples": 50000, "num_seeds": 1,
                             "inception": {"status": "computed", "fid": {"mean": 30.0, "std": None, "n": 1},
                                           "is": {"mean": 8.0, "std": None, "n": 1, "splits": 10, "split_std": 0.25,
                                                  "protocol": "mean ± std over 10 splits"}},
                             "classifier": {"status": "not computed: this dataset has no classifier evaluator"}}))
    tabs = _tables(suite_root)
    assert tabs["ncsn"].rows[0][4:6] == ["8.00 ± 0.25", "30.00"]  # IS ± std over splits; FID of one seed
    note = tabs["table3"].note
    assert "mean ± std over 10 splits (Salimans et al. 2016, as NCSN): ncsn" in note
    assert "one split over all samples (TF-GAN, as Score SDE): ddpm, ddpm_ve, ddpmpp_cont_vp, ncsnpp_cont" in note
    assert "is_splits" in tabs["ncsn"].note and "is_splits" in tabs["samplers"].note
    fm = _tables(suite_root, "fm")["samplers"].note
    assert "IS (eval.is_splits): one split over all samples (TF-GAN, as Score SDE), every experiment." in fm


def test_feature_net_selects_the_headline_columns(suite_root):
    """With Inception values present, eval.feature_net: classifier keeps the classifier FD as a headline column."""
    fm = yaml.safe_load((suite_root / "params/fm/ncsnpp_cont.yaml").read_text())
    _eval(suite_root, "fm", "ncsnpp_cont", "pc", 100, fid=(40.0, 1.0), fd=(12.0, 0.5))
    assert fm["eval"].get("feature_net", "classifier") == "classifier"
    t3 = _tables(suite_root, "fm")["table3"]
    assert [g[1] for g in t3.groups][1:3] == ["ours: Fashion-MNIST, Inception-v3", "ours: Fashion-MNIST, dataset classifier"]
    from pipeline.report.summary import headline

    assert "FD 12.00 ± 0.50 (classifier" in headline(report.collect_experiments(suite_root, "fm")).rows[0][4]
    fm["eval"]["feature_net"] = "inception"
    (suite_root / "params/fm/ncsnpp_cont.yaml").write_text(yaml.safe_dump(fm))
    t3 = _tables(suite_root, "fm")["table3"]
    assert "ours: Fashion-MNIST, dataset classifier" not in [g[1] for g in t3.groups]
    assert "FID 40.00 ± 1.00 (Inception-v3" in headline(report.collect_experiments(suite_root, "fm")).rows[0][4]
