"""From one lmms-eval request to the exact model inputs: the request's media classified, its conversation templated,
its text tokens counted, every media item planned within the token budget (metadata only), then the planned media
decoded and the processor run.

Everything here is deterministic and runs on the CPU, so it can run ahead of the GPU in a background worker. Planning
(:func:`plan_request`) reads metadata only; decoding happens once, in :func:`prepare_inputs`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .budget import (
    AUDIO_HOP,
    AUDIO_SAMPLE_RATE,
    GRID_PIXELS,
    MAX_AUDIO_FEATURES,
    MAX_AUDIO_SECONDS,
    TokenBudget,
    VideoPlan,
    VideoPolicy,
    audio_block_tokens,
    audio_samples,
    linspace_indices,
    plan_image,
)
from .config import AdapterConfig, AudioChoice, TaskVideoOverrides, split_generation_kwargs
from .errors import BudgetError, ConfigError, MediaError
from .generation import GenerationParams
from .media import (
    MediaInfo,
    is_frame_sequence,
    load_audio,
    load_frames,
    load_video,
    plan_for,
    probe,
    probe_frames,
)
from .memory import ModelDims, estimate_peak_memory
from .subtitles import SUBTITLE_PLACEHOLDER, SubtitleCue, SubtitleTrack, render_subtitles

__all__ = [
    "Request",
    "RequestSettings",
    "MediaItem",
    "PlannedVideo",
    "PlannedImage",
    "PlannedAudio",
    "PlannedSubtitles",
    "RequestPlan",
    "PreparedInputs",
    "classify_visuals",
    "build_messages",
    "resolve_settings",
    "plan_request",
    "unpack_request",
    "prepare_inputs",
    "inputs_hash",
    "torch_linspace_indices",
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
        policy = {k: v for k, v in dataclasses.asdict(self.policy).items() if k != "use_audio"}
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


def _open_image(item: MediaItem) -> Any:
    """An RGB PIL image from a path or a PIL image."""
    if not isinstance(item.source, str):
        return item.source.convert("RGB")
    try:
        with Image.open(item.source) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise MediaError(item.source, f"unreadable image: {error}") from error


def torch_linspace_indices(total_frames: int, count: int) -> tuple[int, ...]:
    """qwen-omni-utils' index rule itself: ``torch.linspace(0, total - 1, count).round()`` (float32, as it runs)."""
    return tuple(torch.linspace(0, total_frames - 1, count).round().long().tolist())


# --------------------------------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedVideo:
    """A video (file or image sequence), its probe and its plan; ``audio_in_video`` is whether its own track is fed."""

    source: str | list[str]
    info: MediaInfo
    plan: VideoPlan
    audio_in_video: bool
    frames_fps: float

    def to_record(self) -> dict[str, Any]:
        notes = list(self.plan.notes)
        if self.audio_in_video and not self.info.has_audio:
            notes.append("audio-in-video requested but the file has no audio track")
        source = self.source if isinstance(self.source, str) else f"{len(self.source)} frame paths"
        return {
            "kind": "video",
            "path": source,
            **self.plan.to_dict(),
            "notes": notes,
            "rotation": self.info.rotation,
            "total_frames_source": self.info.total_frames_source,
        }


@dataclass(frozen=True)
class PlannedImage:
    """An image and the size it is fed at: the processor's own size, or (``shrunk``, on a retry) a smaller one that
    the image is resized to before the processor sees it."""

    image: Any
    height: int
    width: int
    tokens: int
    shrunk: bool = False

    def to_record(self) -> dict[str, Any]:
        return {"kind": "image", "height": self.height, "width": self.width, "total_tokens": self.tokens}


