"""The memory estimate against the traced live bytes of the real thinker (real widths, two layers per stack, under
FakeTensorMode), and the GPU script's dry run. ``python benchmarks/memory_trace.py`` is the full-depth 7B/3B table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def memory_trace():
    spec = importlib.util.spec_from_file_location("memory_trace", BENCHMARKS / "memory_trace.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_the_estimate_stays_within_10_percent_of_the_trace(memory_trace):
    """7B and 3B widths (two layers per stack), with and without audio-in-video: a 10k-token video in two vision
    groups with the plugin's settings, a 4k-token one with the stock settings (eager, full logits): the peak and every stage (audio tower, vision tower, prefill, decode)
    are within 10% of the traced live bytes. Breaking the estimator's vision term (dropping the float32 rotary
    temporaries, ``6 * 4`` bytes per width in ``per_patch``) makes this fail (vision stage ratio 0.37)."""
    models = ("7B", "3B")
    rows = memory_trace.run_grid(models, sequences=(10_000,), layers=2, settings=(False,))
    rows += memory_trace.run_grid(models, sequences=(4096,), layers=2, settings=(True,))
    assert len(rows) == 8
    for row in rows:
        case = f"{row['model']} stock={row['stock']} audio={row['audio_in_video']} L={row['sequence_length']}"
        assert 0.9 <= row["ratio"] <= 1.1, f"{case}: estimate/trace {row['ratio']}"
        assert set(row["stage_ratios"]) >= {"vision_stage", "prefill", "decode"}
        for stage, ratio in row["stage_ratios"].items():
            assert 0.9 <= ratio <= 1.1, f"{case}: {stage} estimate/trace {ratio}"


def test_one_block_of_each_kind_traces_the_towers_peak(memory_trace):
    """The shortcut that makes the full table fast (each tower run with one block of each kind, the others' weights
    kept alive) traces the same bytes as running every block. Breaking it (``audio.layers`` emptied instead of cut to
    one layer) makes this fail."""
    case = memory_trace.Case("7B", 1300, audio_in_video=True, stock=False)
    with memory_trace.fake_thinker_mode():
        thinker = memory_trace.build_thinker("7B", stock=False, layers=3)
        every_block = memory_trace.trace_case(thinker, case, all_blocks=True)
        shortcut = memory_trace.trace_case(thinker, case)
    assert shortcut == every_block
    assert every_block["audio_stage"] > every_block["weights"]


def test_gpu_script_dry_run_runs_every_step_on_the_cpu(tmp_path, tiny_7b):
    """``benchmarks/gpu_memory.py --dry-run``: the grid through ``run_request``, a random-weight checkpoint saved and
    loaded by the adapter, one answered request, RESULTS.md written (and marked as no GPU numbers)."""
    out = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_memory.py"), "--dry-run", "--models", "7B", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text()
    assert "CPU dry run (no GPU numbers)" in text
    assert '"answered": true' in text
    assert text.count("| 7B |") == 4  # plugin and stock, with and without audio
