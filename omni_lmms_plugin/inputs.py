"""A planned request made into the model's inputs: the planned media decoded (videos, frame folders, audio clips) and
run through the processor, whose token count is checked against the plan. Runs on the CPU, ahead of the GPU."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .budget import AUDIO_SAMPLE_RATE
from .config import AdapterConfig
from .media import is_frame_sequence, load_audio, load_frames, load_video, mono_16k, resize_image
from .request import Request
from .request_plan import PlannedAudio, PlannedImage, PlannedVideo, RequestPlan

__all__ = ["PreparedInputs", "prepare_inputs", "inputs_hash"]


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
        waveform = mono_16k(audio.source["array"], int(audio.source.get("sampling_rate", AUDIO_SAMPLE_RATE)))
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
            # Resized here to its planned multiple-of-28 size as fetch_image resizes (the processor's own resize then
            # keeps that size): the reference's pixels, and a retry's smaller size.
            images.append(resize_image(entry.image, entry.width, entry.height))
        elif isinstance(entry, PlannedAudio):
            audio.append(_waveform(entry, config.decode_timeout))
            audio_sources.append(None)
        elif isinstance(entry, PlannedVideo):
            if is_frame_sequence(entry.source):
                loaded = load_frames(entry.source, entry.plan, resize=config.resize)
            else:
                loaded = load_video(
                    entry.source,
                    entry.plan,
                    decode_timeout=config.decode_timeout,
                    seek_mode=config.seek_mode,
                    resize=config.resize,
                    workers=config.video_decode_workers(),
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
        if hasattr(processor.video_processor, "cap_pixels_per_frame"):
            # That cap is part of the processor's resize, which do_resize=False skips (the plan applied the reference's
            # cap). Saying so silences its warning, once a run, that videos cost more tokens than in the reference.
            kwargs["videos_kwargs"]["cap_pixels_per_frame"] = False
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
