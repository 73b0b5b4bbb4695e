"""The lmms-eval model ``qwen2_5_omni_safe``: Qwen2.5-Omni's thinker with every request planned to fit its context,
generated with bounded memory, retried smaller after out-of-memory, and recorded in provenance.

One request's path: lmms-eval's tuple becomes a :class:`~omni_lmms_plugin.request.Request` and its settings are parsed
once (:meth:`~omni_lmms_plugin.planner.Planner.settings`); a finished request is answered from the provenance journal
(resume); the rest are grouped by media and settings (:func:`~omni_lmms_plugin.sharing.group_requests`: the questions
on one video are planned, decoded, encoded and prefilled once, see :mod:`~omni_lmms_plugin.sharing`), and each group is
planned and prepared (probe, plan, decode, processor) ahead of the GPU on ``prefetch_workers`` threads in
:func:`~omni_lmms_plugin.pipeline.prefetched`; each attempt fits its plan to the free device memory
(:meth:`~omni_lmms_plugin.planner.Planner.fit`) and generates; :func:`~omni_lmms_plugin.retries.run_with_retries` owns
the attempts (a group's retry re-plans the whole group); one provenance record is written per request as soon as its
group ends, and the answers go back in lmms-eval's order.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from tqdm import tqdm

from . import __version__, manifest
from .budget import Geometry
from .config import NOT_IN_RESUME_KEY, AdapterConfig, resolve_attention, resolve_dtype
from .errors import ConfigError, GenerationFailedError, OmniPluginError
from .generation import GenerationParams, run_generate
from .inputs import PreparedInputs, prepare_inputs
from .memory import GIB, ModelDims
from .model_surgery import install_grouped_vision_encoding, install_last_position_logits
from .pipeline import Prepared, default_workers, prefetched
from .planner import ModelFacts, Planner, flash_attn_available
from .provenance import ProvenanceWriter, SampleRecord, default_provenance_dir, failure_answer, stable_hash
from .request import Request, RequestSettings, unpack_request
from .request_plan import torch_linspace_indices
from .retries import is_out_of_memory, run_with_retries
from .sharing import MediaGroup, PrefixCache, generate_from_prefix, group_requests, member_inputs, prefill

__all__ = ["Qwen25OmniSafe"]

logger = logging.getLogger("omni_lmms_plugin")

# The CUDA allocator reads this when CUDA initialises (not when torch is imported): set before any GPU work, unless
# the user chose.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


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


class _LockedProcessor:
    """The processor, each call holding ``lock``: ``prepare_inputs`` decodes outside it and processes inside it, so
    several preparation threads decode at once while the processor (its tokenizer is not made for concurrent calls)
    runs one at a time."""

    def __init__(self, processor: Any, lock: Any) -> None:
        self._processor = processor
        self._lock = lock

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._processor(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)


class Qwen25OmniSafe(lmms):
    """Qwen2.5-Omni (7B or 3B) for lmms-eval, planned to an exact token budget and OOM-safe. Options: README."""

    is_simple = True

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        import transformers
        from accelerate import Accelerator

        self.config = AdapterConfig.from_model_args(model_args)
        if (
            torch.cuda.is_available()
            and torch.cuda.is_initialized()
            and "expandable_segments" not in os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "")
        ):
            logger.warning("CUDA was initialised before qwen2_5_omni_safe loaded; expandable segments may be off")

        # One full model per rank (data parallel). Ranks come from the launcher's environment, as lmms-eval shards
        # documents by them; LOCAL_RANK picks the GPU.
        self._local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self._rank = int(os.environ.get("RANK", 0))
        self._world_size = int(os.environ.get("WORLD_SIZE", 1))
        self._device = self._choose_device()
        self.accelerator = Accelerator(cpu=self._device.type == "cpu")
        self.dtype = getattr(torch, resolve_dtype(self.config.dtype, self._device.type))
        self.attn_implementation = resolve_attention(
            self.config.attn_implementation, self._device.type, flash_attn_available()
        )
        if self.attn_implementation == "eager":
            logger.warning(
                "attn_implementation=eager materialises heads x L^2 attention scores (about 168 GiB at 32k tokens "
                "on the 7B); use sdpa or flash_attention_2 unless you are comparing against eager on purpose"
            )

        load_kwargs: dict[str, Any] = {"dtype": self.dtype, "attn_implementation": self.attn_implementation}
        if self.config.revision:
            load_kwargs["revision"] = self.config.revision
        if self.config.device_map:
            load_kwargs["device_map"] = _parse_device_map(self.config.device_map)
            if isinstance(load_kwargs["device_map"], dict) and "disk" in load_kwargs["device_map"].values():
                # Removed when the model object goes away or the process exits.
                self._offload_dir = tempfile.TemporaryDirectory(prefix="omni-lmms-offload-")
                load_kwargs["offload_folder"] = self._offload_dir.name
            if self.config.max_memory_per_gpu:
                load_kwargs["max_memory"] = _parse_max_memory(self.config.max_memory_per_gpu)
        self.processor = transformers.Qwen2_5OmniProcessor.from_pretrained(
            self.config.pretrained, **({"revision": self.config.revision} if self.config.revision else {})
        )
        self.model = transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            self.config.pretrained, **load_kwargs
        )
        if self.config.device_map:
            # Inputs go where the first layer lives; the towers' outputs are moved to the embeddings' device by the
            # model itself when they are merged.
            self._device = self.model.get_input_embeddings().weight.device
        else:
            self.model.to(self._device)
        self.model.eval()
        install_last_position_logits(self.model)
        install_grouped_vision_encoding(self.model, self.config.vision_group_frames)

        parameters = list(self.model.parameters())
        self.weight_bytes = sum(p.numel() * p.element_size() for p in parameters)
        self.planner = Planner(
            self.processor,
            self.config,
            ModelFacts(
                max_model_len=self.config.max_model_len or int(self.model.config.text_config.max_position_embeddings),
                dims=ModelDims.from_config(self.model.config, parameters=sum(p.numel() for p in parameters)),
                dtype=str(self.dtype).replace("torch.", ""),
                attention=self.attn_implementation,
                weight_bytes=self.weight_bytes,
                weight_bytes_source="measured",
                geometry=Geometry.from_model(self.model.config, self.processor.feature_extractor),
            ),
            # The reference's own index rule (float32 linspace), so long videos get its exact frames.
            frame_indices=torch_linspace_indices,
        )
        self.max_model_len = self.planner.facts.max_model_len
        # Preparation threads decode in parallel; the processor (not made for concurrent calls) runs one at a time.
        self._locked_processor = _LockedProcessor(self.processor, self.planner.lock)

        folder = Path(self.config.provenance_dir) if self.config.provenance_dir else default_provenance_dir()
        self.provenance = ProvenanceWriter(folder, self._rank)
        weights = manifest.weight_files(self.config.pretrained, self.config.revision)
        self.config_key = stable_hash(
            {
                "config": {k: v for k, v in self.config.to_dict().items() if k not in NOT_IN_RESUME_KEY},
                "weights": [(path.name, path.stat().st_size, int(path.stat().st_mtime)) for path in weights],
                "plugin": __version__,
                "transformers": transformers.__version__,
            }
        )
        self.manifest = manifest.build_manifest(
            plugin_version=__version__,
            device=str(self._device),
            rank=self._rank,
            world_size=self._world_size,
            model_path=self.config.pretrained,
            revision=self.config.revision,
            weights=weights,
            digest_cache=manifest.default_digest_cache(),
            dtype=str(self.dtype).replace("torch.", ""),
            attention=self.attn_implementation,
            max_model_len=self.max_model_len,
            model_args=self.config.to_dict(),
            config_key=self.config_key,
        )
        self.provenance.write_manifest(self.manifest)
        self._media_log = manifest.MediaLog()

    # ---------------------------------------------------------------------------------------------------------------
    # Setup
    # ---------------------------------------------------------------------------------------------------------------

    def _choose_device(self) -> torch.device:
        choice = self.config.device
        if choice in ("auto", "cuda") and torch.cuda.is_available():
            return torch.device(f"cuda:{self._local_rank}")
        if choice == "cuda":
            raise ConfigError("device=cuda was asked for but torch sees no CUDA device; use device=cpu or auto")
        if choice in ("auto", "cpu"):
            return torch.device("cpu")
        return torch.device(choice)

    # ---------------------------------------------------------------------------------------------------------------
    # lmms-eval interface
    # ---------------------------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self._device

    def loglikelihood(self, requests: list) -> list:
        raise NotImplementedError("qwen2_5_omni_safe answers generate_until tasks only; loglikelihood is not supported")

    def generate_until_multi_round(self, requests: list) -> list:
        raise NotImplementedError("qwen2_5_omni_safe does not support multi-round generation")

    def generate_until(self, requests: list) -> list[GenerationResult]:
        unpacked = [unpack_request(index, instance, self.task_dict) for index, instance in enumerate(requests)]
        # Settings are parsed once per request, all before the first sample: a bad generation kwarg or task policy
        # key is one error naming it, not one recorded failure per sample.
        settings = {}
        for request in unpacked:
            try:
                settings[request.index] = self.planner.settings(request)
            except ConfigError as error:
                raise ConfigError(f"task {request.task}: {error}") from None
        self._record_datasets(unpacked)
        results: list[GenerationResult | None] = [None] * len(unpacked)
        progress = tqdm(total=len(unpacked), desc="qwen2_5_omni_safe", disable=self._rank != 0, dynamic_ncols=True)
        retries = failures = resumed = 0
        todo: list[Request] = []
        for request in unpacked:
            if request.padding:
                # lmms-eval's data-parallel padding clone: its result is dropped, so nothing is computed or recorded.
                results[request.index] = GenerationResult("", TokenCounts(0, 0))
                progress.update(1)
                continue
            finished = self.provenance.finished(self.config_key, request.key()) if self.config.resume else None
            if finished is None:
                todo.append(request)
                continue
            results[request.index] = GenerationResult(
                finished.answer, TokenCounts(finished.tokens.get("input"), finished.tokens.get("generated"))
            )
            self._media_log.add(request.task, finished.media)
            resumed += 1
            progress.update(1)

        groups = group_requests(
            todo, settings, lambda request: self.planner.templated(request)[1], share=self.config.share_video_prefix
        )

        def prepare_first(group: MediaGroup) -> PreparedInputs | _GroupInputs:
            if group.shared:
                return self._prepare_group(group, settings, 1.0)
            return self._prepare(group.leader, settings[group.leader.index], 1.0)

        try:
            workers = self.config.prefetch_workers or default_workers()
            for group, prepared in prefetched(groups, prepare_first, self.config.prefetch, workers):
                if group.shared:
                    records = self._answer_group(group, settings, prepared)
                else:
                    records = [self._answer(group.leader, settings[group.leader.index], prepared)]
                for request, record in zip(group.members, records, strict=True):
                    self.provenance.write(record)
                    self._media_log.add(request.task, record.media)
                    retries += sum(1 for attempt in record.attempts if attempt["outcome"] == "out_of_memory")
                    failures += record.status == "failed"
                    results[request.index] = GenerationResult(
                        record.answer, TokenCounts(record.tokens.get("input"), record.tokens.get("generated"))
                    )
                    progress.update(1)
                    progress.set_postfix(retries=retries, failed=failures, resumed=resumed)
                    if record.status == "failed" and self.config.on_failure == "raise":
                        raise GenerationFailedError(f"{request.task}/{request.doc_id}: {record.failure}")
        finally:
            progress.close()
            self._record_datasets(unpacked)
        return results  # type: ignore[return-value]

    def _record_datasets(self, requests: list[Request]) -> None:
        """Write the datasets read (see :func:`manifest.dataset_entry`) and the media files read so far into the
        manifest; the revision each task pinned is in lmms-eval's results under ``configs``."""
        datasets = self.manifest.setdefault("datasets", {})
        for task, split in sorted({(r.task, r.split) for r in requests}):
            datasets[task] = {
                **manifest.dataset_entry(self.task_dict[task][split], split),
                "media_files": self._media_log.summary(task),
            }
        self.provenance.write_manifest(self.manifest)

    # ---------------------------------------------------------------------------------------------------------------
    # One request
    # ---------------------------------------------------------------------------------------------------------------

    def _prepare(self, request: Request, settings: RequestSettings, scale: float) -> PreparedInputs:
        plan = self.planner.plan(request, settings, scale)
        return prepare_inputs(self._locked_processor, request, plan, self.config)

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
            inputs = prepare_inputs(self._locked_processor, request, fit.plan, self.config)
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
        fit = self.planner.fit(leader, settings[leader.index], shared.leader.plan, self._memory_room())
        if fit.shrinks:
            inputs = prepare_inputs(self._locked_processor, leader, fit.plan, self.config)
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


def _parse_device_map(spec: str) -> str | dict[str, Any]:
    """``auto``, ``balanced``, ``balanced_low_0`` or ``sequential``, or a JSON file mapping module names to devices."""
    if spec in ("auto", "balanced", "balanced_low_0", "sequential"):
        return spec
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(
            f"device_map={spec!r} is neither auto/balanced/balanced_low_0/sequential nor a JSON file mapping module names to devices"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"device_map file {path}: invalid JSON ({error})") from None


def _parse_max_memory(spec: str) -> dict[Any, str]:
    """``"20GiB"`` for every GPU, or ``"0:20GiB;1:22GiB;cpu:64GiB"`` per device."""
    if ":" not in spec:
        return {index: spec for index in range(torch.cuda.device_count())} or {"cpu": spec}
    limits: dict[Any, str] = {}
    for part in spec.split(";"):
        key, _, value = part.partition(":")
        limits[int(key) if key.isdigit() else key] = value
    return limits
