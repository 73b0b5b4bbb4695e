"""Mini copies of the video benchmarks our task YAMLs read, laid out so lmms-eval loads them offline, unchanged.

:func:`build_hf_home` writes, under one folder used as ``$HF_HOME``:

* each benchmark's table in the Hugging Face ``datasets`` cache
  (``datasets/<namespace>___<name>/<config>/0.0.0/<hash>/``, Arrow + ``dataset_info.json``), with the real field
  names and types. With ``HF_HUB_OFFLINE=1`` ``datasets.load_dataset("<hub id>", "<config>", revision=...)`` cannot
  reach the hub and falls back to this cache, so the shipped YAMLs run as they are: same ``dataset_path``,
  ``dataset_name``, split, ``dataset_kwargs`` (revision included);
* the videos and side files (Vinoground's score tables, Video-MME's subtitles) in each benchmark's
  ``dataset_kwargs.cache_dir`` under ``$HF_HOME``, where the built-in tasks expect them. lmms-eval downloads nothing
  when that folder exists.

Each benchmark has 2-3 docs. Some are built to exercise the tasks' edge cases: Video-MME videos with ``.MP4`` and
``.mkv`` suffixes and one subtitle file; a WorldSense doc whose video is missing (the adapter must fail that sample
and the task must count it in ``omni_failed``); a VideoMMMU open-ended question and the question-only clips; a
Vinoground run holding one complete text pair and half a video pair; LongVideoBench subtitles in both JSON forms; the
EgoSchema full test with its answers hidden.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets.arrow_writer import ArrowWriter
from datasets.naming import camelcase_to_snakecase

__all__ = ["Benchmark", "BENCHMARKS", "MISSING_VIDEOS", "build_hf_home", "offline_env"]

# Small and short: the processor upscales frames to Qwen's minimum anyway; what matters is that they decode.
VIDEO = {"width": 128, "height": 96, "fps": 8.0, "duration": 2.0}


def _write_video(path: Path, *, audio: bool = True) -> None:
    from omni_lmms_plugin.synthetic_media import write_video

    write_video(path, audio=audio, **VIDEO)


@dataclass(frozen=True)
class Benchmark:
    """One mini-dataset: where ``load_dataset`` finds it, its rows and features, and how to lay out its media."""

    repo_id: str
    config: str | None
    split: str
    features: datasets.Features
    rows: list[dict[str, Any]]
    media: Callable[[Path], None] = field(repr=False)


def _strings(*names: str) -> dict[str, datasets.Value]:
    return {name: datasets.Value("string") for name in names}


STRINGS = datasets.Sequence(datasets.Value("string"))

# ----------------------------------------------------------------------------------------------------------------------
# VideoMMMU: lmms-eval/VideoMMMU, configs Perception / Comprehension / Adaptation, split test.
# Videos: $HF_HOME/video_mmmu/<discipline folder>/<id>.mp4
# ----------------------------------------------------------------------------------------------------------------------

_VIDEOMMMU_FEATURES = datasets.Features(
    {**_strings("id", "question"), "options": STRINGS, **_strings("answer", "question_type")}
)


def _videommmu_rows(track: str) -> list[dict[str, Any]]:
    rows = [
        {
            "id": f"{track.lower()}_Math_3",
            "question": "What is the derivative of x^2 at x = 1?",
            "options": ["0", "1", "2", "4"],
            "answer": "C",
            "question_type": "multiple-choice",
        },
        {
            "id": f"{track.lower()}_Computer_Science_12",
            "question": "Which data structure gives O(1) average lookup?",
            "options": ["A. Linked list", "B. Hash table", "C. Binary heap", "D. Stack"],
            "answer": "B",
            "question_type": "multiple-choice",
        },
    ]
    if track == "Adaptation":
        rows.append(
            {
                "id": "adaptation_Art_Theory_7",
                "question": "How many vanishing points does the drawing use? <image 1>",
                "options": [],
                "answer": "2",
                "question_type": "open",
            }
        )
    return rows


_VIDEOMMMU_FOLDER = {"Math": "Science", "Computer_Science": "Engineering", "Art_Theory": "Art"}


def _videommmu_media(home: Path) -> None:
    for track in ("Perception", "Comprehension", "Adaptation"):
        for row in _videommmu_rows(track):
            subject = "_".join(row["id"].split("_")[1:-1])
            _write_video(home / "video_mmmu" / _VIDEOMMMU_FOLDER[subject] / f"{row['id']}.mp4")
    for row in _videommmu_rows("Adaptation"):  # the question image alone, for the question-only run
        _write_video(home / "video_mmmu" / "question_only" / f"{row['id']}_image.mp4", audio=False)


# ----------------------------------------------------------------------------------------------------------------------
# Vinoground: HanSolo9682/Vinoground, split lmmseval; score tables and videos in $HF_HOME/vinoground/.
# ----------------------------------------------------------------------------------------------------------------------

_VINOGROUND_ROWS = [
    {"index": "0_pos_text", "major": "action", "minor": "interaction;cyclical"},
    {"index": "0_neg_text", "major": "action", "minor": "interaction;cyclical"},
    {"index": "0_pos_video", "major": "action", "minor": None},
]


def _vinoground_media(home: Path) -> None:
    root = home / "vinoground"
    question = 'Which caption matches the video? A. "a man sits, then stands" B. "a man stands, then sits"'
    tables = {
        "text": ("vinoground_videos", "vinoground_textscore.json", ["A", "B"]),
        "video": ("vinoground_videos_concated", "vinoground_videoscore.json", ["B", "A"]),
    }
    for folder, name, truths in tables.values():
        entries = []
        for side, truth in zip(("pos", "neg"), truths, strict=True):
            video_name = f"{folder}/0_{side}.mp4"
            _write_video(root / video_name, audio=False)
            entries.append({"idx": f"0_{side}", "video_name": video_name, "question": question, "GT": truth})
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text(json.dumps(entries), encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------------
# Video-MME: lmms-eval/Video-MME, split test; $HF_HOME/videomme/data/<videoID>.{mp4,MP4,mkv}, subtitle/<videoID>.srt
# ----------------------------------------------------------------------------------------------------------------------

_VIDEOMME_FEATURES = datasets.Features(
    {
        **_strings("video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id", "task_type"),
        "question": datasets.Value("string"),
        "options": STRINGS,
        "answer": datasets.Value("string"),
    }
)
_VIDEOMME_VIDEOS = {"fFjv93ACGo8": ".mp4", "Ab3cDeFgHiJ": ".MP4", "zZ9yX8wV7uT": ".mkv"}
_VIDEOMME_ROWS = [
    {
        "video_id": f"{i + 1:03d}",
        "duration": duration,
        "domain": "Knowledge",
        "sub_category": "Humanity & History",
        "url": f"https://www.youtube.com/watch?v={video}",
        "videoID": video,
        "question_id": f"{i + 1:03d}-1",
        "task_type": "Counting Problem",
        "question": "How many people appear in the video?",
        "options": ["A. One.", "B. Two.", "C. Three.", "D. Four."],
        "answer": "B",
    }
    for i, (video, duration) in enumerate(zip(_VIDEOMME_VIDEOS, ("short", "medium", "long"), strict=True))
]
_SRT = """1
00:00:00,000 --> 00:00:01,000
<font color="white" size=".72c">Welcome to the history lesson.</font>

