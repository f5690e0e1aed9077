"""A wheel ships every package of the source tree (pyproject.toml lists them one by one), the gin
configs and the zoo, and works installed outside a checkout."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from epgkit.run import config

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_of_the_source_tree_is_listed_in_pyproject():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join((name, *init.parent.relative_to(ROOT / folder).parts)))
    assert {"epgkit", "epgkit.envs", "epgkit.method.losses"} <= found  # the walk sees subpackages
    assert found <= set(setuptools["packages"]), sorted(found - set(setuptools["packages"]))


def test_package_data_names_every_shipped_gin_file_and_the_zoo():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["epgkit.gin"] == "gin"
    patterns = setuptools["package-data"]["epgkit.gin"]
    missed = [str(p.relative_to(ROOT / "gin")) for p in (ROOT / "gin").rglob("*.gin")
              if not any(fnmatch.fnmatch(str(p.relative_to(ROOT / "gin")), pat)
                         for pat in patterns)]  # fmt: skip
    assert not missed  # a gin file in a deeper folder needs its own pattern
    assert {"zoo/*.pt", "zoo/*.json"} <= set(setuptools["package-data"]["epgkit.run"])


def test_gin_folder_is_found_as_the_package_epgkit_gin_and_names_resolve_from_anywhere(
    tmp_path, monkeypatch
):
    assert (ROOT / "gin").resolve() == config.GIN_DIR
    monkeypatch.chdir(tmp_path)  # a folder without gin/: names still reach the shipped files
    for name in ("quickstart", "quickstart.gin", "gin/quickstart.gin"):
        assert config.resolve(name) == config.GIN_DIR / "quickstart.gin"
    (tmp_path / "gin").mkdir()
    (tmp_path / "gin" / "quickstart.gin").write_text("# mine\n")
    assert config.resolve("gin/quickstart.gin") == Path("gin/quickstart.gin")  # the user's own


def test_wandb_flag_without_wandb_is_one_line_and_writes_nothing(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()  # as if wandb were not installed: its import is blocked
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['wandb'] = None\n")
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "epgkit.cli", "evolve", "quickstart", "debug", "--workers", "0",
         "--run-dir", str(run), "--wandb"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "epgkit: error: --wandb needs the wandb package, which is not installed: "
        "pip install 'epgkit[wandb]' (or run without --wandb)"
    ]
    assert not run.exists()


def _copy_source(dest: Path) -> Path:
    """The checkout without what a build or a run leaves behind (a stale build/ would ship)."""
    ignore = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "runs", ".venv",
                                    "__pycache__", "docs", "wandb")  # fmt: skip
    return Path(shutil.copytree(ROOT, dest, ignore=ignore))


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_evolves_quickstart_from_an_empty_folder(
    tmp_path,
):
    src = _copy_source(tmp_path / "src")
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             str(src), "-w", str(wheels)]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("epgkit-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
               "-q", str(wheel)]  # fmt: skip
    subprocess.run(install, check=True, capture_output=True, timeout=600)
    # The dependencies (torch, mujoco, dask, ...) come from this venv rather than a download:
    # a plain path line, so this venv's editable epgkit (a .pth of its own) is not picked up.
    where_libs = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([str(python), "-c", where_libs], capture_output=True, text=True,
                             check=True)  # fmt: skip
    deps = sysconfig.get_paths()["purelib"]
    (Path(purelib.stdout.strip()) / "epgkit_test_deps.pth").write_text(deps + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def epgkit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "epgkit"), *args], capture_output=True,
                              text=True, cwd=empty, env=env, timeout=600)  # fmt: skip

    where = subprocess.run([str(python), "-c", "import epgkit; print(epgkit.__file__)"],
                           capture_output=True, text=True, cwd=empty, env=env)  # fmt: skip
    assert where.stdout.strip().startswith(str(venv)), where
    listed = epgkit("list", "configs")
    assert listed.returncode == 0, listed.stderr
    for name in ("quickstart.gin", "debug.gin", "baselines/pointgoal.gin",
                 "clusters/slurm.gin"):  # fmt: skip
        assert name in listed.stdout, listed.stdout
    assert "pointgoal-quickstart" in epgkit("list", "zoo").stdout
    out = epgkit("evolve", "quickstart.gin", "debug.gin", "--workers", "0", "--run-dir", "run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("epoch ") == 2
    assert (empty / "run" / "metrics.jsonl").is_file()
    assert (empty / "run" / "best_loss.pt").is_file()
    # An experiment that includes another (pointgoal.gin includes quickstart.gin, which
    # includes base.gin) resolves its includes from the package as from a checkout.
    out = epgkit("evolve", "gin/pointgoal.gin", "debug.gin", "--workers", "0", "--run-dir", "pg")
    assert out.returncode == 0, out.stderr
