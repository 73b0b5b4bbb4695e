"""Image-sequence videos: a folder of frame images, or a list of frame paths, planned and decoded like a video file.

A sequence has no clock of its own: its rate is stated (a task's ``omni_frames_fps``, default 2.0 as in
qwen-omni-utils, whose frame lists are taken at ``sample_fps`` 2.0). Frame ``i`` is shown at ``i / rate`` seconds.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ConfigError, MediaError
from ..video_plan import REFERENCE_FRAMES_FPS, VideoPlan
from .probe import MediaInfo
from .video import LoadedVideo

__all__ = ["FRAME_SUFFIXES", "is_frame_sequence", "frame_paths", "probe_frames", "load_frames"]

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

FrameSource = str | os.PathLike | Sequence[str | os.PathLike]


def is_frame_sequence(source: object) -> bool:
    """A folder, or a list or tuple of paths: what this module reads."""
    return isinstance(source, (list, tuple)) or (isinstance(source, (str, os.PathLike)) and os.path.isdir(source))


def _natural_key(name: str) -> list:
    """``frame_2`` before ``frame_10``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_paths(source: FrameSource) -> list[str]:
    """The frames of a sequence in display order: a folder's image files sorted naturally by name, or a list as
    given. Raises :class:`MediaError` when there are none."""
    if isinstance(source, (list, tuple)):
        paths = [os.fspath(path) for path in source]
        label = f"list of {len(paths)} frames"
    else:
        folder = Path(source)
        paths = sorted(
            (str(path) for path in folder.iterdir() if path.suffix.lower() in FRAME_SUFFIXES),
            key=lambda path: _natural_key(os.path.basename(path)),
        )
        label = str(folder)
    if not paths:
        raise MediaError(label, f"no frame images ({', '.join(FRAME_SUFFIXES)}) in this image-sequence video")
    return paths


def probe_frames(source: FrameSource, fps: float = REFERENCE_FRAMES_FPS) -> MediaInfo:
    """Metadata of an image-sequence video at ``fps`` frames per second; reads only the first image's header."""
    if not fps > 0:
        raise ConfigError(f"frames_fps={fps} must be positive")
    paths = frame_paths(source)
    try:
        with Image.open(paths[0]) as first:
            width, height = first.size
    except (OSError, ValueError) as error:
        raise MediaError(paths[0], f"cannot read the first frame of the image sequence: {error}") from error
    return MediaInfo(
        path=str(source) if not isinstance(source, (list, tuple)) else os.path.dirname(paths[0]) or paths[0],
        format_name="image_sequence",
        size_bytes=sum(os.path.getsize(path) for path in paths),
        duration=len(paths) / fps,
        duration_source="frames_fps",
        has_video=True,
        has_audio=False,
        width=width,
        height=height,
        coded_width=width,
        coded_height=height,
        frame_rate=fps,
        frame_rate_source="frames_fps",
        total_frames=len(paths),
        total_frames_source="images",
        video_codec="images",
        frame_count_header=len(paths),
    )


def load_frames(source: FrameSource, plan: VideoPlan) -> LoadedVideo:
    """The planned frames of an image sequence (``plan.frame_indices``), as RGB, resized with PIL's bicubic filter to
    the planned size. Raises :class:`MediaError` naming an unreadable frame."""
    started = time.monotonic()
    paths = frame_paths(source)
    if plan.total_frames != len(paths):
        raise MediaError(str(source), f"the plan counts {plan.total_frames} frames, the sequence has {len(paths)}")
    frames = np.empty((plan.frames, plan.height, plan.width, 3), dtype=np.uint8)
    for slot, index in enumerate(plan.frame_indices):
        try:
            with Image.open(paths[index]) as image:
                rgb = image.convert("RGB").resize((plan.width, plan.height), Image.Resampling.BICUBIC)
        except (OSError, ValueError) as error:
            raise MediaError(paths[index], f"unreadable frame image: {error}") from error
        frames[slot] = np.asarray(rgb)
    return LoadedVideo(
        path=str(source) if not isinstance(source, (list, tuple)) else paths[0],
        frames=frames,
        audio=None,
        sample_fps=plan.sample_fps,
        plan=plan,
        frame_times=plan.frame_times,
        decode_seconds=time.monotonic() - started,
        decoded_frames=plan.frames,
    )
