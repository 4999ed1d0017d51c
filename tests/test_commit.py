"""`pipeline commit`'s DVC targets (pipeline/stages/commit.py): the whole dvc.yaml in one `dvc commit` when no stage is
refused, the accepted stages by name otherwise. Checked on a real DVC repository: what each target list records in
dvc.lock. (The end-to-end refusal and recommit of a suite: tests/test_e2e.py.)"""
from __future__ import annotations

import subprocess
import sys

import yaml

from pipeline.stages.commit import commit_targets

DVC_YAML = """stages:
  a:
    cmd: echo a > a.txt
    outs: [a.txt]
  b:
    cmd: echo b > b.txt
    outs: [b.txt]
"""


def _repo(tmp_path):
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=tmp_path, check=True)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "b.txt").write_text("b\n")
    return tmp_path


def _commit(repo, targets) -> set[str]:
    subprocess.run([sys.executable, "-m", "dvc", "commit", "-f", "-q", *targets], cwd=repo, check=True)
    return set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"])


def test_a_refused_stage_is_left_out_and_none_refused_commits_the_file_once(tmp_path):
    repo = _repo(tmp_path)
    assert commit_targets("default", ["a"], refused=[("b", "b.txt: code moved")]) == ["a"]
    assert _commit(repo, commit_targets("default", ["a"], refused=[("b", "b.txt: code moved")])) == {"a"}
    assert commit_targets("default", ["b"], refused=[]) == ["dvc.yaml"]
    assert _commit(repo, commit_targets("default", ["b"], refused=[])) == {"a", "b"}
    # another suite's stages are named inside its own dvc.yaml
    assert commit_targets("smoke", ["a"], refused=[("b", "")]) == ["pipelines/smoke/dvc.yaml:a"]
    assert commit_targets("smoke", ["a", "b"], refused=[]) == ["pipelines/smoke/dvc.yaml"]
