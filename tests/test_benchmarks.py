"""The loader benchmark runs end to end on small clips (``--quick``) and checks its own targets; the full 10-minute
720p tables are ``python benchmarks/loader.py`` (README, Measured results)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_the_loader_benchmark_runs_and_reports_its_targets(tmp_path):
    """Both encodings, one and two workers, our loaders against the seek-per-target and sequential sketches and
    lmms-eval's reader, each in its own process. Catches: a loader the benchmark can no longer call, a table without
    its target lines, exact mode more than 10% slower than sequential decoding (exit status 1; checked by hand: with
    0.3 s of sleep added to ``load_video`` the benchmark remeasured, still found it slower, and this failed)."""
    command = [
        sys.executable,
        str(BENCHMARKS / "loader.py"),
        "--quick",
        "--cache",
        str(tmp_path),
        "--frames",
        "64",
        "--workers",
        "1",
        "2",
        "--loaders",
        "ours-exact",
        "ours-keyframe",
        "pyav-seek",
        "pyav-sequential",
        "lmms-eval",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout, result.stdout
    for encoding in ("quick_360p30_gop2s", "quick_360p30_realistic_gop10s"):
        assert encoding in result.stdout
    assert result.stdout.count("target: exact (2 workers)") == 8  # lmms-eval and pyav-seek, for each of 4 videos
    assert result.stdout.count("keyframe (2 workers) >= 15x") == 2  # the 10 s GOP videos


def test_the_scaling_benchmark_prints_the_scaling_and_segment_balance_tables(tmp_path):
    """``--scaling`` on the quick clips: the per-core table for our loaders and the segment balance table (from the
    packet index). Catches: a loader or a packet-index helper the benchmark can no longer call (a failed row, or no
    balance rows)."""
    command = [
        sys.executable,
        str(BENCHMARKS / "loader.py"),
        "--scaling",
        "--quick",
        "--cache",
        str(tmp_path),
        "--frames",
        "64",
        "--encodings",
        "fast",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout, result.stdout
    assert "per-core scaling" in result.stdout and "costliest segment" in result.stdout
    balance_rows = [line for line in result.stdout.splitlines() if line.startswith("| quick_360p30_") and "x |" in line]
    assert len(balance_rows) >= 2 * 4 + 2 * 2  # 2 videos x 4 segment counts, and the scaling rows
