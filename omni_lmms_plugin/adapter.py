"""The lmms-eval model ``qwen2_5_omni_safe``: Qwen2.5-Omni's thinker with every request planned to fit its context,
generated with bounded memory, retried smaller after out-of-memory, and recorded in provenance.

One request's path: lmms-eval's tuple becomes a :class:`~omni_lmms_plugin.request.Request` and its settings are parsed
once (:meth:`~omni_lmms_plugin.planner.Planner.settings`); a finished request is answered from the provenance journal
(resume); the rest are grouped by media and settings (:func:`~omni_lmms_plugin.sharing.group_requests`: the questions
on one video are planned, decoded, encoded and prefilled once, see :mod:`~omni_lmms_plugin.sharing`), and each group is
planned and prepared (probe, plan, decode, processor) ahead of the GPU on ``prefetch_workers`` threads in
:func:`~omni_lmms_plugin.prefetch.prefetched`; :class:`~omni_lmms_plugin.answering.Answerer` answers each group (each
attempt fits its plan to the free device memory and generates; a group's retry re-plans the whole group); one
provenance record is written per request as soon as its group ends, and the answers go back in lmms-eval's order.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from tqdm import tqdm

from . import __version__, manifest, rank_sharing
from .answering import Answerer
from .budget import Geometry
from .config import NOT_IN_RESUME_KEY, AdapterConfig, resolve_attention, resolve_dtype
from .errors import ConfigError, GenerationFailedError
from .memory import ModelDims
from .model_surgery import install_grouped_vision_encoding, install_last_position_logits
from .planner import ModelFacts, Planner, flash_attn_available
from .prefetch import prefetched
from .provenance import ProvenanceWriter, default_provenance_dir, stable_hash
from .request import Request, RequestSettings, unpack_request
from .request_plan import torch_linspace_indices
from .sharing import MediaGroup, group_requests, media_keys

__all__ = ["Qwen25OmniSafe"]

logger = logging.getLogger("omni_lmms_plugin")

# The CUDA allocator reads this when CUDA initialises (not when torch is imported): set before any GPU work, unless
# the user chose.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


class Qwen25OmniSafe(lmms):
    """Qwen2.5-Omni (7B or 3B) for lmms-eval, planned to an exact token budget and OOM-safe. Options: README."""

    is_simple = True

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        import transformers
        from accelerate import Accelerator

        self.config = AdapterConfig.from_model_args(model_args)
        if self.config.share_across_ranks and _response_cache_on():
            logger.warning(
                "lmms-eval's --use_cache is on: each rank answers the requests lmms-eval gave it "
                "(share_across_ranks=false), as a rank whose requests all hit the cache never calls the model"
            )
            self.config = dataclasses.replace(self.config, share_across_ranks=False)
        self._exchanges = 0  # generate_until calls that exchanged requests across ranks (each rank counts its own)
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
        destroy_cpu_process_group_at_exit()
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
        # Preparation threads decode and run the processor in parallel, each with its own processor (answering.py).

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
        self.answerer = Answerer(
            self.model,
            self.processor,
            self.planner,
            self.config,
            device=self._device,
            dtype=self.dtype,
            attention=self.attn_implementation,
            config_key=self.config_key,
        )

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

        keys = media_keys(todo, settings, share=self.config.share_video_prefix)
        deal = self._deal_across_ranks(todo, keys, settings, first_foreign_index=len(unpacked))
        if deal is not None:
            todo = deal.mine
            keys.update(deal.keys)
            progress.total = progress.n + len(todo) + len(deal.sent)
            progress.refresh()
        answers: dict[int, GenerationResult] = {}
        groups = group_requests(todo, keys, settings, lambda request: self.planner.templated(request)[1])

        try:
            workers = self.config.preparing_at_once()

            def prepare(group: MediaGroup) -> Any:
                return self.answerer.prepare(group, settings)

            try:
                for group, prepared in prefetched(groups, prepare, self.config.prefetch, workers):
                    records = self.answerer.answer(group, settings, prepared)
                    for request, record in zip(group.members, records, strict=True):
                        self.provenance.write(record)
                        self._media_log.add(request.task, record.media)
                        retries += sum(1 for attempt in record.attempts if attempt["outcome"] == "out_of_memory")
                        failures += record.status == "failed"
                        answers[request.index] = GenerationResult(
                            record.answer, TokenCounts(record.tokens.get("input"), record.tokens.get("generated"))
                        )
                        progress.update(1)
                        progress.set_postfix(retries=retries, failed=failures, resumed=resumed)
                        if record.status == "failed" and self.config.on_failure == "raise":
                            raise GenerationFailedError(f"{request.task}/{request.doc_id}: {record.failure}")
            except BaseException as error:
                if deal is not None:  # the other ranks wait for this rank's answers: tell them it failed, then raise
                    self._return_answers(deal, answers, failure=f"{type(error).__name__}: {error}")
                raise
            if deal is not None:
                for index, (text, input_tokens, generated) in self._return_answers(deal, answers).items():
                    answers[index] = GenerationResult(text, TokenCounts(input_tokens, generated))
                    progress.update(1)
        finally:
            progress.close()
            self._record_datasets(unpacked)
        for index, answer in answers.items():
            if index < len(results):
                results[index] = answer
        return results  # type: ignore[return-value]

    def _deal_across_ranks(
        self,
        todo: list[Request],
        keys: dict[int, str | None],
        settings: dict[int, RequestSettings],
        *,
        first_foreign_index: int,
    ) -> rank_sharing.Deal | None:
        """With several data-parallel ranks, each video's requests are answered on one rank (see rank_sharing);
        the received requests' settings are parsed here. None on one rank, or with sharing off."""
        if not (
            self.config.share_video_prefix
            and self.config.share_across_ranks
            and self._world_size > 1
            and torch.distributed.is_initialized()
        ):
            return None
        self._exchanges += 1
        deal = rank_sharing.deal_requests(
            todo,
            keys,
            rank=self._rank,
            first_foreign_index=first_foreign_index,
            gather=_all_gather,
            call=self._exchanges,
        )
        for request in deal.mine:
            if request.index in deal.foreign:
                settings[request.index] = self.planner.settings(request)
        return deal

    def _return_answers(
        self, deal: rank_sharing.Deal, answers: dict[int, GenerationResult], failure: str | None = None
    ) -> dict[int, rank_sharing.Answer]:
        """The received requests' answers sent home; this rank's own, answered elsewhere, collected. ``failure``: this
        rank failed (the others are told, and raise)."""
        portable = {
            index: (answer.text, answer.token_counts.input_tokens, answer.token_counts.output_tokens)
            for index, answer in answers.items()
        }
        return rank_sharing.return_answers(
            deal, portable, rank=self._rank, gather=_all_gather, call=self._exchanges, failure=failure
        )

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


def _response_cache_on(argv: list[str] | None = None) -> bool:
    """Whether the command line that started the run turned on lmms-eval's response cache (``--use_cache``); the
    model is not told."""
    return any(arg == "--use_cache" or arg.startswith("--use_cache=") for arg in (sys.argv if argv is None else argv))


def destroy_cpu_process_group_at_exit() -> None:
    """When the ranks talk over gloo (CPU), destroy their process group at interpreter exit, while the interpreter is
    still whole. lmms-eval never destroys it, and gloo's worker threads outliving the interpreter's teardown can abort
    a rank after its run finished ("terminate called without an active exception", exit -6, so torchrun reports the
    run as failed; pytorch/pytorch#179291 describes the race; seen once in this project's two-rank test). Not for
    NCCL: destroying it while another rank waits in a collective can hang."""
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized() and distributed.get_backend() == "gloo":
        atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _all_gather(item: Any) -> list[Any]:
    """Every rank's ``item``, in rank order (torch.distributed's object all-gather)."""
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, item)
    return gathered


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
