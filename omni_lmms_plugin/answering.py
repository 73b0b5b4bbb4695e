"""Answering one request, or one group of requests that share a video: each attempt is staged (planned, decoded and
processed, then fitted to the free device memory) and generated, :func:`~omni_lmms_plugin.retries.run_with_retries`
owns the attempts, and the outcome becomes each request's :class:`~omni_lmms_plugin.provenance.SampleRecord`. Used by
the adapter's request loop (:mod:`omni_lmms_plugin.adapter`).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from .config import AdapterConfig
from .errors import OmniPluginError
from .generation import GenerationParams, run_generate
from .inputs import PreparedInputs, prepare_inputs
from .memory import GIB
from .planner import Planner
from .prefetch import Prepared
from .provenance import SampleRecord, failure_answer
from .request import Request, RequestSettings
from .retries import is_out_of_memory, run_with_retries
from .sharing import MediaGroup, PrefixCache, generate_from_prefix, member_inputs, prefill

__all__ = ["Answerer", "EmptyAnswerError"]


class EmptyAnswerError(OmniPluginError, RuntimeError):
    """The model generated no text: recorded as a failure, never scored as an empty answer."""


@dataclass(frozen=True)
class _GroupInputs:
    """A shared group's inputs: the leader's full inputs (media tensors included, for the prefix) and each member's
    ids, in the group's order."""

    leader: PreparedInputs
    members: tuple[PreparedInputs, ...]


@dataclass(frozen=True)
class _Staged:
    """An attempt's inputs after the memory fit: what it is about to generate from. For a shared group, ``inputs``
    are the leader's and ``members`` each member's."""

    inputs: PreparedInputs
    scale: float
    estimate: int
    fit_notes: tuple[str, ...]
    members: tuple[PreparedInputs, ...] = ()

    def member(self, position: int) -> _Staged:
        """The staged inputs of the group's member at ``position``."""
        return dataclasses.replace(self, inputs=self.members[position], members=())

    @property
    def input_tokens(self) -> int:
        return self.inputs.tokens["input"]

    def plan_summary(self) -> list[dict[str, Any]]:
        keys = ("kind", "frames", "height", "width", "sample_fps", "audio_seconds", "seconds", "total_tokens", "rule")
        return [{key: entry[key] for key in keys if key in entry} for entry in self.inputs.media]

    def notes(self) -> list[str]:
        return list(self.fit_notes)


@dataclass(frozen=True)
class _Generated:
    """What one successful ``generate`` produced."""

    staged: _Staged
    answer: str
    new_tokens: int
    peak_memory_bytes: int | None


class _ProcessorPerThread:
    """The processor as each thread that prepares requests calls it: a copy of its own, made on the thread's first
    call while holding ``lock`` (the planner's, held while planning runs the shared processor's tokenizer). The tokenizer is not made for
    concurrent calls, but most of a processor call is video and audio feature work (measured: 0.70 of 0.75 s for a
    32k-token sample of a 10-minute video), which this way runs on several threads at once instead of one at a time.
    Costs one processor (mostly its tokenizer's vocabulary) per preparation thread."""

    def __init__(self, processor: Any, lock: Any) -> None:
        self._processor = processor
        self._lock = lock
        self._local = threading.local()

    def _own(self) -> Any:
        own = getattr(self._local, "processor", None)
        if own is None:
            with self._lock:
                own = self._local.processor = copy.deepcopy(self._processor)
        return own

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._own()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._own(), name)


