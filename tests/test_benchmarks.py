"""The loader benchmark runs end to end on small clips (``--quick``) and checks its own targets; the full 10-minute
720p tables are ``python benchmarks/loader.py`` (README, Measured results)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_loader_benchmark(cache: Path, *args: str) -> str:
    """``benchmarks/loader.py --quick`` with ``args``, videos cached in ``cache``: its output, once it exited 0 and
    printed no failed row."""
    command = [sys.executable, str(BENCHMARKS / "loader.py"), "--quick", "--cache", str(cache), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "failed" not in result.stdout, result.stdout
    return result.stdout


def test_the_loader_benchmark_runs_and_reports_its_targets(tmp_path):
    """Both encodings, one and two workers, our loaders against the seek-per-target and sequential sketches and
    lmms-eval's reader, each in its own process. Catches: a loader the benchmark can no longer call, a table without
    its target lines, exact mode much slower than sequential decoding (exit status 1; checked by hand: with 0.3 s of
    sleep added to ``load_video`` the benchmark remeasured, still found it slower, and this failed).

    The margin here is 50%, not the full benchmark's 10%: on these 1-minute clips 64 targets lie 28 frames apart, so
    exact mode decodes nearly every frame (a tie with sequential decoding at best), and a 0.35 s load in a fresh
    process varies by more than 10% on a shared 2-core VM: with a 10% margin this failed in two of three runs (exact
    mode's fastest of 3 was 0.38 s and 0.43 s against sequential's 0.35 s)."""
    output = run_loader_benchmark(
        tmp_path,
        *("--frames", "64", "--workers", "1", "2", "--slower-margin", "0.5"),
        *("--loaders", "ours-exact", "ours-keyframe", "pyav-seek", "pyav-sequential", "lmms-eval"),
    )
    for encoding in ("quick_360p30_gop2s", "quick_360p30_realistic_gop10s"):
        assert encoding in output
    assert output.count("target: exact (2 workers)") == 8  # lmms-eval and pyav-seek, for each of 4 videos
    assert output.count("keyframe (2 workers) >= 15x") == 2  # the 10 s GOP videos


def test_the_scaling_benchmark_prints_the_scaling_and_segment_balance_tables(tmp_path):
    """``--scaling`` on the quick clips: the per-core table for our loaders and the segment balance table (from the
    packet index). Catches: a loader or a packet-index helper the benchmark can no longer call (checked by hand:
    with a helper renamed, the benchmark exited 1 and this failed)."""
    output = run_loader_benchmark(tmp_path, "--scaling", "--frames", "64", "--encodings", "fast")
    assert "per-core scaling" in output and "costliest segment" in output
    balance_rows = [
        line for line in output.splitlines() if line.startswith("| quick_360p30_") and "segment" not in line
    ]
    assert sum(line.count("|") == 8 for line in balance_rows) == 2 * 4  # 2 videos x 2, 4, 8, 16 segments
