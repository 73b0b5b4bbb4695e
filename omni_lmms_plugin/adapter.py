"""The lmms-eval model ``qwen2_5_omni_safe``: Qwen2.5-Omni's thinker with every request planned to fit its context,
generated with bounded memory, retried smaller after out-of-memory, and recorded in provenance.

Request loop: unpack lmms-eval's tuples into :class:`~omni_lmms_plugin.inputs.Request` objects; answer finished
requests from the provenance journal (resume); prepare the rest (probe, plan, decode, processor) ahead of the GPU in
:func:`~omni_lmms_plugin.pipeline.prefetched`; generate each through
:func:`~omni_lmms_plugin.generation.run_with_retries`; write one provenance record per request as soon as it ends.
"""

from __future__ import annotations

import os

# The allocator reads this when CUDA initialises: set it before anything touches the GPU, unless the user chose.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from lmms_eval.api.instance import GenerationResult, TokenCounts  # noqa: E402
from lmms_eval.api.model import lmms  # noqa: E402
from tqdm import tqdm  # noqa: E402

from . import __version__, manifest  # noqa: E402
from . import generation as gen  # noqa: E402
from .budget import GRID_PIXELS, PATCH_SIZE, TEMPORAL_PATCH  # noqa: E402
from .config import AdapterConfig, TaskVideoOverrides, split_generation_kwargs  # noqa: E402
from .errors import ConfigError, GenerationFailedError  # noqa: E402
from .inputs import PreparedInputs, Request, RequestPlan, plan_request, prepare_inputs, unpack_request  # noqa: E402
from .memory import GIB, ModelDims  # noqa: E402
from .pipeline import Prepared, prefetched  # noqa: E402
from .provenance import (  # noqa: E402
    ProvenanceWriter,
    SampleRecord,
    default_provenance_dir,
    failure_answer,
    stable_hash,
)

__all__ = ["Qwen25OmniSafe"]

logger = logging.getLogger("omni_lmms_plugin")

# Model args that change neither the inputs nor the answers: left out of the resume key.
_NOT_IN_RESUME_KEY = ("provenance_dir", "prefetch", "resume", "batch_size", "decode_timeout")
_MAX_MEMORY_SHRINKS = 12


