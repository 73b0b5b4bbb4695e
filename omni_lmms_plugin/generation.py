"""Generation with bounded memory and the OOM-safe retry loop.

- :func:`install_last_position_logits` makes the thinker compute logits for the last position only, which is all
  generation reads (the thinker's forward has no ``logits_to_keep``; full prefill logits cost ``vocab x L`` values).
- :func:`install_grouped_vision_encoding` encodes each video through the vision tower a few temporal grids at a time.
  The tower never attends across 2-frame temporal grids, so the embeddings equal a one-pass encoding while the peak
  is bounded by the group, not the video.
- :class:`GenerationParams` is the one place where lmms-eval's generation kwargs become Hugging Face's.
- :func:`run_with_retries` runs one request's attempts: on out-of-memory it frees what the attempt held, shrinks the
  token budget by a fixed factor and tries again, recording every attempt.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .errors import BudgetError, ConfigError, MediaError

__all__ = [
    "GenerationParams",
    "check_generation_kwargs",
    "Attempt",
    "AttemptOutcome",
    "install_last_position_logits",
    "install_grouped_vision_encoding",
    "is_out_of_memory",
    "free_device_memory",
    "run_generate",
    "run_with_retries",
]


# --------------------------------------------------------------------------------------------------------------------
# Memory-lean model surgery
# --------------------------------------------------------------------------------------------------------------------


def _keep_last_position(module: torch.nn.Module, args: tuple) -> tuple:
    hidden = args[0]
    return (hidden[:, -1:, :], *args[1:]) if hidden.dim() == 3 and hidden.shape[1] > 1 else args


def install_last_position_logits(thinker: torch.nn.Module) -> Any:
    """Feed only the last hidden state to ``lm_head``. Generation (greedy, sampling, beams) reads ``logits[:, -1]``
    alone, so answers are unchanged. Returns the hook handle (``handle.remove()`` restores full logits)."""
    return thinker.lm_head.register_forward_pre_hook(_keep_last_position)


def install_grouped_vision_encoding(thinker: torch.nn.Module, group_frames: int) -> None:
    """Encode videos ``group_frames`` frames (``group_frames // 2`` temporal grids) at a time."""
    inner = thinker.model
    visual = inner.visual
    merge = visual.spatial_merge_size
    grids_per_group = max(1, group_frames // 2)
    original = inner.get_video_features

    def get_video_features(
        pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor | None = None, **kwargs: Any
    ):
        if video_grid_thw is None:
            return original(pixel_values_videos, video_grid_thw, **kwargs)
        pixel_values_videos = pixel_values_videos.type(visual.dtype)
        per_video: list[torch.Tensor] = []
        offset = 0
        for grids, height, width in video_grid_thw.tolist():
            patches_per_grid = height * width
            pieces = []
            for start in range(0, grids, grids_per_group):
                count = min(grids_per_group, grids - start)
                chunk = pixel_values_videos[offset : offset + count * patches_per_grid]
                grid = torch.tensor([[count, height, width]], device=video_grid_thw.device, dtype=video_grid_thw.dtype)
                pieces.append(visual(chunk, grid_thw=grid, return_dict=True).pooler_output)
                offset += count * patches_per_grid
            per_video.append(torch.cat(pieces, dim=0))
        expected = [g * h * w // merge**2 for g, h, w in video_grid_thw.tolist()]
        if [piece.shape[0] for piece in per_video] != expected:
            raise RuntimeError(
                f"grouped vision encoding produced {[p.shape[0] for p in per_video]} tokens, expected {expected}"
            )
        return BaseModelOutputWithPooling(pooler_output=tuple(per_video))

    inner.get_video_features = get_video_features


# --------------------------------------------------------------------------------------------------------------------
# Generation parameters
# --------------------------------------------------------------------------------------------------------------------


# Hugging Face ``generate`` keys a task or ``--gen_kwargs`` may set beyond the core ones, with the type each takes.
# Sampling keys reach ``generate`` only when sampling; the others always do.
_SAMPLING_KEYS: dict[str, type] = {"top_p": float, "top_k": int, "min_p": float, "typical_p": float}
_ALWAYS_KEYS: dict[str, type] = {
    "repetition_penalty": float,
    "length_penalty": float,
    "no_repeat_ngram_size": int,
    "min_new_tokens": int,
    "use_cache": bool,
    "early_stopping": bool,
}
# Keys lmms-eval tasks commonly carry that have no meaning for a local model.
_IGNORED_KEYS = ("image_aspect_ratio", "max_length", "interleave_visuals")
_CORE_KEYS = ("max_new_tokens", "until", "temperature", "do_sample", "num_beams")


def _convert(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        word = str(value).strip().lower()
        if word not in ("true", "false", "1", "0"):
            raise ConfigError(f"generation_kwargs {key}={value!r} must be true or false")
        return word in ("true", "1")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"generation_kwargs {key}={value!r} must be {kind.__name__}") from None


@dataclass(frozen=True)
class GenerationParams:
    """lmms-eval's generation kwargs, normalised once per request.

    ``extra`` holds the other Hugging Face ``generate`` keys given (``top_k``, ``repetition_penalty``,
    ``min_new_tokens``, ...), sorted by name, already converted to their types.
    """

    max_new_tokens: int
    until: tuple[str, ...] = ()
    do_sample: bool = False
    temperature: float = 0.0
    num_beams: int = 1
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_lmms(cls, gen_kwargs: dict[str, Any], default_max_new_tokens: int) -> GenerationParams:
        """Normalise one request's kwargs (``omni_*`` keys already split off).

        Raises:
            ConfigError: a key ``generate`` does not take (naming the supported ones), or a value of the wrong type.
        """
        kwargs = {key: value for key, value in gen_kwargs.items() if key not in _IGNORED_KEYS}
        until = kwargs.pop("until", None)
        if isinstance(until, str):
            until = [until]
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        do_sample = _convert("do_sample", kwargs.pop("do_sample", False), bool) or temperature > 0
        max_new_tokens = int(kwargs.pop("max_new_tokens", default_max_new_tokens))
        num_beams = int(kwargs.pop("num_beams", 1) or 1)
        known = {**_SAMPLING_KEYS, **_ALWAYS_KEYS}
        unknown = sorted(key for key in kwargs if key not in known)
        if unknown:
            raise ConfigError(
                f"unsupported generation_kwargs: {', '.join(unknown)}; supported: "
                f"{', '.join(sorted([*_CORE_KEYS, *known]))} (and omni_* video policy keys); remove the key from the "
                "task's generation_kwargs or --gen_kwargs"
            )
        # lmms-eval tasks write "top_p: null" for "not set".
        extra = tuple(
            sorted((key, _convert(key, value, known[key])) for key, value in kwargs.items() if value is not None)
        )
        if max_new_tokens < 1 or num_beams < 1:
            raise ConfigError(
                f"max_new_tokens={max_new_tokens} and num_beams={num_beams} must be at least 1; fix generation_kwargs"
            )
        return cls(max_new_tokens, tuple(s for s in (until or []) if s), do_sample, temperature, num_beams, extra)

    def to_hf(self) -> dict[str, Any]:
        """The keyword arguments of ``generate``: the only place Hugging Face's names appear."""
        hf: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
        }
        extra = dict(self.extra)
        if self.do_sample:
            hf["temperature"] = self.temperature if self.temperature > 0 else 1.0
        else:
            # Greedy: clear any sampling defaults the checkpoint's generation_config carries (and any the task set).
            hf.update(temperature=None, top_p=None, top_k=None)
            extra = {key: value for key, value in extra.items() if key not in _SAMPLING_KEYS}
        hf.update(extra)
        return hf

    def cut_at_stop(self, text: str) -> str:
        """The answer up to the first stop string (generation may run past one inside a token)."""
        cut = len(text)
        for stop in self.until:
            position = text.find(stop)
            if position != -1:
                cut = min(cut, position)
        return text[:cut]


def check_generation_kwargs(requests: Iterable[tuple[str, dict[str, Any]]], default_max_new_tokens: int) -> None:
    """Check every request's ``(task, generation kwargs)`` (``omni_*`` keys split off) before the first sample, so
    a key ``generate`` does not take is one error naming the task, not one recorded failure per sample.

    Raises:
        ConfigError: from :meth:`GenerationParams.from_lmms`, prefixed with the task's name.
    """
    checked: set[str] = set()
    for task, kwargs in requests:
        key = repr((task, sorted(kwargs.items(), key=lambda item: item[0])))
        if key in checked:
            continue
        checked.add(key)
        try:
            GenerationParams.from_lmms(kwargs, default_max_new_tokens)
        except ConfigError as error:
            raise ConfigError(f"task {task}: {error}") from None


def run_generate(
    thinker: torch.nn.Module,
    inputs: dict[str, Any],
    params: GenerationParams,
    *,
    use_audio_in_video: bool,
    tokenizer: Any,
) -> tuple[str, int]:
    """One ``generate`` call; returns the decoded answer (cut at stop strings) and the number of new tokens."""
    hf = params.to_hf()
    if params.until:
        hf["stop_strings"] = list(params.until)
        hf["tokenizer"] = tokenizer
    with torch.inference_mode():
        output = thinker.generate(**inputs, use_audio_in_video=use_audio_in_video, **hf)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    text = tokenizer.decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return params.cut_at_stop(text), int(new_tokens.numel())


# --------------------------------------------------------------------------------------------------------------------
# Out-of-memory policy
# --------------------------------------------------------------------------------------------------------------------


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the allocator failures that other backends raise as RuntimeError."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Attempt:
    """One try at a request: the budget scale it ran with, what it planned, and how it ended."""

    index: int
    budget_scale: float
    outcome: str = "pending"
    error: str | None = None
    plan_summary: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "budget_scale": round(self.budget_scale, 6),
            "outcome": self.outcome,
            "error": self.error,
            "plan": self.plan_summary,
            "input_tokens": self.input_tokens,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class AttemptOutcome:
    """The end of a request: the result of the attempt that answered (``attempt_fn``'s return value), or the reason
    it failed, and every attempt made."""

    failure: str | None
    attempts: list[Attempt]
    result: Any = None


def run_with_retries(
    attempt_fn: Callable[[Attempt], Any],
    *,
    oom_retries: int,
    shrink: float,
) -> AttemptOutcome:
    """Call ``attempt_fn`` until it returns; after an out-of-memory error, shrink the budget scale by ``shrink`` and
    retry, at most ``oom_retries`` times. Media and budget errors are not retried: a smaller plan cannot fix them.

    ``attempt_fn`` fills in the attempt's plan summary and returns the request's result.
    """
    attempts: list[Attempt] = []
    scale = 1.0
    for index in range(oom_retries + 1):
        attempt = Attempt(index=index, budget_scale=scale)
        attempts.append(attempt)
        started = time.perf_counter()
        try:
            result = attempt_fn(attempt)
        except (MediaError, BudgetError, ConfigError) as error:
            attempt.outcome, attempt.error = "failed", f"{type(error).__name__}: {error}"
            attempt.seconds = time.perf_counter() - started
            return AttemptOutcome(attempt.error, attempts)
        except Exception as error:  # noqa: BLE001 - sorted below: OOM retries, anything else is recorded
            attempt.seconds = time.perf_counter() - started
            if not is_out_of_memory(error):
                attempt.outcome, attempt.error = "failed", f"{type(error).__name__}: {error}"
                return AttemptOutcome(attempt.error, attempts)
            attempt.outcome, attempt.error = "out_of_memory", f"{type(error).__name__}: {str(error)[:300]}"
        else:
            attempt.outcome = "answered"
            attempt.seconds = time.perf_counter() - started
            return AttemptOutcome(None, attempts, result)
        # Out of the except block, so the exception's traceback (and the tensors its frames hold) is gone.
        free_device_memory()
        # From the scale the attempt ended at: it may have shrunk its plan further before generating.
        scale = math.floor(attempt.budget_scale * shrink * 1e6) / 1e6
    reason = f"out of memory on all {oom_retries + 1} attempts (last budget scale {attempts[-1].budget_scale:g})"
    return AttemptOutcome(reason, attempts)