class Answerer:
    """Answers requests for one loaded thinker: :meth:`prepare` (ahead of the GPU) then :meth:`answer` per group."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        planner: Planner,
        config: AdapterConfig,
        *,
        device: torch.device,
        dtype: torch.dtype,
        attention: str,
        config_key: str,
    ) -> None:
        self.model = model
        self.processor = processor
        self.planner = planner
        self.config = config
        self._device = device
        self.dtype = dtype
        self.attn_implementation = attention
        self.weight_bytes = planner.facts.weight_bytes
        self.config_key = config_key
        self._thread_processor = _ProcessorPerThread(processor, planner.lock)

    def prepare(self, group: MediaGroup, settings: dict[int, RequestSettings]) -> PreparedInputs | _GroupInputs:
        """The first attempt's inputs of a group (a shared group's, or its one request's), made ahead of the GPU."""
        if group.shared:
            return self._prepare_group(group, settings, 1.0)
        return self._prepare(group.leader, settings[group.leader.index], 1.0)

    def answer(
        self, group: MediaGroup, settings: dict[int, RequestSettings], prepared: Prepared[Any]
    ) -> list[SampleRecord]:
        """One record per member of ``group``, in its order."""
        if group.shared:
            return self._answer_group(group, settings, prepared)
        return [self._answer(group.leader, settings[group.leader.index], prepared)]

    def _prepare(self, request: Request, settings: RequestSettings, scale: float) -> PreparedInputs:
        plan = self.planner.plan(request, settings, scale)
        return prepare_inputs(self._thread_processor, request, plan, self.config)

    def _prepare_group(
        self,
        group: MediaGroup,
        settings: dict[int, RequestSettings],
        scale: float,
        leader: PreparedInputs | None = None,
    ) -> _GroupInputs:
        """The group planned at ``scale`` for its leader (or from the leader's given inputs), decoded and processed
        once, and each member's ids on that plan."""
        if leader is None:
            leader = self._prepare(group.leader, settings[group.leader.index], scale)
        members = []
        for request in group.members:
            text, prompt_tokens = self.planner.templated(request)
            with self.planner.lock:
                members.append(member_inputs(leader, text, prompt_tokens, self.processor.tokenizer))
        return _GroupInputs(leader, tuple(members))

    def _memory_room(self) -> int | None:
        """Bytes available to one request's activations, or None when nothing bounds them."""
        rooms = []
        if self.config.max_memory_gib is not None:
            rooms.append(int(self.config.max_memory_gib * GIB) - self.weight_bytes)
        # With a device map the activations spread over several GPUs; the tightest one bounds the plan.
        for device in self._cuda_devices():
            free, _ = torch.cuda.mem_get_info(device)
            cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
            rooms.append(free + cached)
        return min(rooms) if rooms else None

    def _cuda_devices(self) -> list[torch.device]:
        """The GPUs holding the model: its device, or every GPU of its device map (which may also name cpu/disk)."""
        device_map = getattr(self.model, "hf_device_map", None)
        places = set(device_map.values()) if device_map else {self._device}
        devices = {
            torch.device("cuda", p) if isinstance(p, int) else torch.device(p)
            for p in places
            if isinstance(p, int) or str(p).startswith("cuda")
        }
        return sorted(devices, key=str)

    def _stage(
        self, request: Request, settings: RequestSettings, scale: float, prefetched_inputs: Prepared[PreparedInputs]
    ) -> _Staged:
        """An attempt's inputs at ``scale`` (the first attempt's come from the prefetch queue), shrunk before
        generating while the estimated peak exceeds the memory available."""
        inputs = prefetched_inputs.get() if scale == 1.0 else self._prepare(request, settings, scale)
        fit = self.planner.fit(request, settings, inputs.plan, self._memory_room())
        if fit.shrinks:
            inputs = prepare_inputs(self._thread_processor, request, fit.plan, self.config)
        return _Staged(inputs, fit.scale, fit.estimate, fit.notes)

    def _to_device(self, inputs: PreparedInputs) -> dict[str, Any]:
        """Move the batch to the device; only pixel and audio features take the model dtype (positions stay exact)."""
        batch = {}
        for name, value in inputs.batch.items():
            if not isinstance(value, torch.Tensor):
                batch[name] = value
                continue
            value = value.to(self._device)
            if name in ("pixel_values", "pixel_values_videos", "input_features"):
                value = value.to(self.dtype)
            batch[name] = value
        return batch

    def _stage_group(
        self,
        group: MediaGroup,
        settings: dict[int, RequestSettings],
        scale: float,
        prefetched_inputs: Prepared[_GroupInputs],
    ) -> _Staged:
        """A group's attempt: the whole group re-planned at ``scale`` (the first attempt's from the prefetch queue),
        its leader's plan fitted to the memory available."""
        shared = prefetched_inputs.get() if scale == 1.0 else self._prepare_group(group, settings, scale)
        leader = group.leader
        fit = self.planner.fit(
            leader, settings[leader.index], shared.leader.plan, self._memory_room(), shared_prefix=True
        )
        if fit.shrinks:
            inputs = prepare_inputs(self._thread_processor, leader, fit.plan, self.config)
            shared = self._prepare_group(group, settings, fit.scale, leader=inputs)
        note = group.note(shared.members[0].tokens["shared_prefix"])
        return _Staged(shared.leader, fit.scale, fit.estimate, (*fit.notes, note), shared.members)

    def _prefill(self, staged: _Staged) -> PrefixCache:
        batch = self._to_device(staged.inputs)
        try:
            return prefill(
                self.model, batch, self.processor.tokenizer, use_audio_in_video=staged.inputs.use_audio_in_video
            )
        finally:
            del batch

    def _generate_group(
        self, staged: _Staged, group: MediaGroup, settings: dict[int, RequestSettings]
    ) -> list[_Generated | str]:
        """The shared prefix once, then every member from a copy of it: each member's result or its failure. An
        out-of-memory error anywhere is raised, so the retry re-plans the whole group."""
        prefix = self._prefill(staged)
        outcomes: list[_Generated | str] = []
        for position, request in enumerate(group.members):
            try:
                outcomes.append(self._generate(staged.member(position), settings[request.index].params, prefix))
            except Exception as error:  # noqa: BLE001 - this member's failure; out of memory fails the group
                if is_out_of_memory(error):
                    raise
                outcomes.append(f"{type(error).__name__}: {error}")
        return outcomes

    def _generate(self, staged: _Staged, params: GenerationParams, prefix: PrefixCache | None = None) -> _Generated:
        """Generate from the staged inputs, or (a shared group's member) from a copy of the group's prefix cache."""
        gpus = self._cuda_devices()
        for device in gpus:
            torch.cuda.reset_peak_memory_stats(device)
        batch = self._to_device(staged.inputs)
        run = (
            partial(generate_from_prefix, self.model, prefix)
            if prefix is not None
            else partial(run_generate, self.model)
        )
        try:
            answer, new_tokens = run(
                batch,
                params,
                use_audio_in_video=staged.inputs.use_audio_in_video,
                tokenizer=self.processor.tokenizer,
            )
        finally:
            del batch
        if not answer.strip():
            # Never an empty string scored as an answer: it is recorded as what it is.
            raise EmptyAnswerError(f"the model generated no text ({new_tokens} new tokens, cut at stop strings)")
        # The peak of the fullest GPU (with a device map, the one that bounds the plan).
        peak = max((torch.cuda.max_memory_allocated(device) for device in gpus), default=None)
        return _Generated(staged, answer, new_tokens, peak)

    def _answer(self, request: Request, settings: RequestSettings, prepared: Prepared[PreparedInputs]) -> SampleRecord:
        started = time.perf_counter()
        outcome = run_with_retries(
            lambda scale: self._stage(request, settings, scale, prepared),
            lambda staged: self._generate(staged, settings.params),
            oom_retries=self.config.oom_retries,
            shrink=self.config.oom_shrink,
        )
        return self._record(
            request,
            settings,
            outcome.result,
            outcome.failure,
            [attempt.to_dict() for attempt in outcome.attempts],
            time.perf_counter() - started,
            prepared.wait_seconds,
        )

    def _answer_group(
        self, group: MediaGroup, settings: dict[int, RequestSettings], prepared: Prepared[_GroupInputs]
    ) -> list[SampleRecord]:
        """One record per member, in the group's order. The group's wall time is split evenly over its members and
        the wait for its media is on the first, so both add up over a run."""
        started = time.perf_counter()
        outcome = run_with_retries(
            lambda scale: self._stage_group(group, settings, scale, prepared),
            lambda staged: self._generate_group(staged, group, settings),
            oom_retries=self.config.oom_retries,
            shrink=self.config.oom_shrink,
        )
        wall = (time.perf_counter() - started) / len(group.members)
        attempts = [attempt.to_dict() for attempt in outcome.attempts]
        records = []
        for position, request in enumerate(group.members):
            result = outcome.result[position] if outcome.result is not None else None
            failure = result if isinstance(result, str) else outcome.failure
            own_attempts = attempts
            if isinstance(result, str):  # the group answered, this member did not
                own_attempts = [*attempts[:-1], {**attempts[-1], "outcome": "failed", "error": failure}]
            generated = result if isinstance(result, _Generated) else None
            wait = prepared.wait_seconds if position == 0 else 0.0
            records.append(self._record(request, settings[request.index], generated, failure, own_attempts, wall, wait))
        return records

    def _record(
        self,
        request: Request,
        settings: RequestSettings,
        generated: _Generated | None,
        failure: str | None,
        attempts: list[dict[str, Any]],
        wall_seconds: float,
        wait_seconds: float,
    ) -> SampleRecord:
        inputs = generated.staged.inputs if generated else None
        tokens = {**inputs.tokens, "generated": generated.new_tokens} if generated else {}
        return SampleRecord(
            task=request.task,
            doc_id=request.doc_id,
            split=request.split,
            request_key=request.key(),
            config_key=self.config_key,
            status="answered" if generated else "failed",
            answer=generated.answer if generated else failure_answer(failure or "no attempt ran"),
            failure=failure if not generated else None,
            media=inputs.media if inputs else [],
            tokens=tokens,
            attempts=attempts,
            attention=self.attn_implementation,
            peak_memory_bytes=generated.peak_memory_bytes if generated else None,
            estimated_peak_bytes=generated.staged.estimate if generated else None,
            wall_seconds=round(wall_seconds, 3),
            media_wait_seconds=round(wait_seconds, 3),
            input_hash=inputs.input_hash if inputs else None,
            video_policy=settings.to_record(),
        )
