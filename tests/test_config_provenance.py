"""Model args, task overrides and the provenance journal, without a model."""

from __future__ import annotations

import json

import pytest

from omni_lmms_plugin.config import AdapterConfig, split_generation_kwargs
from omni_lmms_plugin.errors import ConfigError
from omni_lmms_plugin.provenance import ProvenanceWriter, SampleRecord, default_provenance_dir, read_records


def record(doc_id: int, status: str = "answered") -> SampleRecord:
    return SampleRecord(
        task="t", doc_id=doc_id, split="test", request_key=f"r{doc_id}", config_key="c", status=status,
        answer="A", failure=None, media=[], tokens={"input": 10}, attempts=[], attention="sdpa",
        peak_memory_bytes=None, estimated_peak_bytes=None, wall_seconds=0.1, media_wait_seconds=0.0, input_hash="h",
    )  # fmt: skip


def test_model_args_are_typed_and_checked():
    config = AdapterConfig.from_model_args(
        {"fps": "1", "resume": "False", "max_video_tokens": "None", "batch_size": "auto:4"}
    )
    assert config.fps == 1.0 and config.resume is False and config.max_video_tokens is None and config.batch_size == 1
    with pytest.raises(ConfigError, match="on_failure='maybe' is not one of record, raise"):
        AdapterConfig.from_model_args({"on_failure": "maybe"})
    with pytest.raises(ConfigError, match="oom_shrink"):
        AdapterConfig(oom_shrink=1.5)


def test_task_overrides_never_reach_generate_and_may_raise_min_frames_past_the_floor():
    generation, overrides = split_generation_kwargs({"max_new_tokens": 8, "omni_min_frames": 200, "omni_fps": 1})
    assert generation == {"max_new_tokens": 8}
    policy = AdapterConfig().video_policy(overrides)
    assert policy.min_frames == 200 and policy.frame_floor == 200 and policy.fps == 1.0
    with pytest.raises(ConfigError, match="omni_frames"):
        split_generation_kwargs({"omni_frames": 3})


def test_the_journal_survives_a_line_cut_short_by_a_killed_process(tmp_path):
    writer = ProvenanceWriter(tmp_path, 0)
    writer.write(record(0))
    with open(writer.samples_path, "a") as handle:
        handle.write(record(1).to_json()[:40])  # killed mid-write
    resumed = ProvenanceWriter(tmp_path, 0)
    assert resumed.finished("c", "r0") is not None and resumed.finished("c", "r1") is None
    resumed.write(record(1))
    assert [r.doc_id for r in read_records([writer.samples_path])] == [0, 1]


def test_failed_samples_are_not_served_on_resume(tmp_path):
    writer = ProvenanceWriter(tmp_path, 0)
    writer.write(record(0, status="failed"))
    assert ProvenanceWriter(tmp_path, 0).finished("c", "r0") is None


def test_provenance_goes_beside_lmms_eval_output():
    assert str(default_provenance_dir(["lmms-eval", "--output_path", "runs/x"])) == "runs/x/omni_provenance"
    assert str(default_provenance_dir(["lmms-eval", "--output_path=runs/y"])) == "runs/y/omni_provenance"
    assert str(default_provenance_dir(["python"])) == "omni_provenance"
    assert json.loads(record(3).to_json())["doc_id"] == 3
