"""Media with PyAV only (numpy + av; no torch, no ffmpeg binary), one module per job:

* :mod:`.probe`: metadata without decoding (beyond the first frame, for its display matrix) and the plan for a budget;
* :mod:`.video`: the planned frames of a video file, resized once in C and turned upright;
* :mod:`.targets`: which frames exact mode decodes, from the packet index alone (targets, seeks, segments);
* :mod:`.audio`: an audio stream as mono float32 at 16 kHz;
* :mod:`.frames`: image-sequence videos (a folder or a list of frames).

Times at this package's surface are float seconds from the start of the video stream. Time spans are half-open.
"""

from __future__ import annotations

from .audio import load_audio
from .frames import is_frame_sequence, load_frames, probe_frames
from .probe import MediaInfo, plan_probed_video, probe
from .video import RESIZE_INTERPOLATION, SEEK_MODES, LoadedVideo, SeekMode, load_video

__all__ = [
    "SEEK_MODES",
    "SeekMode",
    "RESIZE_INTERPOLATION",
    "MediaInfo",
    "LoadedVideo",
    "probe",
    "plan_probed_video",
    "load_video",
    "load_audio",
    "is_frame_sequence",
    "probe_frames",
    "load_frames",
]
