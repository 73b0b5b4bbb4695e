"""Image-sequence videos: a folder of frame images, or a list of frame paths, planned and decoded like a video file.

A sequence has no clock of its own: its rate is stated (a task's ``omni_frames_fps``, default 2.0 as in
qwen-omni-utils, whose frame lists are taken at ``sample_fps`` 2.0). Frame ``i`` is shown at ``i / rate`` seconds.

Pixels as qwen-omni-utils' ``fetch_video`` makes them from a list of frames: each image is read as ``fetch_image``
reads it (RGBA over white) and resized with PIL's bicubic to its own ``smart_resize`` size (each side rounded to a
multiple of 56, within the image token limits: see :func:`_stacked_size`); the stacked frames are then resized to the
video's size by the same float resize as a video file's (:mod:`.resize`). The video's size is planned from that
stacked size, as the reference plans it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..budget import GRID_PIXELS, IMAGE_MAX_PIXELS, IMAGE_MIN_PIXELS, Geometry, smart_grid
from ..config import ResizeChoice
from ..errors import ConfigError, MediaError
from ..video_plan import REFERENCE_FRAMES_FPS, VideoPlan
from .image import open_image, resize_image
from .probe import MediaInfo
from .resize import resize_rgb, resizing_on_this_thread
from .video import LoadedVideo

__all__ = ["FRAME_SUFFIXES", "is_frame_sequence", "frame_paths", "probe_frames", "load_frames"]

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

FrameSource = str | os.PathLike | Sequence[str | os.PathLike]

# fetch_video hands fetch_image its 28-pixel image factor as the patch size, which fetch_image multiplies by the
# spatial merge again (qwen-omni-utils 0.0.9): the frames of a list are rounded to multiples of 56, within its image
# token limits (4 to 16,384) counted in 56-pixel cells.
_STACKING = Geometry(patch_size=GRID_PIXELS)


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


def _stacked_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) ``fetch_image`` resizes a frame of this size to before the frames are stacked."""
    cell = _STACKING.grid_pixels
    tokens_to_pixels = cell**2 // GRID_PIXELS**2
    rows, cols = smart_grid(
        height, width, IMAGE_MIN_PIXELS * tokens_to_pixels, IMAGE_MAX_PIXELS * tokens_to_pixels, geometry=_STACKING
    )
    return cols * cell, rows * cell


def probe_frames(source: FrameSource, fps: float = REFERENCE_FRAMES_FPS) -> MediaInfo:
    """Metadata of an image-sequence video at ``fps`` frames per second; reads only the first image's header.
    ``width`` x ``height`` is the size the reference stacks the frames at (:func:`_stacked_size`), which its video
    size is planned from; ``coded_width`` x ``coded_height`` the images' own."""
    if not fps > 0:
        raise ConfigError(f"frames_fps={fps} must be positive")
    paths = frame_paths(source)
    try:
        with Image.open(paths[0]) as first:
            width, height = first.size
    except (OSError, ValueError) as error:
        raise MediaError(paths[0], f"cannot read the first frame of the image sequence: {error}") from error
    stacked_width, stacked_height = _stacked_size(width, height)
    return MediaInfo(
        path=str(source) if not isinstance(source, (list, tuple)) else os.path.dirname(paths[0]) or paths[0],
        format_name="image_sequence",
        size_bytes=sum(os.path.getsize(path) for path in paths),
        duration=len(paths) / fps,
        duration_source="frames_fps",
        has_video=True,
        has_audio=False,
        width=stacked_width,
        height=stacked_height,
        coded_width=width,
        coded_height=height,
        frame_rate=fps,
        frame_rate_source="frames_fps",
        total_frames=len(paths),
        total_frames_source="images",
        video_codec="images",
        frame_count_header=len(paths),
    )


def load_frames(source: FrameSource, plan: VideoPlan, *, resize: ResizeChoice = "reference") -> LoadedVideo:
    """The planned frames of an image sequence (``plan.frame_indices``), as RGB at the planned size, made as
    ``fetch_video`` makes a frame list's (see the module; ``resize`` is the last resize's precision, as for a video
    file). Raises :class:`MediaError` naming an unreadable frame."""
    started = time.monotonic()
    paths = frame_paths(source)
    if plan.total_frames != len(paths):
        raise MediaError(str(source), f"the plan counts {plan.total_frames} frames, the sequence has {len(paths)}")
    frames = np.empty((plan.frames, plan.height, plan.width, 3), dtype=np.uint8)
    with resizing_on_this_thread():  # one core's work, as a video's decoding segment (see .resize)
        for slot, index in enumerate(plan.frame_indices):
            image = open_image(paths[index])
            stacked = resize_image(image, *_stacked_size(*image.size))
            resize_rgb(np.array(stacked), frames[slot], resize)
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
