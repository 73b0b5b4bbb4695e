"""From one lmms-eval request to the exact model inputs: classify its media, build the conversation, count the prompt's
text tokens, plan every video within the token budget, decode what the plans name, and run the processor.

Everything here is deterministic and runs on the CPU, so it can run ahead of the GPU in a background worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .budget import (
    AUDIO_SAMPLE_RATE,
    GRID_PIXELS,
    MAX_AUDIO_SECONDS,
    TokenBudget,
    VideoPlan,
    VideoPolicy,
    audio_block_tokens,
    plan_image,
)
from .config import AdapterConfig, TaskVideoOverrides
from .errors import BudgetError, ConfigError, MediaError
from .media import LoadedVideo, load_audio, load_video, plan_for, probe
from .memory import ModelDims, estimate_peak_memory

__all__ = [
    "Request",
    "MediaItem",
    "RequestPlan",
    "PreparedInputs",
    "classify_visuals",
    "build_messages",
    "plan_request",
    "unpack_request",
    "prepare_inputs",
    "inputs_hash",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".flac", ".m4a", ".ogg", ".opus", ".aac"}


@dataclass(frozen=True)
class Request:
    """One lmms-eval ``generate_until`` request, unpacked into names at the boundary."""

    index: int
    context: str
    gen_kwargs: dict[str, Any]
    visuals: list[Any]
    doc_id: int | str
    task: str
    split: str
    visual_error: str | None = None

    def key(self) -> str:
        """Identifies the request across runs: task, doc, prompt, generation kwargs and media sources."""
        sources = [str(v) if isinstance(v, (str, Path)) else type(v).__name__ for v in self.visuals]
        payload = repr((self.task, self.split, self.doc_id, self.context, sorted(self.gen_kwargs.items()), sources))
        return hashlib.sha256(payload.encode()).hexdigest()


def unpack_request(index: int, instance: Any, docs: Mapping[str, Mapping[str, Any]]) -> Request:
    """lmms-eval's ``generate_until`` arguments as a :class:`Request`; ``docs`` maps task -> split -> documents.

    A ``doc_to_visual`` that raises or calls ``sys.exit`` (some built-in tasks do, on a missing video) fails this
    request only: the error travels in ``visual_error`` and planning raises it as that sample's failure.
    """
    context, gen_kwargs, doc_to_visual, doc_id, task, split = instance.args
    visual_error = None
    try:
        visuals = doc_to_visual(docs[task][split][doc_id]) if doc_to_visual is not None else []
    except (Exception, SystemExit) as error:  # noqa: BLE001 - recorded as this sample's failure
        visuals, visual_error = [], f"the task's doc_to_visual raised {type(error).__name__}: {error}"
    if not isinstance(visuals, (list, tuple)):
        visuals = [visuals]
    return Request(index, context, dict(gen_kwargs or {}), list(visuals), doc_id, task, split, visual_error)


@dataclass(frozen=True)
class MediaItem:
    """A visual of a request: ``kind`` is video, image or audio; ``source`` is a path, a PIL image or a waveform."""

    kind: str
    source: Any


def classify_visuals(visuals: list[Any]) -> list[MediaItem]:
    """Sort what ``doc_to_visual`` returned into videos, images and audio clips."""
    items: list[MediaItem] = []
    for visual in visuals or []:
        if visual is None:
            continue
        if isinstance(visual, (str, Path)):
            suffix = Path(visual).suffix.lower()
            kind = "image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else "video"
            items.append(MediaItem(kind, str(visual)))
        elif isinstance(visual, dict) and "array" in visual:
            items.append(MediaItem("audio", visual))
        elif hasattr(visual, "convert") and hasattr(visual, "size"):
            items.append(MediaItem("image", visual.convert("RGB")))
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


@dataclass
class PreparedInputs:
    """The processor's output for one request and how it was planned."""

    text: str
    batch: Any
    use_audio_in_video: bool
    media: list[dict[str, Any]]
    tokens: dict[str, int]
    input_hash: str
    plan: RequestPlan
    decode_seconds: float = 0.0
    videos: list[LoadedVideo] = field(default_factory=list)


