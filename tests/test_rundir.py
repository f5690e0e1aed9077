"""Run directories: where the code came from, and reading their JSON-lines logs."""

from __future__ import annotations

import subprocess

import pytest

from epgkit.run.provenance import git_state
from epgkit.run.rundir import RunDirError, jsonl_rows


def test_git_state_names_the_commit_and_whether_tracked_files_changed(tmp_path):
    assert git_state(tmp_path) == {"git_sha": None, "git_dirty": None}  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert git_state(tmp_path) == {"git_sha": sha.strip(), "git_dirty": False}
    (tmp_path / "untracked.txt").write_text("runs write files; they do not make code dirty\n")
    assert git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == {"git_sha": sha.strip(), "git_dirty": True}


def test_jsonl_rows_skip_a_torn_last_line_and_name_a_damaged_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n\n{"epoch": 1}\n{"epoch": 2, "fitn')  # torn by a crash
    assert jsonl_rows(path) == [(1, {"epoch": 0}), (3, {"epoch": 1})]
    for damaged, why in [('{"epoch": 0}\n[1, 2]\n', "line 2: not a JSON object"),
                         ('{"epoch": 0}\n{"epo\n', "line 2: not JSON")]:  # fmt: skip
        path.write_text(damaged)
        with pytest.raises(RunDirError, match=why):
            jsonl_rows(path)
    path.write_bytes(b'{"epoch": 0}\n\xff\xfe\n')
    with pytest.raises(RunDirError, match="not text"):
        jsonl_rows(path)
