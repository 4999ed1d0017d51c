"""What every stage process spends before and around its work, measured side by side in one run, old way against new:

- `lock`: reading the repository's dvc.lock and dvc.yaml as `pipeline.io.tracking.locked_md5` does (a data stage
  looks up three paths, train two): PyYAML's pure-Python SafeLoader on every lookup (before) against libyaml's
  CSafeLoader once per file version (`tracking._stages_of`);
- `code deps`: the code dependencies of every stage of the default suite, which `cli.begin` derives for the stage it
  runs (`dag.stage_of`): each command's import closure parsed anew (before) against each file parsed once per process
  (`code_deps.imports_of`);
- `imports`: importing a stage module that imports pipeline.metrics.distances but computes no distance (report, the
  dataset classifier's `evaluator`) in a fresh interpreter (median of `--repeats`), with clean-fid (and so all of
  torchvision) imported eagerly by distances (before) or on first use (now). The evaluate and curves stages import
  it when they compute their first FD either way;
- `dag`: reading the default suite's DAG in a fresh interpreter (median of `--repeats`), as `pipeline stale`, `pipeline
  commit`, a suite stage's provenance check and each cluster job's Snakemake do: every network built on the meta device
  (and so torch imported) on every read (before) against only where a DAG is generated or started (`check_models`).

    python benchmarks/bench_stage_start.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def lock_lookups(repeats: int, lookups: int = 3) -> tuple[float, float]:
    import yaml

    from pipeline.io import tracking

    files = [f for f in (ROOT / "dvc.lock", ROOT / "dvc.yaml") if f.exists()]

    def before():
        for _ in range(lookups):
            for f in files:
                yaml.safe_load(f.read_text())

    def now():
        tracking._parsed_stages.cache_clear()
        for _ in range(lookups):
            for f in files:
                tracking._stages_of(f)

    return _best(before, repeats), _best(now, repeats)


def code_deps(repeats: int) -> tuple[float, float]:
    from pipeline.workflow import code_deps as cd
    from pipeline.workflow.commands import COMMANDS

    def run(cache: bool):
        cd.stage_code.cache_clear()
        cd._imports_of.cache_clear()
        for command in COMMANDS:
            if not cache:
                cd._imports_of.cache_clear()  # each closure parses its files anew, as before
            cd.stage_code(command)

    return _best(lambda: run(False), repeats), _best(lambda: run(True), repeats)


IMPORT = "import time, sys; sys.path.insert(0, {root!r}); t0 = time.perf_counter(); {pre}import {module}; " \
         "print(time.perf_counter() - t0)"


def fresh_import(module: str, eager_cleanfid: bool, repeats: int) -> float:
    pre = "import cleanfid.fid; " if eager_cleanfid else ""
    code = IMPORT.format(root=str(ROOT), pre=pre, module=module)
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True, cwd=ROOT).stdout) for _ in range(repeats))


DAG = "import time, sys; sys.path.insert(0, {root!r}); t0 = time.perf_counter(); from pathlib import Path; " \
      "from pipeline.workflow import dag; dag.suite_stages(Path({root!r}), 'default', check_models={check}); " \
      "print(time.perf_counter() - t0)"


def fresh_dag(check: bool, repeats: int) -> float:
    code = DAG.format(root=str(ROOT), check=check)
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True, cwd=ROOT).stdout) for _ in range(repeats))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    print("| what | before (s) | now (s) | ratio |")
    print("|---|---|---|---|")
    rows = [("dvc.lock + dvc.yaml, 3 lookups", *lock_lookups(a.repeats)),
            ("code deps of every command", *code_deps(a.repeats))]
    for module in ("pipeline.stages.report", "pipeline.stages.evaluator"):
        rows.append((f"import {module} (fresh process)", fresh_import(module, True, a.repeats),
                     fresh_import(module, False, a.repeats)))
    rows.append(("the default suite's DAG (fresh process)", fresh_dag(True, a.repeats), fresh_dag(False, a.repeats)))
    for what, before, now in rows:
        print(f"| {what} | {before:.3f} | {now:.3f} | {before / now:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
