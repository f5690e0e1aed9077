"""--resume never deletes or duplicates a line, and continues only the run as it was configured:
logs that disagree with the checkpoint and edited configs are refused with the run directory
byte for byte as it was; what a crash left half-written is completed from the checkpoint."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from epgkit.run.rundir import LOG_DIGESTS, RunDir

ROOT = Path(__file__).resolve().parent.parent
W = 4  # debug.gin: Experiment.inner_loops


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "epgkit.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}  # fmt: skip


def untimed(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "wall_s"} for m in RunDir(run).metrics()]


def resume(run: Path, *args: str) -> subprocess.CompletedProcess:
    return cli("evolve", "--resume", str(run), "--workers", "0", *args)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """``two``: 2 epochs; ``three``: the same run resumed to 3 (keeping the 2-epoch checkpoint
    as ``two/checkpoint.pt``); ``four``: resumed to 4 epochs, the reference."""
    base = tmp_path_factory.mktemp("runs")
    two = base / "two"
    done = cli("evolve", "gin/quickstart.gin", "gin/debug.gin", "--run-dir", str(two),
               "--workers", "0")  # fmt: skip
    assert done.returncode == 0, done.stderr
    three, four = base / "three", base / "four"
    shutil.copytree(two, three)
    assert resume(three, "-b", "Experiment.epochs = 3").returncode == 0
    shutil.copytree(three, four)
    assert resume(four, "-b", "Experiment.epochs = 4").returncode == 0
    return {"two": two, "three": three, "four": four}


@pytest.fixture
def run(runs, tmp_path) -> Path:
    """A copy of the 3-epoch run to damage."""
    return Path(shutil.copytree(runs["three"], tmp_path / "run"))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def cut(path: Path, keep: int, torn: int = 0) -> None:
    """Keeps ``keep`` complete lines and the first ``torn`` characters of the next one."""
    text = lines(path)
    path.write_text("".join(text[:keep]) + text[keep][:torn] if torn else "".join(text[:keep]))


def refused(run: Path, *names: str) -> str:
    before = snapshot(run)
    out = resume(run, "-b", "Experiment.epochs = 4")
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "Traceback" not in line and all(name in line for name in names), line
    assert snapshot(run) == before  # byte for byte
    return line


# What a user may do to a 3-epoch run: (file, complete lines kept or None to delete it, torn
# characters of the next line), and what the refusal must say besides the file's name.
LOST = {
    "metrics deleted": ("metrics.jsonl", None, 0, "lacks epochs 0 to 1 of the 3"),
    "metrics cut short": ("metrics.jsonl", 1, 0, "lacks epoch 1 of the 3"),
    "metrics cut mid-line": ("metrics.jsonl", 1, 30, "lacks epoch 1 of the 3"),
    "records deleted": ("inner_loops.jsonl", None, 0, "lacks epochs 0 to 1 of the 3"),
    "records cut short": ("inner_loops.jsonl", 2 * W - 1, 0, "lacks epoch 1 of the 3"),
    "checkpoint deleted": ("checkpoint.pt", None, 0, "metrics.jsonl holds epochs but"),
}


@pytest.mark.parametrize(("name", "keep", "torn", "says"), LOST.values(), ids=LOST.keys())
def test_logs_that_lost_more_than_the_checkpoint_holds_are_refused_untouched(
    run, name, keep, torn, says
):
    if keep is None:
        (run / name).unlink()
    else:
        cut(run / name, keep, torn)
    refused(run, name, says)


def test_logs_ahead_of_the_checkpoint_are_refused_untouched(run, runs):
    shutil.copy(runs["two"] / "checkpoint.pt", run / "checkpoint.pt")  # an older checkpoint
    refused(run, "inner_loops.jsonl, line 9", "beyond the 2 epochs")


def test_logs_written_twice_or_edited_are_refused_untouched(run):
    text = lines(run / "metrics.jsonl")
    (run / "metrics.jsonl").write_text("".join([*text[:2], text[1], text[2]]))  # epoch 1 twice
    refused(run, "metrics.jsonl, line 3", "epoch 1 where epoch 2 belongs")
    edited = json.loads(text[2]) | {"fitness_mean": 1e6}
    (run / "metrics.jsonl").write_text("".join([*text[:2], json.dumps(edited) + "\n"]))
    refused(run, "metrics.jsonl, line 3", "differs from what checkpoint.pt holds")
    # The last line twice was "epoch 2 is beyond the 3 epochs", which it is not.
    (run / "metrics.jsonl").write_text("".join([*text, text[-1]]))
    refused(run, "metrics.jsonl, line 4", "a line of epoch 2 after the 3 epochs", "written twice")


EDITED = {"metrics": ("metrics.jsonl", 0), "records": ("inner_loops.jsonl", W + 1)}


@pytest.mark.parametrize(("name", "line"), EDITED.values(), ids=EDITED.keys())
def test_a_log_edited_before_its_last_epoch_is_refused_untouched(run, name, line):
    text = lines(run / name)
    row = json.loads(text[line])
    row["fitness" if "fitness" in row else "fitness_mean"] += 1.0
    text[line] = json.dumps(row) + "\n"
    (run / name).write_text("".join(text))
    refused(run, name, "the lines of epochs 0 to 1 are not those the run wrote")


def test_a_checkpoint_from_before_log_digests_resumes_and_gains_them(run, runs):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert set(json.loads(ckpt.pop(LOG_DIGESTS))) == {"metrics.jsonl", "inner_loops.jsonl"}
    torch.save(ckpt, run / "checkpoint.pt")  # as an older epgkit wrote it
    out = resume(run, "-b", "Experiment.epochs = 4")
    assert out.returncode == 0, out.stderr
    assert untimed(run) == untimed(runs["four"])
    after = json.loads(torch.load(run / "checkpoint.pt", weights_only=True)[LOG_DIGESTS])
    for name in ("metrics.jsonl", "inner_loops.jsonl"):  # the whole log, as written
        assert after[name] == hashlib.sha256((run / name).read_bytes()).hexdigest()


# A kill after the checkpoint of epoch 2, at every moment of its logs' appends: records then
# metrics (a kill before that checkpoint leaves a consistent run at epoch 2).
CRASHES = {
    "no line appended": (2 * W, 0, 2, 0),
    "a torn record": (2 * W, 25, 2, 0),
    "some records and a torn one": (2 * W + 2, 25, 2, 0),
    "all records": (3 * W, 0, 2, 0),
    "all records and a torn metrics line": (3 * W, 0, 2, 40),
}


@pytest.mark.parametrize("crash", CRASHES.values(), ids=CRASHES.keys())
def test_a_kill_between_checkpoint_and_logs_is_completed_without_removing_a_line(run, runs, crash):
    records, torn_record, epochs, torn_metrics = crash
    cut(run / "inner_loops.jsonl", records, torn_record)
    cut(run / "metrics.jsonl", epochs, torn_metrics)
    written = {name: [x for x in lines(run / name) if x.endswith("\n")]
               for name in ("metrics.jsonl", "inner_loops.jsonl")}  # fmt: skip
    out = resume(run, "-b", "Experiment.epochs = 4")
    assert out.returncode == 0, out.stderr
    for name, complete in written.items():
        assert lines(run / name)[: len(complete)] == complete  # no complete line removed
    assert untimed(run) == untimed(runs["four"])
    assert lines(run / "inner_loops.jsonl") == lines(runs["four"] / "inner_loops.jsonl")


def test_a_run_kept_with_its_records_gzipped_resumes_as_if_they_were_there(run, runs):
    # How a run is committed: its large inner_loops.jsonl as inner_loops.jsonl.gz.
    packed = run / "inner_loops.jsonl.gz"
    packed.write_bytes(gzip.compress((run / "inner_loops.jsonl").read_bytes()))
    (run / "inner_loops.jsonl").unlink()
    kept = packed.read_bytes()
    out = resume(run, "-b", "Experiment.epochs = 4")
    assert out.returncode == 0, out.stderr
    assert untimed(run) == untimed(runs["four"])
    assert lines(run / "inner_loops.jsonl") == lines(runs["four"] / "inner_loops.jsonl")
    assert packed.read_bytes() == kept
    assert not list(run.glob("*.unpacking"))


def test_gzipped_records_that_lack_epochs_or_do_not_unpack_are_refused_untouched(run):
    text = lines(run / "inner_loops.jsonl")
    (run / "inner_loops.jsonl").unlink()
    packed = run / "inner_loops.jsonl.gz"
    packed.write_bytes(gzip.compress("".join(text[: 2 * W - 1]).encode()))
    refused(run, "inner_loops.jsonl", "lacks epoch 1 of the 3")
    packed.write_bytes(b"not gzip")
    refused(run, "inner_loops.jsonl.gz cannot be unpacked")


# An edit of config.gin (a binding the run set, or one it took from its default), and what
# the refusal must name.
EDITS = {
    "sigma": ("OpenES.sigma = 0.05", "0.1", "OpenES.sigma (0.05 when the run started, 0.1 now)"),
    "batch size K": ("Experiment.batch_size = 2", "4", "Experiment.batch_size (2 when"),
    "loss size": ("EPGLoss.hidden = 16", "8", "EPGLoss.hidden (16 when"),
    "default seed": ("Experiment.seed = 0", "1", "Experiment.seed (0 when"),
}


@pytest.mark.parametrize(("binding", "value", "name"), EDITS.values(), ids=EDITS.keys())
def test_an_edited_config_gin_is_refused_like_a_binding_and_nothing_is_rewritten(
    run, binding, value, name
):
    config = run / "config.gin"
    text = config.read_text()
    edited = f"{binding.split(' = ')[0]} = {value}"
    config.write_text(text.replace(binding, edited) if binding in text else f"{text}{edited}\n")
    assert "config.gin" in refused(run, "cannot change", name)


def test_a_different_phi_size_is_refused_even_without_the_recorded_config(run):
    # A run directory without operative_config.gin (nothing to compare bindings with) still
    # has its checkpoint's φ: a loss of another size cannot continue it.
    (run / "operative_config.gin").unlink()
    config = run / "config.gin"
    config.write_text(config.read_text().replace("EPGLoss.hidden = 16", "EPGLoss.hidden = 8"))
    refused(run, "checkpoint.pt holds a φ of 7,205 numbers", "6,581")


def test_another_strategy_is_refused_even_without_the_recorded_config(run):
    # Without operative_config.gin the strategy binding cannot be compared: the checkpoint's
    # state, OpenES's φ, m, v and step, is what SNES cannot read.
    (run / "operative_config.gin").unlink()
    config = run / "config.gin"
    text = config.read_text().replace("@OpenES()", "@SNES()")
    config.write_text(f"{text}\nSNES.population = 2\n")
    refused(run, "checkpoint.pt does not hold a state of SNES", "'sigma'")


def test_changing_the_strategy_by_a_binding_is_refused(run):
    before = snapshot(run)
    out = resume(run, "-b", "Experiment.epochs = 4", "-b", "Experiment.strategy = @SNES()")
    assert out.returncode == 2 and "Experiment.strategy" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and snapshot(run) == before


def test_a_run_without_the_recorded_config_still_resumes(run, runs):
    (run / "operative_config.gin").unlink()
    out = resume(run, "-b", "Experiment.epochs = 4")
    assert out.returncode == 0, out.stderr
    assert untimed(run) == untimed(runs["four"])


def test_resume_cannot_move_a_run_and_says_to_copy_it(run, tmp_path):
    before, elsewhere = snapshot(run), tmp_path / "elsewhere"
    out = resume(run, "--run-dir", str(elsewhere))
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "copy the directory and resume the copy" in line and "Traceback" not in line
    assert snapshot(run) == before and not elsewhere.exists()


def test_the_epoch_line_counts_the_time_of_the_epochs_before_the_resume(run):
    out = resume(run, "-b", "Experiment.epochs = 4")
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("epoch    4/4")]
    spent = sum(m["wall_s"] for m in RunDir(run).metrics())  # four epochs, three of them earlier
    assert line.endswith(f"({spent:5.0f} s total)"), line


def test_a_run_stopped_before_its_config_says_to_start_it_again_and_can_be(tmp_path):
    # What Ctrl-C leaves in the second before a run writes its config: the log and plots/.
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)
    (run / "log.txt").write_text("")
    before = snapshot(run)
    out = resume(run)
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "stopped before it wrote its config" in line and f"--run-dir {run}" in line, line
    assert snapshot(run) == before
    again = cli("evolve", "gin/quickstart.gin", "gin/debug.gin", "--run-dir", str(run),
                "--workers", "0")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert RunDir(run).is_run() and len(RunDir(run).metrics()) == 2


def test_a_misspelt_binding_on_resume_gets_gins_hint_rather_than_cannot_change(run):
    before = snapshot(run)
    out = resume(run, "-b", "OpenES.sigmaa = 3")
    assert out.returncode == 2, out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "doesn't have a parameter named 'sigmaa'" in line and "Did you mean sigma?" in line
    assert "cannot change" not in line and snapshot(run) == before