def _resample(waveform: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (linear interpolation; lmms-eval audio items arrive at their own rate)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim > 1:
        waveform = waveform.mean(axis=0 if waveform.shape[0] < waveform.shape[-1] else -1)
    if rate == AUDIO_SAMPLE_RATE:
        return waveform
    count = int(round(len(waveform) * AUDIO_SAMPLE_RATE / rate))
    positions = np.linspace(0, len(waveform) - 1, count)
    return np.interp(positions, np.arange(len(waveform)), waveform).astype(np.float32)


def _standalone_audio(item: MediaItem, decode_timeout: float) -> np.ndarray:
    if isinstance(item.source, dict):
        waveform = _resample(item.source["array"], int(item.source.get("sampling_rate", AUDIO_SAMPLE_RATE)))
        return waveform[: MAX_AUDIO_SECONDS * AUDIO_SAMPLE_RATE]
    return load_audio(item.source, max_seconds=MAX_AUDIO_SECONDS, decode_timeout=decode_timeout)


def _image_pixel_range(processor: Any) -> tuple[int, int]:
    size = getattr(processor.image_processor, "size", None) or {}
    return int(size.get("shortest_edge", 56 * 56)), int(size.get("longest_edge", 28 * 28 * 1280))


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


@dataclass
class RequestPlan:
    """Everything decided about a request before any frame is decoded."""

    text: str
    items: list[MediaItem]
    prompt_tokens: int
    fixed_tokens: int
    images: list[Any]
    standalone_audio: list[np.ndarray]
    videos: list[tuple[str, VideoPlan, bool]]  # path, plan, whether audio-in-video was asked for
    budget: TokenBudget
    media: list[dict[str, Any]]

    @property
    def input_tokens(self) -> int:
        """The input the processor will produce: prompt, images and audio clips, and every video block."""
        return self.prompt_tokens + self.fixed_tokens + sum(plan.total_tokens for _, plan, _ in self.videos)

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
        video_tokens = sum(plan.video_tokens for _, plan, _ in self.videos)
        cells = max(((p.height // GRID_PIXELS) * (p.width // GRID_PIXELS) for _, p, _ in self.videos), default=0)
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
        ).peak


def plan_request(
    processor: Any,
    request: Request,
    config: AdapterConfig,
    overrides: TaskVideoOverrides,
    *,
    max_model_len: int,
    max_new_tokens: int,
    budget_scale: float = 1.0,
) -> RequestPlan:
    """Count the prompt's tokens and plan every video (metadata only) so the input fits
    ``max_model_len - max_new_tokens``; ``budget_scale < 1`` re-plans each video within that fraction of the tokens
    its full plan uses (OOM retries and the memory check)."""
    if request.visual_error:
        raise MediaError(f"{request.task}/{request.doc_id}", request.visual_error)
    items = classify_visuals(request.visuals)
    messages = build_messages(config.system_prompt, items, request.context)
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if isinstance(text, list):
        text = text[0]
    # The template writes each media block as bos + placeholder + eos; those three tokens belong to the block.
    templated = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    prompt_tokens = templated - 3 * len(items)

    aiv_choice = overrides.use_audio_in_video or config.use_audio_in_video
    policy: VideoPolicy = config.video_policy(overrides)
    min_image, max_image = _image_pixel_range(processor)

    images: list[Any] = []
    standalone: list[np.ndarray] = []
    fixed_tokens = 0
    media: list[dict[str, Any]] = []
    for item in items:
        if item.kind == "image":
            height, width, tokens = plan_image(
                item.source.size[1], item.source.size[0], min_pixels=min_image, max_pixels=max_image
            )
            images.append(item.source)
            fixed_tokens += tokens
            media.append({"kind": "image", "height": height, "width": width, "total_tokens": tokens})
        elif item.kind == "audio":
            waveform = _standalone_audio(item, config.decode_timeout)
            standalone.append(waveform)
            fixed_tokens += audio_block_tokens(len(waveform))
            media.append({"kind": "audio", "samples": len(waveform), "total_tokens": audio_block_tokens(len(waveform))})

    video_paths = [item.source for item in items if item.kind == "video"]
    budget = TokenBudget(
        max_model_len=max_model_len,
        prompt_tokens=prompt_tokens + fixed_tokens,
        max_new_tokens=max_new_tokens,
        max_video_tokens=config.max_video_tokens,
    )
    if budget.media_tokens < (1 if video_paths else 0):  # with no video, the text and other media must still fit
        raise BudgetError(
            f"the prompt ({prompt_tokens} tokens), images and audio ({fixed_tokens}) and max_new_tokens={max_new_tokens} "
            f"leave {budget.media_tokens} tokens within max_model_len={max_model_len}"
            + (", none for the video" if video_paths else "")
        )
    per_video = budget.media_tokens // max(1, len(video_paths))
    videos: list[tuple[str, VideoPlan, bool]] = []
    for path in video_paths:
        info = probe(path)
        wants_audio = aiv_choice == "true" or (aiv_choice == "auto" and info.has_audio)
        video_policy = dataclasses.replace(policy, use_audio=wants_audio and info.has_audio)
        plan = plan_for(info, per_video, video_policy)
        if budget_scale < 1.0:
            # A retry shrinks what the plan used, not the budget (a plan far inside the budget must shrink too),
            # down to the smallest plan the policy allows.
            try:
                plan = plan_for(info, max(1, int(plan.total_tokens * budget_scale)), video_policy)
            except BudgetError as error:
                if error.needed is None or error.needed > per_video:
                    raise
                plan = plan_for(info, error.needed, video_policy)
        videos.append((path, plan, wants_audio))
        entry = {"kind": "video", "path": path, **plan.to_dict()}
        if wants_audio and not info.has_audio:
            entry["notes"] = [*entry["notes"], "audio-in-video requested but the file has no audio track"]
        media.append(entry)
    return RequestPlan(text, items, prompt_tokens, fixed_tokens, images, standalone, videos, budget, media)


def prepare_inputs(processor: Any, request: Request, plan: RequestPlan, config: AdapterConfig) -> PreparedInputs:
    """Decode what the plan names and run the processor; checks the processor's token count against the plan."""
    videos = [
        load_video(path, video_plan, decode_timeout=config.decode_timeout, seek_mode=config.seek_mode)
        for path, video_plan, _ in plan.videos
    ]
    use_aiv = any(video.audio is not None for video in videos)
    media = [dict(entry) for entry in plan.media]
    for entry, video in zip((e for e in media if e["kind"] == "video"), videos, strict=True):
        entry["decoded_times"] = list(video.frame_times)
        entry["sample_fps"] = video.sample_fps

    # Audio slots in text order: standalone clips map to None, a video's own track to its video index.
    audio: list[np.ndarray] = []
    audio_sources: list[int | None] = []
    standalone_iter = iter(plan.standalone_audio)
    video_index = 0
    for item in plan.items:
        if item.kind == "audio":
            audio.append(next(standalone_iter))
            audio_sources.append(None)
        elif item.kind == "video":
            if videos[video_index].audio is not None:
                audio.append(videos[video_index].audio)
                audio_sources.append(video_index)
            video_index += 1

    kwargs: dict[str, Any] = {"text": [plan.text], "return_tensors": "pt"}
    if plan.images:
        kwargs["images"] = plan.images
    if audio:
        kwargs["audio"] = audio
    if videos:
        kwargs["videos"] = [video.frames for video in videos]
        # Frames are already at the planned size; the real sampling rate gives the right temporal positions.
        kwargs["videos_kwargs"] = {"do_resize": False, "fps": videos[0].sample_fps}
    if use_aiv:
        kwargs["load_audio_from_video"] = True
        kwargs["audio_from_video_indices"] = audio_sources
    batch = processor(**kwargs)
    if len(videos) > 1:
        # The processor takes one fps for all videos; give each its own seconds per temporal grid. With audio-in-video
        # the processor also orders each block's tokens by that fps, so several such videos must share one rate.
        rates = {round(video.sample_fps, 6) for video in videos}
        if use_aiv and len(rates) > 1:
            raise ConfigError(
                f"{len(videos)} videos with their audio in one request were sampled at different rates {sorted(rates)}; "
                "the processor orders audio-in-video tokens by one rate: set use_audio_in_video=false or one fps per task"
            )
        batch["video_second_per_grid"] = torch.tensor([2.0 / video.sample_fps for video in videos])

    video_tokens = sum(video_plan.video_tokens for _, video_plan, _ in plan.videos)
    audio_tokens = sum(video_plan.audio_tokens for _, video_plan, _ in plan.videos)
    expected = plan.input_tokens
    actual = int(batch["input_ids"].shape[1])
    if actual != expected:
        raise RuntimeError(
            f"token accounting mismatch for {request.task}/{request.doc_id}: planned {expected} input tokens, "
            f"the processor produced {actual}; please report this with the provenance record"
        )
    tokens = {
        "prompt": plan.prompt_tokens,
        "video": video_tokens,
        "audio_in_video": audio_tokens,
        "images_and_audio": plan.fixed_tokens,
        "input": actual,
        "budget": sum(video_plan.budget for _, video_plan, _ in plan.videos) or plan.budget.media_tokens,
    }
    return PreparedInputs(
        text=plan.text,
        batch=batch,
        use_audio_in_video=use_aiv,
        media=media,
        tokens=tokens,
        input_hash=inputs_hash(batch),
        plan=plan,
        decode_seconds=sum(video.decode_seconds for video in videos),
        videos=videos,
    )
