"""The README's custom-loss and custom-env examples, run as a user would copy them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_module(name: str) -> str:
    """The README's python block that starts with ``# name``."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if b.startswith(f"# {name}\n")]
    return block


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    for name in ("my_losses.py", "my_envs.py"):
        (tmp_path / name).write_text(readme_module(name))
    return tmp_path


def test_readme_shows_the_two_setup_commands_and_ci_runs_the_second():
    text = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv .*?)\n```", text)
    assert len(commands) == 2
    assert commands[0].endswith("epgkit evolve gin/quickstart.gin")
    assert commands[1].endswith("pytest -q")
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("workers", ["0", "1"])
def test_custom_loss_and_env_from_the_readme_evolve(user_dir: Path, workers: str):
    run = user_dir / "run"
    # The `epgkit` command, as the user runs it from the folder of their modules, which is not
    # on PYTHONPATH: that holds only this checkout (not another epgkit the venv may install).
    script = Path(sys.executable).with_name("epgkit")
    assert script.is_file(), "the install puts the epgkit command beside the interpreter"
    out = subprocess.run(
        [str(script), "evolve", str(ROOT / "gin/quickstart.gin"),
         str(ROOT / "gin/debug.gin"), "--run-dir", str(run), "--workers", workers,
         "-b", "import my_losses", "-b", "import my_envs",
         "-b", "InnerLoop.loss = @LinearLoss()", "-b", "InnerLoop.env_id = 'my_envs:Drift-v0'"],
        capture_output=True, text=True, cwd=user_dir, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "LinearLoss" in out.stdout and "(|φ| = 4)" in out.stdout  # obs 1 + act 1 + 2
    records = [json.loads(x) for x in (run / "inner_loops.jsonl").read_text().splitlines()]
    assert {"drift", "task_seed"} <= set(records[0]["task"])
    assert all(r["failed"] is None for r in records)


def test_the_python_api_example_from_the_readme_runs(tmp_path: Path):
    (tmp_path / "notebook.py").write_text(readme_module("notebook.py"))
    out = subprocess.run([sys.executable, "notebook.py"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "runs/try/best_loss.pt" in out.stdout and "P(epg > ppo)" in out.stdout
    assert (tmp_path / "runs" / "try" / "train").is_dir()
