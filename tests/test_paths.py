"""OS errors through the CLI: a path that cannot be written is refused in one line before
anything is written (exit 2); a write that fails mid-run (a full disk) ends in one line naming
the file (exit 1) and leaves the run resumable."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from epgkit.cli import app
from epgkit.run import rundir
from epgkit.run.paths import PathError, check_dir, check_file, describe, naming
from epgkit.run.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
QUICK = [str(ROOT / "gin/quickstart.gin"), str(ROOT / "gin/debug.gin"), "--workers", "0"]
LONG = "n" * 300  # longer than any file system's longest name (255 bytes)


def disk_full() -> OSError:
    """The error of a write to an open file on a full disk (it names no file)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def epgkit(*args: str):
    """The ``epgkit`` command, in this process (so that a test can make the disk fail)."""
    result = CliRunner().invoke(app, list(args))
    # Anything but a deliberate exit is an exception the user would see as a traceback.
    assert result.exception is None or isinstance(result.exception, SystemExit), "".join(
        __import__("traceback").format_exception(*result.exc_info)
    )
    return result


def error_line(result) -> str:
    """The one line a failed command printed."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epgkit: error: "), result.stderr
    return lines[0]


def snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file()
            else "dir" for p in sorted(path.rglob("*"))}  # fmt: skip


def untimed(path: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "wall_s"} for m in RunDir(path).metrics()]


@pytest.fixture
def places(tmp_path: Path) -> Path:
    """A folder with a file, a folder and a run directory holding one line of metrics."""
    (tmp_path / "a-file").write_text("mine\n")
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "run").mkdir()
    line = {"epoch": 0, "fitness_mean": -1.0, "fitness_std": 0.0, "fitness_max": -1.0}
    (tmp_path / "run" / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    return tmp_path


CASES = {
    "evolve --run-dir FILE": (["evolve", *QUICK, "--run-dir", "{p}/a-file"],
                              "--run-dir {p}/a-file is a file, not a directory"),
    "evolve --run-dir FILE/sub": (["evolve", *QUICK, "--run-dir", "{p}/a-file/sub"],
                                  "--run-dir {p}/a-file/sub: {p}/a-file is a file, not a dir"),
    "evolve --run-dir LONG": (["evolve", *QUICK, "--run-dir", f"{{p}}/{LONG}"],
                              f"--run-dir {{p}}/{LONG}: File name too long"),
    "evolve --run-dir LONG/LONG": (["evolve", *QUICK, "--run-dir", f"{{p}}/a-dir/x/{LONG}"],
                                   "longer than the 255 bytes this file system allows"),
    "evolve --resume LONG": (["evolve", "--resume", f"{{p}}/{LONG}"],
                             f"--resume {{p}}/{LONG}: File name too long"),
    "evolve LONG.gin": (["evolve", f"{LONG}.gin"], f"config file '{LONG}.gin': File name too"),
    "train --out FILE": (["train", "zoo:pointgoal", "--workers", "0", "--out", "{p}/a-file"],
                         "--out {p}/a-file is a file, not a directory"),
    "analyze kl --out FILE": (["analyze", "kl", "zoo:pointgoal", "--out", "{p}/a-file"],
                              "--out {p}/a-file is a file, not a directory"),
    "sweep --out FILE": (["sweep", *QUICK, "--grid", "OpenES.sigma=[0.01]", "--out",
                          "{p}/a-file"], "--out {p}/a-file is a file, not a directory"),
    "plot --out DIR": (["plot", "{p}/run", "--out", "{p}/a-dir"],
                       "--out {p}/a-dir is a directory; give the name of the file to write"),
    "envs show --out DIR": (["envs", "show", "epgkit/PointGoal-v0", "--out", "{p}/a-dir"],
                            "--out {p}/a-dir is a directory"),
    "render --out DIR": (["render", "zoo:pointgoal", "--out", "{p}/a-dir"],
                         "--out {p}/a-dir is a directory"),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_an_unusable_path_is_refused_in_one_line_and_nothing_is_written(places, case):
    args, message = CASES[case]
    before = snapshot(places)
    result = epgkit(*(a.format(p=places) for a in args))
    assert result.exit_code == 2, result.output
    assert message.format(p=places) in error_line(result)
    assert snapshot(places) == before


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(a folder, the same folder seen read-only): a read-only bind mount when this process may
    mount (root ignores file modes), else the folder itself without write permission."""
    source, view = tmp_path / "source", tmp_path / "view"
    source.mkdir()
    if os.geteuid() != 0:
        yield source, source
        source.chmod(0o755)
        return
    view.mkdir()
    mount = ["mount", "--bind", str(source), str(view)]
    remount = ["mount", "-o", "remount,ro,bind", str(view)]
    if any(subprocess.run(c, capture_output=True).returncode for c in (mount, remount)):
        subprocess.run(["umount", str(view)], capture_output=True)
        pytest.skip("root here may not mount: no read-only folder to test with")
    try:
        yield source, view
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_a_read_only_place_is_refused_before_anything_runs(read_only):
    source, view = read_only
    done = epgkit("evolve", *QUICK, "--run-dir", str(source / "run"), "-b", "Experiment.epochs = 1")
    assert done.exit_code == 0, done.output
    if source == view:
        source.chmod(0o555)
    (source / "run").chmod(0o555)
    before = snapshot(source)
    reason = "(read-only file system)" if source != view else "(permission denied)"
    for args, where in [
        (["evolve", *QUICK, "--run-dir", str(view / "new")], f"--run-dir {view / 'new'}"),
        (["evolve", "--resume", str(view / "run")], f"--resume {view / 'run'}"),
        (["train", str(view / "run"), "--workers", "0", "--out", str(view / "t")], "--out"),
        (["sweep", *QUICK, "--grid", "OpenES.sigma=[0.01]", "--out", str(view / "s")], "--out"),
        (["analyze", "kl", str(view / "run"), "--out", str(view / "a")], "--out"),
    ]:
        result = epgkit(*args)
        assert result.exit_code == 2, result.output
        line = error_line(result)
        assert line.startswith(f"epgkit: error: {where}") and reason in line
    (source / "run").chmod(0o755)
    assert snapshot(source) == before


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    run = tmp_path_factory.mktemp("whole") / "run"
    done = epgkit("evolve", *QUICK, "--run-dir", str(run), "-b", "Experiment.epochs = 4")
    assert done.exit_code == 0, done.output
    return untimed(run)


