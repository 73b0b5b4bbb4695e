"""The omni-lmms command: plan (checked against the real processor), tasks-dir, doctor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import hostile_media as hm
import numpy as np
import pytest

from omni_lmms_plugin import synthetic_media as sm
from omni_lmms_plugin.budget import BLOCK_SPECIAL_TOKENS


def omni_lmms(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "omni_lmms_plugin.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "video, options, fps",
    [
        (dict(width=320, height=240, fps=30.0, duration=6.0), [], 2.0),
        (
            dict(width=640, height=360, fps=25.0, duration=30.0),
            ["--max-model-len", "4096", "--max-new-tokens", "64"],
            2.0,
        ),
        (dict(width=176, height=144, fps=24.0, duration=12.0, audio=False), ["--fps", "1"], 1.0),
    ],
)
def test_plan_json_total_equals_what_the_processor_produces(processor, tmp_path, video, options, fps):
    from omni_lmms_plugin.media import load_video

    path = sm.write_video(tmp_path / "clip.mp4", **video)
    result = omni_lmms("plan", str(path), "--json", *options)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    for key in (
        "frames",
        "frame_times",
        "height",
        "width",
        "sample_fps",
        "audio_seconds",
        "video_tokens",
        "audio_tokens",
        "total_tokens",
        "budget",
        "frame_indices",
        "frame_policy",
        "reference_fits",
        "reference_frames",
        "reference_height",
        "reference_width",
    ):
        assert key in plan, key
    assert plan["total_tokens"] <= plan["budget"] and len(plan["frame_times"]) == plan["frames"]

    from omni_lmms_plugin.budget import TokenBudget
    from omni_lmms_plugin.video_plan import VideoPolicy

    budget = TokenBudget(plan["max_model_len"], plan["prompt_tokens"], plan["max_new_tokens"])
    loaded = load_video(path, budget=budget, policy=VideoPolicy(fps=fps))
    assert loaded.plan.total_tokens == plan["total_tokens"]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    without_media = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) - 3
    kwargs = {
        "text": [text],
        "videos": [loaded.frames],
        "videos_kwargs": {"do_resize": False, "fps": loaded.sample_fps},
        "return_tensors": "pt",
    }
    if loaded.audio is not None:
        kwargs.update(audio=[loaded.audio], audio_from_video_indices=[0], load_audio_from_video=True)
    batch = processor(**kwargs)
    assert int(batch["input_ids"].shape[1]) - without_media == plan["total_tokens"]
    assert plan["total_tokens"] == plan["video_tokens"] + plan["audio_tokens"] + BLOCK_SPECIAL_TOKENS * (
        2 if plan["audio_tokens"] else 1
    )
    assert np.isclose(plan["sample_fps"], plan["frames"] / plan["source"]["duration"])


@pytest.mark.parametrize("make", ["missing", "text", "zero"])
def test_plan_of_an_unreadable_file_exits_2_with_one_line_naming_it(tmp_path, make):
    path = tmp_path / "bad.mp4"
    if make == "text":
        hm.write_text_as_video(path)
    elif make == "zero":
        hm.write_zero_byte_file(path)
    result = omni_lmms("plan", str(path), "--json")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], result.stderr


def test_plan_prints_a_readable_summary(tmp_path):
    path = sm.write_video(tmp_path / "long.mp4", width=320, height=240, fps=10.0, duration=20.0)
    result = omni_lmms("plan", str(path), "--max-video-tokens", "2000")
    assert result.returncode == 0, result.stderr
    assert "qwen policy" in result.stdout and "reference" in result.stdout and "of budget 2000" in result.stdout


def test_plan_of_a_frame_folder_names_the_images_size_and_the_size_they_are_stacked_at(tmp_path):
    """A frame folder is planned from the size the reference stacks its frames at (168x112 for 96x64 images: sides in
    56-pixel cells, within the image token limits); the plan says both, so the larger size is not a surprise. Catches
    (checked by hand): the header printing only the stacked size, failed."""
    from PIL import Image

    folder = tmp_path / "clip"
    folder.mkdir()
    for index in range(6):
        Image.fromarray(sm.marked_frame(index, width=96, height=64)).save(folder / f"frame_{index}.png")
    result = omni_lmms("plan", str(folder), "--frames-fps", "3")
    assert result.returncode == 0, result.stderr
    assert "96x64 images stacked at 168x112" in result.stdout.splitlines()[0], result.stdout
    source = json.loads(omni_lmms("plan", str(folder), "--json").stdout)["source"]
    assert (source["width"], source["height"], source["coded_width"], source["coded_height"]) == (168, 112, 96, 64)


def test_tasks_dir_is_the_folder_of_the_shipped_yamls():
    result = omni_lmms("tasks-dir")
    folder = Path(result.stdout.strip())
    assert result.returncode == 0 and (folder / "videomme").is_dir()
    assert list(folder.rglob("omni_*.yaml"))


def test_doctor_reports_the_registration_and_the_versions():
    result = omni_lmms("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for word in (
        "qwen2_5_omni_safe is registered",
        "transformers",
        "lmms_eval",
        "torch",
        "PyAV FFmpeg",
        "no problems found",
    ):
        assert word in result.stdout, word
