"""What is decided about a request before anything is decoded: its prompt templated and counted, and every media item
planned within the token budget (videos by :func:`~omni_lmms_plugin.video_plan.plan_video`, images by the processor's
size rule, audio clips by span, subtitle lines by the frames sampled). Metadata only."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .budget import (
    AUDIO_SAMPLE_RATE,
    MAX_AUDIO_SECONDS,
    QWEN25_OMNI,
    Geometry,
    TokenBudget,
    audio_block_tokens,
    audio_samples,
    plan_image,
)
from .config import AdapterConfig
from .errors import BudgetError, ConfigError, MediaError
from .media import MediaInfo, is_frame_sequence, open_image, plan_probed_video, probe, probe_frames
from .memory import ModelDims, estimate_peak_memory
from .request import MediaItem, Request, RequestSettings, build_messages, classify_visuals
from .subtitles import SUBTITLE_PLACEHOLDER, SubtitleCue, SubtitleTrack, render_subtitles
from .video_plan import VideoPlan, VideoPolicy, linspace_indices

__all__ = [
    "PlannedVideo",
    "PlannedImage",
    "PlannedAudio",
    "PlannedSubtitles",
    "RequestPlan",
    "plan_request",
    "templated_prompt",
    "torch_linspace_indices",
]


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
    """An image and the size it is fed at (the processor's own size, or a smaller one on a retry), which the image is
    resized to before the processor sees it, as ``fetch_image`` resizes it."""

    image: Any
    height: int
    width: int
    tokens: int

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
    geometry: Geometry = QWEN25_OMNI

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
        geometry = self.geometry
        longest = max((n for n in audio_samples if n), default=0)
        audio_frames = min(math.ceil(longest / geometry.audio_hop), geometry.max_audio_features)
        cell = geometry.grid_pixels
        cells = max(((v.plan.height // cell) * (v.plan.width // cell) for v in self.videos), default=0)
        # merge x merge ViT patches per cell of each temporal patch; a group is vision_group_frames // temporal_patch.
        patches_per_token = geometry.spatial_merge**2
        group_patches = patches_per_token * cells * (vision_group_frames // geometry.temporal_patch)
        return estimate_peak_memory(
            dims,
            sequence_length=self.input_tokens,
            vision_patches=patches_per_token * video_tokens,
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


def _audio_seconds(item: MediaItem) -> float:
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
    geometry: Geometry,
) -> VideoPlan:
    """The plan within ``budget``; with ``scale < 1``, within that fraction of the tokens the full plan uses (a retry
    shrinks what the plan used, not the budget), down to the smallest plan the policy allows."""

    def plan_within(tokens: int) -> VideoPlan:
        return plan_probed_video(info, tokens, policy, frame_indices=frame_indices, geometry=geometry)

    plan = plan_within(budget)
    if scale >= 1.0:
        return plan
    try:
        return plan_within(max(1, int(plan.total_tokens * scale)))
    except BudgetError as error:
        if error.needed is None or error.needed > budget:
            raise
        return plan_within(error.needed)


def templated_prompt(
    processor: Any, system_prompt: str | None, items: list[MediaItem], context: str
) -> tuple[str, int]:
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
    geometry: Geometry = QWEN25_OMNI,
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
    text, prompt_tokens = templated_prompt(processor, config.system_prompt, items, context)
    min_image, max_image = _image_pixel_range(processor)

    planned: list[PlannedVideo | PlannedImage | PlannedAudio | PlannedSubtitles | None] = []
    fixed_tokens = 0
    for item in items:
        if item.kind == "image":
            image = open_image(item.source)
            height, width, tokens = plan_image(
                image.size[1], image.size[0], min_pixels=min_image, max_pixels=max_image, geometry=geometry
            )
            if scale < 1.0:  # a retry shrinks the pixels the full plan uses, down to the processor's minimum
                limit = max(min_image, int(height * width * scale))
                height, width, tokens = plan_image(
                    image.size[1], image.size[0], min_pixels=min_image, max_pixels=limit, geometry=geometry
                )
            planned.append(PlannedImage(image, height, width, tokens))
            fixed_tokens += tokens
        elif item.kind == "audio":
            full = _audio_seconds(item)
            seconds = min(full, geometry.max_audio_seconds) * min(scale, 1.0)
            samples = max(1, audio_samples(seconds))
            tokens = audio_block_tokens(samples, geometry=geometry)
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
            plan = _scaled_video_plan(info, per_video, policy, scale, frame_indices, geometry)
            videos.append(PlannedVideo(item.source, info, plan, wants_audio, settings.frames_fps))
        if not tracks:
            break
        first = videos[0].plan
        lines, cues = render_subtitles(tracks[0], first.frame_times, first.duration, frame_rate=first.source_fps)
        text, with_lines = templated_prompt(
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
    return RequestPlan(text, tuple(items), total_prompt, ordered, budget, scale, geometry)


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