def _checkpoint_fails(monkeypatch, run: Path) -> str:
    """Every torch.save fails once two epochs are logged, as on a full disk: the third epoch
    fails at its first file, ``best_loss.pt`` or ``loss.pt``."""
    save = torch.save

    def full(obj, f, *args, **kwargs):
        if len(RunDir(run).metrics()) >= 2:
            raise disk_full()
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    return r"(best_)?loss\.pt"


def _log_fails(monkeypatch, run: Path) -> str:
    """The third epoch's metrics line is written in part, then the disk is full."""

    class Full:
        def __init__(self, path: Path) -> None:
            self.f = open(path, "a")  # noqa: SIM115

        def writelines(self, lines) -> None:
            text = "".join(lines)
            self.f.write(text[: len(text) // 2])
            raise disk_full()

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    def fake_open(path, mode="r", *args, **kwargs):
        if Path(path).name == rundir.METRICS and len(RunDir(run).metrics()) >= 2:
            return Full(Path(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(rundir, "open", fake_open, raising=False)
    return r"metrics\.jsonl"


@pytest.mark.parametrize("fails", [_checkpoint_fails, _log_fails], ids=["checkpoint", "metrics"])
def test_a_full_disk_mid_run_ends_in_one_line_and_the_run_resumes(
    tmp_path, monkeypatch, uninterrupted, fails
):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        name = fails(patch, run)
        result = epgkit("evolve", *QUICK, "--run-dir", str(run), "-b", "Experiment.epochs = 4")
    assert result.exit_code == 1, result.output
    assert re.fullmatch(
        f"epgkit: error: {re.escape(str(run))}/{name}: No space left on device. Every finished "
        f"epoch is checkpointed: continue with `epgkit evolve --resume {re.escape(str(run))}`",
        error_line(result),
    )
    # The checkpoint of the last complete epoch (whose metrics line a resume completes); no
    # temporary file left behind.
    logged = len(RunDir(run).metrics())
    assert (
        RunDir(run).load_checkpoint()["epoch"]
        == (3 if "metrics" in name else 2)
        == logged + ("metrics" in name)
    )
    assert not list(run.glob(".*"))
    again = epgkit("evolve", "--resume", str(run))
    assert again.exit_code == 0, again.output
    assert untimed(run) == uninterrupted


def test_a_failed_write_names_its_file():
    with pytest.raises(OSError) as caught, naming("/somewhere/metrics.jsonl"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert describe(caught.value) == "/somewhere/metrics.jsonl: No space left on device"
    with pytest.raises(OSError) as caught, naming("/elsewhere"):
        open("/nonexistent-folder/x")  # noqa: SIM115  (already names its own file)
    assert describe(caught.value) == "/nonexistent-folder/x: No such file or directory"


def test_the_checks_accept_what_can_be_written(tmp_path):
    check_dir(tmp_path / "new" / "deeper", "--run-dir")
    check_dir(tmp_path, "--out")
    check_file(tmp_path / "plots" / "fitness.png", "--out")
    (tmp_path / "old.png").write_bytes(b"")
    check_file(tmp_path / "old.png", "--out")
    with pytest.raises(PathError, match="is a directory"):
        check_file(tmp_path, "--out")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB file system of its own (tmpfs), where this process may mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode:
        pytest.skip("no permission to mount a small file system here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_real_full_disk_mid_run_ends_in_one_line_and_the_run_resumes(small_disk):
    run = small_disk / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "epgkit.cli", "evolve", *QUICK, "--run-dir", str(run),
         "-b", "Experiment.epochs = 200"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(RunDir(run).metrics()) < 2:
        time.sleep(0.05)
    with open(small_disk / "filler", "wb", buffering=0) as f:  # the disk, full to the last byte
        with pytest.raises(OSError) as full:
            while True:
                f.write(b"\0" * 65536)
        assert full.value.errno == errno.ENOSPC
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"epgkit: error: {run}/") and "No space left on device" in line
    assert line.endswith(f"continue with `epgkit evolve --resume {run}`")
    finished = len(RunDir(run).metrics())
    assert 2 <= finished < 200
    assert RunDir(run).load_checkpoint()["epoch"] in (finished, finished + 1)  # a line torn?
    (small_disk / "filler").unlink()  # the user frees space, then resumes
    more = subprocess.run([sys.executable, "-m", "epgkit.cli", "evolve", "--resume", str(run),
                           "-b", f"Experiment.epochs = {finished + 2}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert more.returncode == 0, more.stderr
    assert [m["epoch"] for m in RunDir(run).metrics()] == list(range(finished + 2))