@dataclass
class _Answered:
    answer: str
    inputs: PreparedInputs
    new_tokens: int
    peak_memory_bytes: int | None
    estimated_peak_bytes: int | None


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
        self.dtype = self._choose_dtype()
        self.attn_implementation = self._choose_attention()

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
        self._check_geometry()
        gen.install_last_position_logits(self.model)
        gen.install_grouped_vision_encoding(self.model, self.config.vision_group_frames)

        text_config = self.model.config.text_config
        self.max_model_len = self.config.max_model_len or int(text_config.max_position_embeddings)
        parameters = list(self.model.parameters())
        self.weight_bytes = sum(p.numel() * p.element_size() for p in parameters)
        self.dims = ModelDims.from_config(self.model.config, parameters=sum(p.numel() for p in parameters))

        folder = Path(self.config.provenance_dir) if self.config.provenance_dir else default_provenance_dir()
        self.provenance = ProvenanceWriter(folder, self._rank)
        weights = manifest.weight_files(self.config.pretrained, self.config.revision)
        self.config_key = stable_hash(
            {
                "config": {k: v for k, v in self.config.to_dict().items() if k not in _NOT_IN_RESUME_KEY},
                "weights": [(path.name, path.stat().st_size, int(path.stat().st_mtime)) for path in weights],
                "plugin": __version__,
                "transformers": transformers.__version__,
            }
        )
        self._prepare_lock = threading.RLock()
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
        if choice in ("auto", "cpu") or (choice == "cuda" and not torch.cuda.is_available()):
            if choice == "cuda":
                raise ConfigError("device=cuda was asked for but torch sees no CUDA device; use device=cpu or auto")
            return torch.device("cpu")
        return torch.device(choice)

    def _choose_dtype(self) -> torch.dtype:
        if self.config.dtype == "auto":
            return torch.bfloat16 if self._device.type == "cuda" else torch.float32
        return getattr(torch, self.config.dtype)

    def _choose_attention(self) -> str:
        choice = self.config.attn_implementation
        if choice == "auto":
            if self._device.type == "cuda":
                try:
                    import flash_attn  # noqa: F401

                    return "flash_attention_2"
                except ImportError:
                    pass
            return "sdpa"
        if choice == "eager":
            logger.warning(
                "attn_implementation=eager materialises heads x L^2 attention scores (about 168 GiB at 32k tokens "
                "on the 7B); use sdpa or flash_attention_2 unless you are comparing against eager on purpose"
            )
        return choice

    def _check_geometry(self) -> None:
        vision = self.model.config.vision_config
        found = (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size)
        if found != (PATCH_SIZE, GRID_PIXELS // PATCH_SIZE, TEMPORAL_PATCH):
            raise ConfigError(
                f"{self.config.pretrained}: vision geometry (patch, merge, temporal) = {found}, but the token budget "
                f"is built for ({PATCH_SIZE}, {GRID_PIXELS // PATCH_SIZE}, {TEMPORAL_PATCH}) as in Qwen2.5-Omni"
            )

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
        # lmms-eval pads data-parallel ranks with copies marked __padding_only__ and discards their answers: they are
        # not computed, and stay out of provenance and reports.
        results: list[GenerationResult | None] = [
            GenerationResult("", TokenCounts(0, 0)) if instance.metadata.get("__padding_only__") else None
            for instance in requests
        ]
        unpacked = [
            unpack_request(index, instance, self.task_dict)
            for index, instance in enumerate(requests)
            if results[index] is None
        ]
        gen.check_generation_kwargs(
            [(r.task, split_generation_kwargs(r.gen_kwargs)[0]) for r in unpacked], self.config.max_new_tokens
        )
        self._record_datasets(unpacked)
        progress = tqdm(total=len(unpacked), desc="qwen2_5_omni_safe", disable=self._rank != 0, dynamic_ncols=True)
        retries = failures = resumed = 0
        todo: list[Request] = []
        for request in unpacked:
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
        try:
            for request, prepared in prefetched(todo, self._prepare_first, self.config.prefetch):
                record = self._answer(request, prepared)
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

    def _generation_settings(self, request: Request) -> tuple[gen.GenerationParams, TaskVideoOverrides]:
        generation_kwargs, overrides = split_generation_kwargs(request.gen_kwargs)
        return gen.GenerationParams.from_lmms(generation_kwargs, self.config.max_new_tokens), overrides

    def _plan(self, request: Request, budget_scale: float) -> RequestPlan:
        params, overrides = self._generation_settings(request)
        with self._prepare_lock:
            return plan_request(
                self.processor,
                request,
                self.config,
                overrides,
                max_model_len=self.max_model_len,
                max_new_tokens=params.max_new_tokens,
                budget_scale=budget_scale,
            )

    def _prepare(self, request: Request, budget_scale: float) -> PreparedInputs:
        # The prefetch thread and a retry on the main thread may both prepare; the processor is not made for that.
        with self._prepare_lock:
            return prepare_inputs(self.processor, request, self._plan(request, budget_scale), self.config)

    def _prepare_first(self, request: Request) -> PreparedInputs:
        return self._prepare(request, 1.0)

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

    def _estimate(self, plan: RequestPlan, max_new_tokens: int) -> int:
        return plan.estimate_peak(
            self.dims,
            attention=self.attn_implementation,
            dtype=str(self.dtype).replace("torch.", ""),
            vision_group_frames=self.config.vision_group_frames,
            max_new_tokens=max_new_tokens,
            weight_bytes=self.weight_bytes,
        )

    def _fit_memory(
        self, request: Request, inputs: PreparedInputs, attempt: gen.Attempt, max_new_tokens: int
    ) -> tuple[PreparedInputs, int]:
        """Shrink the plan before generating while the estimate exceeds the free device memory (or the cap). Only
        plans are made while shrinking (metadata); the chosen one is decoded once."""
        plan = inputs.plan
        estimate = self._estimate(plan, max_new_tokens)
        room = self._memory_room()
        scale, shrinks = attempt.budget_scale, 0
        while (
            room is not None and estimate - self.weight_bytes > room and plan.videos and shrinks < _MAX_MEMORY_SHRINKS
        ):
            smaller = self._plan(request, scale * self.config.oom_shrink)
            if smaller.input_tokens >= plan.input_tokens:
                attempt.notes.append("the plan is at its smallest; generating with it (the OOM loop guards the rest)")
                break
            scale, shrinks, plan = scale * self.config.oom_shrink, shrinks + 1, smaller
            estimate = self._estimate(plan, max_new_tokens)
        if shrinks:
            attempt.budget_scale = scale
            attempt.notes.append(f"plan shrunk {shrinks}x before generating: estimated peak above the memory available")
            with self._prepare_lock:
                inputs = prepare_inputs(self.processor, request, plan, self.config)
        return inputs, estimate

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

    def _generate(
        self, request: Request, inputs: PreparedInputs, attempt: gen.Attempt, params: gen.GenerationParams
    ) -> _Answered:
        inputs, estimate = self._fit_memory(request, inputs, attempt, params.max_new_tokens)
        attempt.plan_summary = [_summarise(entry) for entry in inputs.media]
        attempt.input_tokens = inputs.tokens["input"]
        gpus = self._cuda_devices()
        for device in gpus:
            torch.cuda.reset_peak_memory_stats(device)
        batch = self._to_device(inputs)
        try:
            answer, new_tokens = gen.run_generate(
                self.model,
                batch,
                params,
                use_audio_in_video=inputs.use_audio_in_video,
                tokenizer=self.processor.tokenizer,
            )
        finally:
            del batch
        # The peak of the fullest GPU (with a device map, the one that bounds the plan).
        peak = max((torch.cuda.max_memory_allocated(device) for device in gpus), default=None)
        return _Answered(answer, inputs, new_tokens, peak, estimate)

    def _answer(self, request: Request, prepared: Prepared[PreparedInputs]) -> SampleRecord:
        started = time.perf_counter()
        policy: dict[str, Any] = {}

        def attempt_fn(attempt: gen.Attempt) -> _Answered:
            params, overrides = self._generation_settings(request)
            chosen = {k: v for k, v in self.config.video_policy(overrides).__dict__.items() if k != "use_audio"}
            policy.update(chosen, use_audio_in_video=overrides.use_audio_in_video or self.config.use_audio_in_video)
            inputs = prepared.get() if attempt.index == 0 else self._prepare(request, attempt.budget_scale)
            return self._generate(request, inputs, attempt, params)

        outcome = gen.run_with_retries(attempt_fn, oom_retries=self.config.oom_retries, shrink=self.config.oom_shrink)
        answered: _Answered | None = outcome.result
        if answered is not None and not answered.answer.strip():
            # Never an empty string scored as an answer: it is recorded as what it is.
            outcome.failure = f"the model generated no text ({answered.new_tokens} new tokens, cut at stop strings)"
            outcome.attempts[-1].outcome = "empty"
        answer = (
            answered.answer if answered is not None and outcome.failure is None else failure_answer(outcome.failure)
        )
        tokens = dict(answered.inputs.tokens) if answered else {}
        if answered:
            tokens["generated"] = answered.new_tokens
        return SampleRecord(
            task=request.task,
            doc_id=request.doc_id,
            split=request.split,
            request_key=request.key(),
            config_key=self.config_key,
            status="answered" if outcome.failure is None else "failed",
            answer=answer,
            failure=outcome.failure,
            media=answered.inputs.media if answered else [],
            tokens=tokens,
            attempts=[attempt.to_dict() for attempt in outcome.attempts],
            attention=self.attn_implementation,
            peak_memory_bytes=answered.peak_memory_bytes if answered else None,
            estimated_peak_bytes=answered.estimated_peak_bytes if answered else None,
            wall_seconds=round(time.perf_counter() - started, 3),
            media_wait_seconds=round(prepared.wait_seconds, 3),
            input_hash=answered.inputs.input_hash if answered else None,
            video_policy=policy,
        )


def _summarise(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("kind", "frames", "height", "width", "sample_fps", "audio_seconds", "total_tokens", "case")
    return {key: entry[key] for key in keys if key in entry}


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
