"""Media with PyAV (numpy + av, no ffmpeg binary; torch only for resizing kept frames), one module per job:

* :mod:`.probe`: metadata without decoding (beyond the first frame, for its display matrix) and the plan for a budget;
* :mod:`.video`: the planned frames of a video file, turned upright;
* :mod:`.resize`: a decoded frame as the RGB pixels the model sees, by the reference's own resize;
* :mod:`.targets`: which frames exact mode decodes, from the packet index alone (targets, seeks, segments);
* :mod:`.audio`: an audio stream (or a task's waveform) as mono float32 at 16 kHz, as the reference makes it;
* :mod:`.frames`: image-sequence videos (a folder or a list of frames);
* :mod:`.image`: still images, read and resized as the reference reads and resizes them.

Times at this package's surface are float seconds from the start of the video stream. Time spans are half-open.
"""

from __future__ import annotations

from .audio import load_audio, mono_16k
from .frames import is_frame_sequence, load_frames, probe_frames
from .image import open_image, resize_image
from .probe import MediaInfo, plan_probed_video, probe
from .video import SEEK_MODES, LoadedVideo, SeekMode, load_video

__all__ = [
    "SEEK_MODES",
    "SeekMode",
    "MediaInfo",
    "LoadedVideo",
    "probe",
    "plan_probed_video",
    "load_video",
    "load_audio",
    "mono_16k",
    "is_frame_sequence",
    "probe_frames",
    "load_frames",
    "open_image",
    "resize_image",
]
