"""One lmms-eval request, resolved once: its arguments unpacked into names, its generation kwargs and video policy
parsed into :class:`RequestSettings`, and what its ``doc_to_visual`` returns sorted into media items. No torch."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import AdapterConfig, AudioChoice, TaskVideoOverrides, split_generation_kwargs
from .errors import MediaError
from .generation import GenerationParams
from .subtitles import SubtitleTrack
from .video_plan import VideoPolicy

__all__ = [
    "Request",
    "RequestSettings",
    "MediaItem",
    "unpack_request",
    "resolve_settings",
    "classify_visuals",
    "build_messages",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".aac"}
PADDING_KEY = "__padding_only__"


# --------------------------------------------------------------------------------------------------------------------
# The request and its settings
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One lmms-eval ``generate_until`` request, unpacked into names at the boundary. Its media are resolved when it
    is planned (:meth:`visuals`), not when it is unpacked, so a run never holds every sample's decoded images."""

    index: int
    context: str
    gen_kwargs: dict[str, Any]
    doc_id: int | str
    task: str
    split: str
    doc_to_visual: Callable[[Any], Any] | None = None
    doc: Any = None
    padding: bool = False

    def key(self) -> str:
        """Identifies the request across runs: task, split, doc, prompt and generation kwargs. (The media follow from
        the doc; the dataset's fingerprint in the run manifest covers a changed dataset.)"""
        payload = repr((self.task, self.split, self.doc_id, self.context, sorted(self.gen_kwargs.items())))
        return hashlib.sha256(payload.encode()).hexdigest()

    def visuals(self) -> list[Any]:
        """What the task's ``doc_to_visual`` returns for this doc. A ``doc_to_visual`` that raises or calls
        ``sys.exit`` (some built-in tasks do, on a missing video) fails this request only, as a :class:`MediaError`."""
        if self.doc_to_visual is None:
            return []
        try:
            visuals = self.doc_to_visual(self.doc)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - this sample's failure, with the cause
            raise MediaError(
                f"{self.task}/{self.doc_id}", f"the task's doc_to_visual raised {type(error).__name__}: {error}"
            ) from None
        if visuals is None:
            return []
        return list(visuals) if isinstance(visuals, (list, tuple)) else [visuals]


def unpack_request(index: int, instance: Any, docs: Mapping[str, Mapping[str, Any]]) -> Request:
    """lmms-eval's ``generate_until`` arguments as a :class:`Request`; ``docs`` maps task -> split -> documents.
    Data-parallel padding clones (``metadata["__padding_only__"]``, lmms-eval 0.7.3) are marked ``padding``."""
    context, gen_kwargs, doc_to_visual, doc_id, task, split = instance.args
    metadata = getattr(instance, "metadata", None)
    padding = bool(isinstance(metadata, Mapping) and metadata.get(PADDING_KEY))
    try:
        doc = docs[task][split][doc_id]
    except (KeyError, IndexError, TypeError) as error:
        doc, doc_to_visual = None, _raiser(error)
    return Request(index, context, dict(gen_kwargs or {}), doc_id, task, split, doc_to_visual, doc, padding)


def _raiser(error: BaseException) -> Callable[[Any], Any]:
    def fail(_doc: Any) -> Any:
        raise LookupError(f"cannot look the doc up: {type(error).__name__}: {error}")

    return fail


@dataclass(frozen=True)
class RequestSettings:
    """A request's generation parameters and video policy, parsed once from its generation kwargs."""

    params: GenerationParams
    policy: VideoPolicy
    audio_in_video: AudioChoice
    frames_fps: float
    overrides: TaskVideoOverrides

    def to_record(self) -> dict[str, Any]:
        """The policy as provenance records it."""
        policy = {k: v for k, v in asdict(self.policy).items() if k != "use_audio"}
        return {**policy, "use_audio_in_video": self.audio_in_video, "frames_fps": self.frames_fps}


def resolve_settings(request: Request, config: AdapterConfig) -> RequestSettings:
    """Parse a request's generation kwargs into its settings: the task's ``omni_*`` policy over the model args."""
    generation_kwargs, overrides = split_generation_kwargs(request.gen_kwargs)
    return RequestSettings(
        params=GenerationParams.from_lmms(generation_kwargs, config.max_new_tokens),
        policy=config.video_policy(overrides),
        audio_in_video=overrides.use_audio_in_video or config.use_audio_in_video,
        frames_fps=overrides.frames_fps or config.frames_fps,
        overrides=overrides,
    )


# --------------------------------------------------------------------------------------------------------------------
# Media items
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaItem:
    """A visual of a request: ``kind`` is video, image or audio; ``source`` is a path, a list of frame paths, a PIL
    image or a waveform dict (``array``, ``sampling_rate``)."""

    kind: str
    source: Any


def _classify_path(visual: str | Path) -> MediaItem:
    text = str(visual)
    if "://" in text:
        raise MediaError(text, "URLs are not read: download the file first and give its local path")
    if os.path.isdir(text):
        return MediaItem("video", text)  # a folder of frames
    suffix = Path(text).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return MediaItem("image", text)
    return MediaItem("audio" if suffix in AUDIO_SUFFIXES else "video", text)


def classify_visuals(visuals: Sequence[Any]) -> list[MediaItem]:
    """Sort what ``doc_to_visual`` returned into videos (files, frame folders, lists of frame paths), images (paths
    or PIL images), audio clips (paths or waveform dicts) and subtitle tracks."""
    items: list[MediaItem] = []
    for visual in visuals or []:
        if visual is None:
            continue
        if isinstance(visual, SubtitleTrack):
            items.append(MediaItem("subtitles", visual))
        elif isinstance(visual, (str, Path)):
            items.append(_classify_path(visual))
        elif isinstance(visual, (list, tuple)) and visual and all(isinstance(v, (str, Path)) for v in visual):
            items.append(MediaItem("video", [str(v) for v in visual]))
        elif isinstance(visual, dict) and "array" in visual:
            items.append(MediaItem("audio", visual))
        elif hasattr(visual, "convert") and hasattr(visual, "size"):
            items.append(MediaItem("image", visual))
        else:
            raise MediaError(repr(visual)[:80], f"unsupported visual of type {type(visual).__name__}")
    return items


def build_messages(system_prompt: str | None, items: list[MediaItem], context: str) -> list[dict[str, Any]]:
    """One conversation per request: the system prompt, then the media in order, then the question."""
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    content: list[dict[str, Any]] = [{"type": item.kind} for item in items]
    content.append({"type": "text", "text": context})
    messages.append({"role": "user", "content": content})
    return messages
