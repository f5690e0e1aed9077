"""The benchmark scripts run with tiny settings and end with their ratio line (no timing)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"(\d+\.\d+|nan)"


def run(script: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


def test_inner_loop_benchmark_prints_its_rates_and_ratios():
    lines = run("inner_loop.py")
    assert lines[0].startswith("settings: K=2")
    assert any(line.startswith("gymnasium Hopper-v5, random actions: ") for line in lines)
    assert any("epgkit inner loop, K=2 lockstep, alpha=0.5" in line for line in lines)
    assert re.fullmatch(
        rf"inner_loop_vs_gymnasium_random={NUMBER} inner_loop_vs_sb3_ppo={NUMBER}", lines[-1]
    )


@pytest.mark.filterwarnings("ignore")
def test_es_scaling_benchmark_prints_speedup_and_memory():
    lines = run("es_scaling.py")
    assert lines[0].startswith("settings: epgkit/RandomHopper-v0")
    assert lines[1].startswith("1 worker: epoch ") and lines[2].startswith("2 workers: epoch ")
    assert re.fullmatch(rf"speedup_2_workers={NUMBER} worker_peak_rss_mb=\d+", lines[-1])


def test_ppo_reference_benchmark_compares_epgkit_ppo_with_sb3():
    lines = run("ppo_reference.py")
    assert lines[0].startswith("Hopper-v5, 2,048 env steps per run")
    assert any(line.startswith("epgkit PPO, sb3-like") for line in lines)
    assert re.fullmatch(rf"best_epgkit_ppo={NUMBER} sb3_ppo={NUMBER}", lines[-1])
