"""The user's own modules: recorded with a run's losses, and a warning when `train` or
`--resume` imports other code under the same name, or a component cannot be imported again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from epgkit.run import user_modules as um

ROOT = Path(__file__).resolve().parent.parent
QUICK = [str(ROOT / "gin/quickstart.gin"), str(ROOT / "gin/debug.gin")]

LOSS = """
import dataclasses

import epgkit
from epgkit.method.losses import ReinforceLoss


@epgkit.register("loss")
@dataclasses.dataclass(frozen=True)
class ScaledLoss(ReinforceLoss):
    def __call__(self, batch, ret):
        return SCALE * super().__call__(batch, ret)


SCALE = 1.0
"""


def epgkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([sys.executable, "-m", "epgkit.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_the_imports_of_a_config_and_its_env_ids_are_found():
    text = "import epgkit.components\nimport my_losses\n# import not_this\nA.b = 'import x'\n"
    assert um.imported(text, ["my_envs:Drift-v0", "epgkit/PointGoal-v0", "my_losses:X-v0"]) == [
        "epgkit.components", "my_losses", "my_envs"]  # fmt: skip


def test_only_the_users_files_are_fingerprinted_and_a_change_is_said(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()  # as recorded: the real path
    (tmp_path / "mine.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import mine  # noqa: F401  (fingerprint reads modules imported already)

    monkeypatch.setitem(sys.modules, "fake", types.ModuleType("fake"))  # no file at all
    before = um.fingerprint(["epgkit.components", "numpy", "mine", "fake", "absent"])
    assert list(before) == ["mine"] and before["mine"]["file"] == str(tmp_path / "mine.py")
    assert um.changes(before, um.fingerprint(["mine"])) == []
    (tmp_path / "mine.py").write_text("X = 2\n")
    (said,) = um.changes(before, um.fingerprint(["mine"]))
    assert said.startswith(f"module mine ({tmp_path / 'mine.py'}) has changed since the loss")
    moved = {"mine": {**before["mine"], "file": "/elsewhere/mine.py"}}
    (said,) = um.changes(moved, um.fingerprint(["mine"]))
    assert f"is {tmp_path / 'mine.py'}, not the loss's /elsewhere/mine.py, and its code" in said


def test_a_component_of_main_is_named():
    main_class = type("NbLoss", (), {"__module__": "__main__"})
    (said,) = um.in_main({"loss": main_class(), "policy": None, "guide": object()})
    assert said.startswith("loss NbLoss is defined in __main__")


@pytest.fixture(scope="module")
def evolved(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("user").resolve()  # as recorded: the real path
    (home / "scaled.py").write_text(LOSS)
    out = epgkit("evolve", *QUICK, "--run-dir", "run", "--workers", "0", "-b", "import scaled",
                 "-b", "InnerLoop.loss = @ScaledLoss()", cwd=home)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stdout + out.stderr
    return home


def test_train_with_the_same_code_warns_of_nothing_and_records_it(evolved, tmp_path):
    out = epgkit("train", "run", "--runs", "1", "--workers", "0", "--out", str(tmp_path / "t"),
                 cwd=evolved)  # fmt: skip
    assert out.returncode == 0 and "warning" not in out.stdout, out.stdout + out.stderr
    recorded = json.loads((tmp_path / "t/summary.json").read_text())["user_modules"]
    assert recorded["scaled"]["file"] == str(evolved / "scaled.py")


def test_train_and_resume_warn_when_the_users_module_holds_other_code(evolved, tmp_path):
    other = tmp_path.resolve() / "other"
    other.mkdir()
    (other / "scaled.py").write_text(LOSS.replace("SCALE = 1.0", "SCALE = -1.0"))
    run = str(evolved / "run")
    train = epgkit("train", run, "--runs", "1", "--workers", "0", "--out", str(tmp_path / "t"),
                   cwd=other)  # fmt: skip
    assert train.returncode == 0, train.stderr
    warning = (f"epgkit: warning: module scaled is {other / 'scaled.py'}, not the loss's "
               f"{evolved / 'scaled.py'}, and its code differs: results may differ")  # fmt: skip
    assert warning in train.stdout
    resumed = epgkit("evolve", "--resume", run, "--workers", "0", "-b", "Experiment.epochs = 3",
                     cwd=other)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "epgkit: warning: module scaled is" in resumed.stdout
