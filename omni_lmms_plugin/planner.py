"""The one planner: a request's plan within the token budget and its fit within device memory, built once per model
and used by the adapter (first plan, pre-generation memory fit, OOM re-plans) and by ``omni-lmms preflight``.

It holds what planning and the memory estimate need from the checkpoint (:class:`ModelFacts`): the processor (chat
template and tokenizer), the context length, the dtype and attention the model runs with, its dimensions and the
bytes of its weights. Planning reads metadata only; decoding is :func:`~omni_lmms_plugin.inputs.prepare_inputs`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .budget import QWEN25_OMNI, Geometry
from .config import AdapterConfig
from .memory import ModelDims, kv_cache_bytes
from .request import Request, RequestSettings, classify_visuals, resolve_settings
from .request_plan import RequestPlan, plan_request, templated_prompt
from .video_plan import linspace_indices

__all__ = ["ModelFacts", "MemoryFit", "Planner", "MAX_MEMORY_SHRINKS", "flash_attn_available"]

# The memory fit gives up shrinking after this many oom_shrink steps (0.7 ** 12 is 1.4% of the tokens).
MAX_MEMORY_SHRINKS = 12


@dataclass(frozen=True)
class ModelFacts:
    """What planning and the memory estimate need from the checkpoint."""

    max_model_len: int
    dims: ModelDims
    dtype: str  # "bfloat16", "float16" or "float32"
    attention: str  # "sdpa", "flash_attention_2" or "eager"
    weight_bytes: int
    weight_bytes_source: str  # "measured" (loaded parameters), "safetensors" (file headers) or "estimated"
    geometry: Geometry = QWEN25_OMNI  # patch, merge, temporal patch, audio front end: read from the model


@dataclass(frozen=True)
class MemoryFit:
    """The plan the memory fit settled on: its estimate, the scale it ran at and how many shrinks it took."""

    plan: RequestPlan
    estimate: int
    scale: float
    shrinks: int
    fits: bool
    notes: tuple[str, ...] = field(default_factory=tuple)


class Planner:
    """Plans requests for one model. Thread-safe: the prefetch thread and a retry on the main thread share the
    processor, which is not made for concurrent calls, so planning holds a lock."""

    def __init__(
        self,
        processor: Any,
        config: AdapterConfig,
        facts: ModelFacts,
        *,
        frame_indices: Callable[[int, int], Sequence[int]] = linspace_indices,
    ) -> None:
        self.processor = processor
        self.config = config
        self.facts = facts
        self.frame_indices = frame_indices
        self.lock = threading.RLock()

    def settings(self, request: Request) -> RequestSettings:
        """The request's generation parameters and video policy (parse once per request)."""
        return resolve_settings(request, self.config)

    def plan(self, request: Request, settings: RequestSettings, scale: float = 1.0) -> RequestPlan:
        """The request planned within the token budget (metadata only); ``scale < 1`` shrinks every media item."""
        with self.lock:
            return plan_request(
                self.processor,
                request,
                self.config,
                settings,
                max_model_len=self.facts.max_model_len,
                scale=scale,
                frame_indices=self.frame_indices,
                geometry=self.facts.geometry,
            )

    def templated(self, request: Request) -> tuple[str, int]:
        """The request's chat-templated prompt and its length in tokens (every token but the media blocks' own); the
        longest prompt of a shared group decides its plan."""
        with self.lock:
            items = classify_visuals(request.visuals())
            return templated_prompt(self.processor, self.config.system_prompt, items, request.context)

    def estimate(self, plan: RequestPlan, max_new_tokens: int, *, shared_prefix: bool = False) -> int:
        """Predicted peak device memory of generating from ``plan``, weights included (bytes). A shared group's member
        generates from a copy of the prefix cache while the group's cache stays alive: ``shared_prefix`` adds that
        copy (the plan's input tokens of key/value cache)."""
        estimate = plan.estimate_peak(
            self.facts.dims,
            attention=self.facts.attention,
            dtype=self.facts.dtype,
            vision_group_frames=self.config.vision_group_frames,
            max_new_tokens=max_new_tokens,
            weight_bytes=self.facts.weight_bytes,
        )
        if shared_prefix:
            estimate += kv_cache_bytes(self.facts.dims, plan.input_tokens, self.facts.dtype)
        return estimate

    def fit(
        self,
        request: Request,
        settings: RequestSettings,
        plan: RequestPlan,
        room: int | None,
        *,
        shared_prefix: bool = False,
    ) -> MemoryFit:
        """Shrink ``plan`` by ``oom_shrink`` per step while its activations (estimate minus weights) exceed ``room``
        bytes, until it fits, stops getting smaller, or ``MAX_MEMORY_SHRINKS`` steps. ``room=None``: nothing binds.
        ``shared_prefix``: the plan serves a shared group (see :meth:`estimate`)."""
        max_new_tokens = settings.params.max_new_tokens
        estimate = self.estimate(plan, max_new_tokens, shared_prefix=shared_prefix)
        scale, shrinks, notes = plan.scale, 0, []

        def fits(value: int) -> bool:
            return room is None or value - self.facts.weight_bytes <= room

        while not fits(estimate) and shrinks < MAX_MEMORY_SHRINKS:
            smaller = self.plan(request, settings, scale * self.config.oom_shrink)
            if smaller.input_tokens >= plan.input_tokens:
                notes.append("the plan is at its smallest; generating with it (the OOM loop guards the rest)")
                break
            scale, shrinks, plan = scale * self.config.oom_shrink, shrinks + 1, smaller
            estimate = self.estimate(plan, max_new_tokens, shared_prefix=shared_prefix)
        if shrinks:
            notes.append(f"plan shrunk {shrinks}x before generating: estimated peak above the memory available")
        return MemoryFit(plan, estimate, scale, shrinks, fits(estimate), tuple(notes))


def flash_attn_available() -> bool:
    """Whether the flash-attn package imports here (``attn_implementation=auto`` picks it on CUDA)."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True