2
00:00:01,000 --> 00:00:02,000
<font color="white" size=".72c">Two people will join us.</font>
"""


def _videomme_media(home: Path) -> None:
    for video, suffix in _VIDEOMME_VIDEOS.items():
        _write_video(home / "videomme" / "data" / f"{video}{suffix}")
    (home / "videomme" / "subtitle").mkdir(parents=True, exist_ok=True)
    (home / "videomme" / "subtitle" / "fFjv93ACGo8.srt").write_text(_SRT, encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------------
# WorldSense: lmms-lab/worldsense, split test; $HF_HOME/WorldSense/<video_path>. The third video is missing on purpose.
# ----------------------------------------------------------------------------------------------------------------------

_WORLDSENSE_FEATURES = datasets.Features(
    {
        **_strings("index", "video_path", "subtitle_path", "question"),
        "candidates": STRINGS,
        **_strings("answer", "task_type", "task_domain", "duration"),
        "audio_class": STRINGS,
    }
)
_WORLDSENSE_ROWS = [
    {
        "index": f"ws_{i}",
        "video_path": f"videos/clip_{i}.mp4",
        "subtitle_path": f"subtitles/clip_{i}.srt",
        "question": "What sound is heard while the screen changes?",
        "candidates": ["A. A bell.", "B. A steady tone.", "C. Speech.", "D. Silence."],
        "answer": "B",
        "task_type": "Audio Recognition",
        "task_domain": "Tech & Science",
        "duration": "<1min",
        "audio_class": ["Event"] if i else ["Speech", "Event"],
    }
    for i in range(3)
]
MISSING_VIDEOS = {"omni_worldsense": 1}


def _worldsense_media(home: Path) -> None:
    for row in _WORLDSENSE_ROWS[:2]:
        _write_video(home / "WorldSense" / row["video_path"])


# ----------------------------------------------------------------------------------------------------------------------
# MVBench: OpenGVLab/MVBench (revision "video"), one config per sub-task, split train;
# $HF_HOME/mvbench_video/<source folder>/<video>. One doc per sub-task, so the whole group runs.
# ----------------------------------------------------------------------------------------------------------------------

_MVBENCH_FEATURES = datasets.Features(
    {**_strings("video", "question"), "candidates": STRINGS, "answer": datasets.Value("string")}
)


def _mvbench_folders() -> dict[str, str]:
    from lmms_eval.tasks.mvbench.utils import DATA_LIST

    return dict(DATA_LIST)


MVBENCH_SUBTASKS = (
    "action_sequence",
    "moving_count",
    "action_prediction",
    "episodic_reasoning",
    "action_antonym",
    "action_count",
    "scene_transition",
    "object_shuffle",
    "object_existence",
    "fine_grained_pose",
    "unexpected_action",
    "moving_direction",
    "state_change",
    "object_interaction",
    "character_order",
    "action_localization",
    "counterfactual_inference",
    "fine_grained_action",
    "moving_attribute",
    "egocentric_navigation",
)


def _mvbench_rows(subtask: str) -> list[dict[str, Any]]:
    # episodic_reasoning's videos are folders of 3 fps frame images (TVQA), as in the real dataset.
    video = f"{subtask}_0001" if subtask == "episodic_reasoning" else f"{subtask}_0001.mp4"
    return [
        {
            "video": video,
            "question": "What does the person do after opening the door?",
            "candidates": ["Sits down.", "Walks out.", "Closes the door."],
            "answer": "Walks out.",
        }
    ]


def _mvbench_media(home: Path) -> None:
    folders = _mvbench_folders()
    for subtask in MVBENCH_SUBTASKS:
        for row in _mvbench_rows(subtask):
            target = home / "mvbench_video" / folders[subtask] / row["video"]
            if subtask == "episodic_reasoning":
                _write_frame_folder(target, frames=18)
            else:
                _write_video(target, audio=False)


def _write_frame_folder(folder: Path, *, frames: int) -> None:
    from PIL import Image

    from omni_lmms_plugin.synthetic_media import marked_frame

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(frames):
        Image.fromarray(marked_frame(index, width=160, height=120)).save(folder / f"{index + 1:05d}.jpg")


# ----------------------------------------------------------------------------------------------------------------------
# LongVideoBench: longvideobench/LongVideoBench, split validation; $HF_HOME/datasets/longvideobench/videos/<video_path>
# ----------------------------------------------------------------------------------------------------------------------

_LVB_FEATURES = datasets.Features(
    {
        **_strings("video_id", "id", "video_path", "subtitle_path", "question"),
        **{f"option{i}": datasets.Value("string") for i in range(5)},
        "correct_choice": datasets.Value("int64"),
        "duration_group": datasets.Value("int64"),
        "question_category": datasets.Value("string"),
        "duration": datasets.Value("float64"),
        "starting_timestamp_for_subtitles": datasets.Value("float64"),
    }
)
_LVB_ROWS = [
    {
        "video_id": f"lvb{i}",
        "id": f"lvb{i}_0",
        "video_path": f"lvb{i}.mp4",
        "subtitle_path": f"lvb{i}_en.json",
        "question": "What colour is the square when the tone starts?",
        "option0": "Red",
        "option1": "Green",
        "option2": "Blue",
        "option3": "Yellow" if i else "N/A",
        "option4": "N/A",
        "correct_choice": 1,
        "duration_group": 15,
        "question_category": "S2E",
        "duration": 2.0,
        "starting_timestamp_for_subtitles": 0.0,
    }
    for i in range(2)
]


# Both subtitle JSON forms the reference reads: [start, end] timestamps and clock strings.
LVB_SUBTITLES = [
    [{"timestamp": [0.0, 0.9], "text": "The square is red."}, {"timestamp": [1.0, None], "text": "Now a tone."}],
    [{"start": "00:00:00.2", "end": "00:00:01.5", "line": "A green square appears."}],
]


def _lvb_media(home: Path) -> None:
    root = home / "datasets" / "longvideobench"
    (root / "subtitles").mkdir(parents=True, exist_ok=True)
    for row, subtitles in zip(_LVB_ROWS, LVB_SUBTITLES, strict=True):
        _write_video(root / "videos" / row["video_path"], audio=False)
        (root / "subtitles" / row["subtitle_path"]).write_text(json.dumps(subtitles), encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------------
# EgoSchema Subset: lmms-eval/egoschema config Subset, split test; $HF_HOME/egoschema/videos/<video_idx>.{mp4,MP4}
# ----------------------------------------------------------------------------------------------------------------------

_EGOSCHEMA_FEATURES = datasets.Features(
    {**_strings("question_idx", "question", "video_idx"), "option": STRINGS, "answer": datasets.Value("string")}
)
_EGOSCHEMA_ROWS = [
    {
        "question_idx": str(i),
        "question": "What is the overall goal of c's actions in the video?",
        "video_idx": video,
        "option": [
            "A. c is cooking.",
            "B. c is cleaning.",
            "C. c is painting.",
            "D. c is reading.",
            "E. c is gardening.",
        ],
        "answer": "1",
    }
    for i, video in enumerate(("001934bb-81bd-4cd8-a574-0472ef3f6678", "00b9a0de-c59e-49cb-a127-6081e2fb8c8e"))
]


# The full test (config GENERATION): answers hidden, as on the hub. Its videos are the Subset's.
EGOSCHEMA_TEST_ROWS = [{**row, "question_idx": str(i + 10), "answer": ""} for i, row in enumerate(_EGOSCHEMA_ROWS)]


def _egoschema_media(home: Path) -> None:
    for row, suffix in zip(_EGOSCHEMA_ROWS, (".mp4", ".MP4"), strict=True):
        _write_video(home / "egoschema" / "videos" / f"{row['video_idx']}{suffix}", audio=False)


def _none(home: Path) -> None:
    return None


# The task(s) each table serves, keyed by the name the tests use.
BENCHMARKS: dict[str, list[Benchmark]] = {
    "omni_videommmu": [
        Benchmark(
            "lmms-eval/VideoMMMU",
            track,
            "test",
            _VIDEOMMMU_FEATURES,
            _videommmu_rows(track),
            _videommmu_media if track == "Perception" else _none,
        )
        for track in ("Perception", "Comprehension", "Adaptation")
    ],
    "omni_vinoground": [
        Benchmark(
            "HanSolo9682/Vinoground",
            None,
            "lmmseval",
            datasets.Features(_strings("index", "major", "minor")),
            _VINOGROUND_ROWS,
            _vinoground_media,
        )
    ],
    "omni_videomme": [
        Benchmark("lmms-eval/Video-MME", None, "test", _VIDEOMME_FEATURES, _VIDEOMME_ROWS, _videomme_media)
    ],
    "omni_worldsense": [
        Benchmark("lmms-lab/worldsense", None, "test", _WORLDSENSE_FEATURES, _WORLDSENSE_ROWS, _worldsense_media)
    ],
    "omni_mvbench": [
        Benchmark(
            "OpenGVLab/MVBench",
            subtask,
            "train",
            _MVBENCH_FEATURES,
            _mvbench_rows(subtask),
            _mvbench_media if subtask == MVBENCH_SUBTASKS[0] else _none,
        )
        for subtask in MVBENCH_SUBTASKS
    ],
    "omni_longvideobench_val_v": [
        Benchmark("longvideobench/LongVideoBench", None, "validation", _LVB_FEATURES, _LVB_ROWS, _lvb_media)
    ],
    "omni_egoschema_subset": [
        Benchmark("lmms-eval/egoschema", "Subset", "test", _EGOSCHEMA_FEATURES, _EGOSCHEMA_ROWS, _egoschema_media)
    ],
    "omni_egoschema": [
        Benchmark(
            "lmms-eval/egoschema", "GENERATION", "test", _EGOSCHEMA_FEATURES, EGOSCHEMA_TEST_ROWS, _egoschema_media
        )
    ],
}


def _write_cached_table(cache: Path, bench: Benchmark) -> Path:
    """Write ``bench``'s rows where ``datasets``' offline fallback (``packaged_modules.cache``) looks for them."""
    namespace, name = bench.repo_id.split("/")
    dataset_name = camelcase_to_snakecase(name)
    config = bench.config or "default"
    folder = cache / f"{namespace}___{dataset_name}" / config / "0.0.0" / "omnimini"
    folder.mkdir(parents=True, exist_ok=True)
    with ArrowWriter(features=bench.features, path=str(folder / f"{dataset_name}-{bench.split}.arrow")) as writer:
        for row in bench.rows:
            writer.write(bench.features.encode_example(row))
        count, size = writer.finalize()
    split = datasets.SplitInfo(name=bench.split, num_bytes=size, num_examples=count, dataset_name=dataset_name)
    info = datasets.DatasetInfo(
        features=bench.features,
        config_name=config,
        dataset_name=dataset_name,
        splits=datasets.SplitDict({bench.split: split}, dataset_name=dataset_name),
    )
    info.write_to_directory(str(folder))
    return folder


def build_hf_home(home: str | os.PathLike, names: list[str] | None = None) -> Path:
    """Lay out the mini-datasets of ``names`` (default: all of :data:`BENCHMARKS`) under ``home`` used as
    ``$HF_HOME``; the datasets cache is ``home/datasets`` (lmms-eval's default under ``$HF_HOME``)."""
    home = Path(home)
    for name in names or list(BENCHMARKS):
        for bench in BENCHMARKS[name]:
            _write_cached_table(home / "datasets", bench)
            bench.media(home)
    return home


def offline_env(home: str | os.PathLike, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment where lmms-eval reads ``home`` as ``$HF_HOME`` and never reaches the hub."""
    env = dict(os.environ if base is None else base)
    for key in ("HF_DATASETS_CACHE", "LMMS_EVAL_DATASETS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(key, None)
    env.update(
        HF_HOME=str(home),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env
