"""Run directories record where the code came from."""

from __future__ import annotations

import subprocess

from epgkit.rundir import git_state


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