@dataclass(frozen=True)
class PlannedAudio:
    """A standalone audio clip: its source and the span fed (at most 300 s, the feature extractor's cap)."""

    source: Any
    seconds: float
    samples: int
    tokens: int
    dropped_seconds: float

    def to_record(self) -> dict[str, Any]:
        record = {"kind": "audio", "samples": self.samples, "seconds": self.seconds, "total_tokens": self.tokens}
        record["audio_dropped_seconds"] = self.dropped_seconds
        if self.dropped_seconds > 0:
            record["notes"] = [
                f"audio planned as its first {self.seconds:g} s; the last {self.dropped_seconds:.3f} s are not heard "
                f"(the audio feature extractor takes at most {MAX_AUDIO_SECONDS} s)"
            ]
        return record


@dataclass(frozen=True)
class PlannedSubtitles:
    """The subtitle lines of the sampled frames, put in the prompt; ``tokens`` is what they add to it."""

    track: SubtitleTrack
    cues: tuple[SubtitleCue, ...]
    tokens: int

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": "subtitles",
            "path": self.track.path,
            "style": self.track.style,
            "tokens": self.tokens,
            "lines": [{"start": cue.start, "end": cue.end, "text": cue.text} for cue in self.cues],
        }


@dataclass(frozen=True)
class RequestPlan:
    """Everything decided about a request before any frame is decoded: the templated text, its prompt tokens and each
    media item's plan, in the order the conversation shows them."""

    text: str
    items: tuple[MediaItem, ...]
    prompt_tokens: int
    planned: tuple[PlannedVideo | PlannedImage | PlannedAudio | PlannedSubtitles, ...]
    budget: TokenBudget
    scale: float = 1.0

    @property
    def videos(self) -> list[PlannedVideo]:
        return [p for p in self.planned if isinstance(p, PlannedVideo)]

    @property
    def fixed_tokens(self) -> int:
        """Tokens of the images and standalone audio clips (subtitle lines are prompt tokens)."""
        return sum(p.tokens for p in self.planned if isinstance(p, (PlannedImage, PlannedAudio)))

    @property
    def input_tokens(self) -> int:
        """The input the processor will produce: prompt, images and audio clips, and every video block."""
        return self.prompt_tokens + self.fixed_tokens + sum(v.plan.total_tokens for v in self.videos)

    @property
    def use_audio_in_video(self) -> bool:
        return any(v.plan.audio_samples > 0 for v in self.videos)

    def media_records(self) -> list[dict[str, Any]]:
        return [p.to_record() for p in self.planned]

    def estimate_peak(
        self,
        dims: ModelDims,
        *,
        attention: str,
        dtype: str,
        vision_group_frames: int,
        max_new_tokens: int,
        weight_bytes: int | None = None,
    ) -> int:
        """Predicted peak device memory of generating from this plan (see :mod:`omni_lmms_plugin.memory`)."""
        video_tokens = sum(v.plan.video_tokens for v in self.videos)
        # The audio tower encodes one stream at a time; its largest input (100 mel frames per second, at most
        # 30,000) bounds the audio stage.
        audio_samples = [v.plan.audio_samples for v in self.videos] + [
            p.samples for p in self.planned if isinstance(p, PlannedAudio)
        ]
        audio_frames = max((min(math.ceil(n / AUDIO_HOP), MAX_AUDIO_FEATURES) for n in audio_samples if n), default=0)
        cells = max(((v.plan.height // GRID_PIXELS) * (v.plan.width // GRID_PIXELS) for v in self.videos), default=0)
        # Four ViT patches per cell of each frame pair; a group is vision_group_frames // 2 frame pairs.
        group_patches = 4 * cells * (vision_group_frames // 2)
        return estimate_peak_memory(
            dims,
            sequence_length=self.input_tokens,
            vision_patches=4 * video_tokens,
            vision_group_patches=group_patches or None,
            attention=attention,
            dtype=dtype,
            last_position_logits=True,
            max_new_tokens=max_new_tokens,
            weight_bytes=weight_bytes,
            audio_frames=audio_frames,
        ).peak


def _image_pixel_range(processor: Any) -> tuple[int, int]:
    size = getattr(processor.image_processor, "size", None) or {}
    return int(size.get("shortest_edge", 56 * 56)), int(size.get("longest_edge", 28 * 28 * 1280))


def _audio_seconds(item: MediaItem, decode_timeout: float) -> float:
    """The length of a standalone audio clip in seconds, from its array or its file's headers (no decoding)."""
    if isinstance(item.source, dict):
        shape = np.shape(item.source["array"])
        # Mono, or (channels, samples) / (samples, channels): the longer axis is time.
        return max(shape, default=0) / int(item.source.get("sampling_rate", AUDIO_SAMPLE_RATE))
    info = probe(item.source)
    if not info.has_audio:
        raise MediaError(item.source, "no audio stream in this audio item")
    return info.audio_duration_header or info.duration


def _probe_video(item: MediaItem, frames_fps: float) -> MediaInfo:
    return probe_frames(item.source, frames_fps) if is_frame_sequence(item.source) else probe(item.source)


def _scaled_video_plan(
    info: MediaInfo,
    budget: int,
    policy: VideoPolicy,
    scale: float,
    frame_indices: Callable[[int, int], Sequence[int]],
) -> VideoPlan:
    """The plan within ``budget``; with ``scale < 1``, within that fraction of the tokens the full plan uses (a retry
    shrinks what the plan used, not the budget), down to the smallest plan the policy allows."""
    plan = plan_for(info, budget, policy, frame_indices=frame_indices)
    if scale >= 1.0:
        return plan
    try:
        return plan_for(info, max(1, int(plan.total_tokens * scale)), policy, frame_indices=frame_indices)
    except BudgetError as error:
        if error.needed is None or error.needed > budget:
            raise
        return plan_for(info, error.needed, policy, frame_indices=frame_indices)


def _templated(processor: Any, system_prompt: str | None, items: list[MediaItem], context: str) -> tuple[str, int]:
    """The chat-templated text and its prompt tokens: every token but the media blocks' own (the template writes each
    block as bos + placeholder + eos; those three tokens belong to the block)."""
    blocks = [item for item in items if item.kind != "subtitles"]
    text = processor.apply_chat_template(
        build_messages(system_prompt, blocks, context), tokenize=False, add_generation_prompt=True
    )
    if isinstance(text, list):
        text = text[0]
    return text, len(processor.tokenizer(text, add_special_tokens=False)["input_ids"]) - 3 * len(blocks)


# Subtitle lines depend on the frames, the frames on the tokens the lines leave: re-plan until both fit.
_SUBTITLE_ROUNDS = 8


def plan_request(
    processor: Any,
    request: Request,
    config: AdapterConfig,
    settings: RequestSettings,
    *,
    max_model_len: int,
    scale: float = 1.0,
    frame_indices: Callable[[int, int], Sequence[int]] = linspace_indices,
) -> RequestPlan:
    """Count the prompt's tokens and plan every media item (metadata only) so the input fits
    ``max_model_len - max_new_tokens``. ``scale < 1`` shrinks every item to that fraction of what its full plan uses
    (videos: tokens; images: pixels; audio clips: seconds), for OOM retries and the memory fit.

    Subtitles (a :class:`~omni_lmms_plugin.subtitles.SubtitleTrack` among the visuals, and
    :data:`~omni_lmms_plugin.subtitles.SUBTITLE_PLACEHOLDER` in the prompt) are budgeted media: after the video is
    planned, the lines of its sampled frames replace the placeholder and their tokens count against the budget; when
    they overrun it, the video is planned again within what the lines leave, until both fit.

    Several videos with their own audio in one request must share one sample rate, and either all or none of the
    videos must feed their audio: the processor takes one ``fps`` for the interleaving and ``generate`` one
    ``use_audio_in_video`` flag. Anything else is a :class:`ConfigError` naming the limitation.
    """
    items = classify_visuals(request.visuals())
    tracks = [item.source for item in items if item.kind == "subtitles"]
    _check_subtitles(request, items, tracks)
    context = request.context.replace(SUBTITLE_PLACEHOLDER, "")
    text, prompt_tokens = _templated(processor, config.system_prompt, items, context)
    min_image, max_image = _image_pixel_range(processor)

    planned: list[PlannedVideo | PlannedImage | PlannedAudio | PlannedSubtitles | None] = []
    fixed_tokens = 0
    for item in items:
        if item.kind == "image":
            image = _open_image(item)
            height, width, tokens = plan_image(image.size[1], image.size[0], min_pixels=min_image, max_pixels=max_image)
            if scale < 1.0:  # a retry shrinks the pixels the full plan uses, down to the processor's minimum
                limit = max(min_image, int(height * width * scale))
                height, width, tokens = plan_image(image.size[1], image.size[0], min_pixels=min_image, max_pixels=limit)
            planned.append(PlannedImage(image, height, width, tokens, shrunk=scale < 1.0))
            fixed_tokens += tokens
        elif item.kind == "audio":
            full = _audio_seconds(item, config.decode_timeout)
            seconds = min(full, MAX_AUDIO_SECONDS) * min(scale, 1.0)
            samples = max(1, audio_samples(seconds))
            tokens = audio_block_tokens(samples)
            planned.append(
                PlannedAudio(item.source, samples / AUDIO_SAMPLE_RATE, samples, tokens, round(full - seconds, 6))
            )
            fixed_tokens += tokens
        else:
            planned.append(None)  # videos and subtitles are planned below, with what the rest leaves

    video_items = [item for item in items if item.kind == "video"]
    infos = [_probe_video(item, settings.frames_fps) for item in video_items]
    subtitle_tokens = 0  # what the subtitle lines are known to take: grows until the plan and its lines fit
    subtitles: PlannedSubtitles | None = None
    for _ in range(_SUBTITLE_ROUNDS):
        budget = TokenBudget(
            max_model_len=max_model_len,
            prompt_tokens=prompt_tokens + subtitle_tokens + fixed_tokens,
            max_new_tokens=settings.params.max_new_tokens,
            max_video_tokens=config.max_video_tokens,
        )
        if budget.media_tokens < (1 if video_items else 0):  # with no video, the text and other media must still fit
            raise BudgetError(
                f"the prompt ({prompt_tokens} tokens, subtitles {subtitle_tokens}), images and audio ({fixed_tokens}) "
                f"and max_new_tokens={settings.params.max_new_tokens} leave {budget.media_tokens} tokens within "
                f"max_model_len={max_model_len}" + (", none for the video" if video_items else "")
            )
        per_video = budget.media_tokens // max(1, len(video_items))
        videos = []
        for item, info in zip(video_items, infos, strict=True):
            wants_audio = settings.audio_in_video == "true" or (settings.audio_in_video == "auto" and info.has_audio)
            policy = dataclasses.replace(settings.policy, use_audio=wants_audio and info.has_audio)
            plan = _scaled_video_plan(info, per_video, policy, scale, frame_indices)
            videos.append(PlannedVideo(item.source, info, plan, wants_audio, settings.frames_fps))
        if not tracks:
            break
        first = videos[0].plan
        lines, cues = render_subtitles(tracks[0], first.frame_times, first.duration, frame_rate=first.source_fps)
        text, with_lines = _templated(
            processor, config.system_prompt, items, request.context.replace(SUBTITLE_PLACEHOLDER, lines)
        )
        subtitles = PlannedSubtitles(tracks[0], tuple(cues), with_lines - prompt_tokens)
        used = with_lines + fixed_tokens + sum(v.plan.total_tokens for v in videos) + settings.params.max_new_tokens
        if used <= max_model_len:
            break
        subtitle_tokens = max(subtitle_tokens + 1, subtitles.tokens)
    else:
        raise BudgetError(
            f"{request.task}/{request.doc_id}: the subtitle lines of the sampled frames ({subtitles.tokens if subtitles else 0} "
            f"tokens) and the video did not fit max_model_len={max_model_len} after {_SUBTITLE_ROUNDS} re-plans"
        )
    _check_video_combination(request, videos)
    video_iter = iter(videos)
    ordered = tuple(
        entry if entry is not None else subtitles if item.kind == "subtitles" else next(video_iter)
        for entry, item in zip(planned, items, strict=True)
    )
    total_prompt = prompt_tokens + (subtitles.tokens if subtitles else 0)
    return RequestPlan(text, tuple(items), total_prompt, ordered, budget, scale)


def _check_subtitles(request: Request, items: list[MediaItem], tracks: list[Any]) -> None:
    where = f"{request.task}/{request.doc_id}"
    placeholders = request.context.count(SUBTITLE_PLACEHOLDER)
    if tracks and placeholders != 1:
        raise ConfigError(
            f"{where}: doc_to_visual returned a SubtitleTrack, but the prompt holds {placeholders} subtitle "
            f"placeholders ({SUBTITLE_PLACEHOLDER}); doc_to_text must put exactly one where the lines go"
        )
    if placeholders and not tracks:
        raise MediaError(
            where,
            f"the prompt has a subtitle placeholder ({SUBTITLE_PLACEHOLDER}) but doc_to_visual returned no "
            "SubtitleTrack (is the subtitle file missing?); the placeholder is never sent to the model",
        )
    if len(tracks) > 1 or (tracks and not any(item.kind == "video" for item in items)):
        raise ConfigError(f"{where}: a request takes one SubtitleTrack, for its first video ({len(tracks)} given)")


def _check_video_combination(request: Request, videos: list[PlannedVideo]) -> None:
    with_audio = [v for v in videos if v.plan.audio_samples > 0]
    if not with_audio or len(videos) == 1:
        return
    where = f"{request.task}/{request.doc_id}"
    if len(with_audio) != len(videos):
        raise ConfigError(
            f"{where}: {len(with_audio)} of {len(videos)} videos in one request feed their own audio; generate() takes "
            "one use_audio_in_video flag for the whole request, so the positions of the others would be wrong. Set "
            "use_audio_in_video=false (or omni_use_audio_in_video: false in the task), or give every video audio"
        )
    rates = sorted({round(v.plan.sample_fps, 6) for v in videos})
    if len(rates) > 1:
        raise ConfigError(
            f"{where}: {len(videos)} videos with their own audio in one request are sampled at different rates {rates}; "
            "the processor interleaves audio-in-video tokens by one rate. Set use_audio_in_video=false for this task"
        )


# --------------------------------------------------------------------------------------------------------------------
# Decoding and the processor
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class PreparedInputs:
    """The processor's output for one request, how it was planned, and what was decoded (times, not pixels: the
    decoded frames are released once the processor has run)."""

    batch: Any
    plan: RequestPlan
    media: list[dict[str, Any]]
    tokens: dict[str, int]
    input_hash: str
    decode_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def use_audio_in_video(self) -> bool:
        return self.plan.use_audio_in_video


def _waveform(audio: PlannedAudio, decode_timeout: float) -> np.ndarray:
    """The planned span of a standalone clip, mono float32 at 16 kHz, exactly ``audio.samples`` long."""
    if isinstance(audio.source, dict):
        waveform = np.asarray(audio.source["array"], dtype=np.float32)
        if waveform.ndim > 1:
            waveform = waveform.mean(axis=0 if waveform.shape[0] < waveform.shape[-1] else -1)
        rate = int(audio.source.get("sampling_rate", AUDIO_SAMPLE_RATE))
        if rate != AUDIO_SAMPLE_RATE:  # linear interpolation onto the 16 kHz grid
            count = int(round(len(waveform) * AUDIO_SAMPLE_RATE / rate))
            positions = np.linspace(0, len(waveform) - 1, count)
            waveform = np.interp(positions, np.arange(len(waveform)), waveform).astype(np.float32)
        out = np.zeros(audio.samples, dtype=np.float32)
        out[: min(audio.samples, len(waveform))] = waveform[: audio.samples]
        return out
    return load_audio(audio.source, seconds=audio.seconds, decode_timeout=decode_timeout)


def inputs_hash(batch: Any) -> str:
    """SHA-256 over every tensor the model receives, by name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name in sorted(batch.keys()):
        value = batch[name]
        digest.update(name.encode())
        if hasattr(value, "detach"):
            array = value.detach().cpu().contiguous()
            digest.update(str(array.dtype).encode() + str(tuple(array.shape)).encode())
            digest.update(array.view(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def prepare_inputs(processor: Any, request: Request, plan: RequestPlan, config: AdapterConfig) -> PreparedInputs:
    """Decode what the plan names and run the processor; checks the processor's token count against the plan."""
    decode_seconds = 0.0
    media = plan.media_records()
    images: list[Any] = []
    audio: list[np.ndarray] = []
    audio_sources: list[int | None] = []  # per audio slot, in text order: None, or the index of its video
    frames: list[np.ndarray] = []
    rates: list[float] = []
    for record, entry in zip(media, plan.planned, strict=True):
        if isinstance(entry, PlannedImage):
            # A shrunk image is resized here (bicubic, as the processor resizes) to its planned multiple-of-28 size,
            # which the processor's own resize rule then keeps.
            shrunk = entry.image.resize((entry.width, entry.height), Image.Resampling.BICUBIC) if entry.shrunk else None
            images.append(shrunk or entry.image)
        elif isinstance(entry, PlannedAudio):
            audio.append(_waveform(entry, config.decode_timeout))
            audio_sources.append(None)
        elif isinstance(entry, PlannedVideo):
            if is_frame_sequence(entry.source):
                loaded = load_frames(entry.source, entry.plan)
            else:
                loaded = load_video(
                    entry.source, entry.plan, decode_timeout=config.decode_timeout, seek_mode=config.seek_mode
                )
            decode_seconds += loaded.decode_seconds
            record["decoded_times"] = list(loaded.frame_times)
            record["notes"] = [*record["notes"], *loaded.notes]
            if loaded.audio is not None:
                audio.append(loaded.audio)
                audio_sources.append(len(frames))
            frames.append(loaded.frames)
            rates.append(loaded.sample_fps)

    kwargs: dict[str, Any] = {"text": [plan.text], "return_tensors": "pt"}
    if images:
        kwargs["images"] = images
    if audio:
        kwargs["audio"] = audio
    if frames:
        kwargs["videos"] = frames
        # Frames are already at the planned size; the plan's sample rate gives the right temporal positions.
        kwargs["videos_kwargs"] = {"do_resize": False, "fps": rates[0]}
    if plan.use_audio_in_video:
        kwargs["load_audio_from_video"] = True
        kwargs["audio_from_video_indices"] = audio_sources
    batch = processor(**kwargs)
    del frames, audio  # the batch holds the pixels now
    if len(rates) > 1:
        # The processor takes one fps for all videos; give each its own seconds per temporal grid.
        batch["video_second_per_grid"] = torch.tensor([2.0 / rate for rate in rates])

    actual = int(batch["input_ids"].shape[1])
    if actual != plan.input_tokens:
        raise RuntimeError(
            f"token accounting mismatch for {request.task}/{request.doc_id}: planned {plan.input_tokens} input "
            f"tokens, the processor produced {actual}; please report this with the provenance record"
        )
    tokens = {
        "prompt": plan.prompt_tokens,
        "video": sum(v.plan.video_tokens for v in plan.videos),
        "audio_in_video": sum(v.plan.audio_tokens for v in plan.videos),
        "images_and_audio": plan.fixed_tokens,
        "input": actual,
        "budget": sum(v.plan.budget for v in plan.videos) or plan.budget.media_tokens,
    }
    return PreparedInputs(batch, plan, media, tokens, inputs_hash(batch), decode_seconds)
