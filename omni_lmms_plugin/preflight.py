"""``omni-lmms preflight``: what a run would do, read from metadata only, before any GPU time is spent.

For every sample of the tasks, through lmms-eval's own task loading (``TaskManager`` with our tasks folder and any
``--include-path``, ``build_all_requests``: the same contexts, generation kwargs, ``doc_to_visual`` and docs the
adapter receives), this probes each video (container headers, no frame decoded), plans the request with
:func:`omni_lmms_plugin.request_plan.plan_request` (the adapter's own planning code, with the processor of ``pretrained``
for the chat template and prompt tokens; no weights are loaded), and predicts its peak memory with
:func:`omni_lmms_plugin.memory.estimate_peak_memory` from the checkpoint's config (bf16, sdpa unless the model args
choose eager). It reports per task:

* the distribution of planned input tokens, frames and resolutions;
* samples whose reference plan (what qwen-omni-utils would feed) did not fit and what gave way, with the tokens the
  reference wanted and the tokens planned;
* predicted peak memory against each GPU size, the samples that would not fit, and how many times the adapter would
  shrink their plan before generating (``oom_shrink`` per step, as ``qwen2_5_omni_safe`` does);
* files that cannot be read (listed with the reason, the walk goes on), samples nothing fits, and the slowest probes.

It writes a JSON report and two PNG plots beside it (``<stem>_tokens.png``, ``<stem>_memory.png``).
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .budget import Geometry
from .config import AdapterConfig, resolve_attention, resolve_dtype
from .errors import BudgetError, ConfigError, MediaError
from .memory import DTYPE_BYTES, GIB, ModelDims
from .planner import ModelFacts, Planner, flash_attn_available
from .plots import write_preflight_plots
from .report import distribution
from .request import Request, RequestSettings
from .sharing import group_requests, media_keys

__all__ = ["DEFAULT_GPU_GIB", "load_planner", "run_preflight", "render_preflight"]

DEFAULT_GPU_GIB = (24.0, 48.0, 80.0)
_UNBOUNDED_CONTEXT = 10**9
_LIST_LIMIT = 20


def _thinker_parameters(folder: Path) -> int | None:
    """Parameters of the thinker in a local checkpoint, read from its safetensors headers (no weights loaded): the
    ``thinker.``-prefixed tensors of a full Qwen2.5-Omni checkpoint, or every tensor of a thinker-only one."""
    import struct

    counts: dict[bool, int] = {True: 0, False: 0}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    for path in files:
        with open(path, "rb") as handle:
            header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
        for name, entry in header.items():
            if name != "__metadata__":
                counts[name.startswith("thinker.")] += math.prod(entry["shape"])
    return counts[True] or counts[False]


def load_planner(config: AdapterConfig) -> Planner:
    """The adapter's planner for ``config.pretrained``, from its processor, ``AutoConfig`` and safetensors headers
    (never the weights). It predicts a GPU run: the dtype and attention are those the adapter picks on CUDA."""
    import transformers

    from .request_plan import torch_linspace_indices

    revision = {"revision": config.revision} if config.revision else {}
    processor = transformers.Qwen2_5OmniProcessor.from_pretrained(config.pretrained, **revision)
    model_config = transformers.AutoConfig.from_pretrained(config.pretrained, **revision)
    thinker = getattr(model_config, "thinker_config", model_config)
    dtype = resolve_dtype(config.dtype, "cuda")
    folder = Path(config.pretrained)
    parameters = _thinker_parameters(folder) if folder.is_dir() else None
    dims = ModelDims.from_config(thinker, parameters=parameters)
    facts = ModelFacts(
        max_model_len=config.max_model_len or int(thinker.text_config.max_position_embeddings),
        dims=dims,
        dtype=dtype,
        attention=resolve_attention(config.attn_implementation, "cuda", flash_attn_available()),
        weight_bytes=dims.parameters * DTYPE_BYTES[dtype],
        weight_bytes_source="safetensors" if parameters else "estimated",
        geometry=Geometry.from_model(thinker, processor.feature_extractor),
    )
    return Planner(processor, config, facts, frame_indices=torch_linspace_indices)


# ---------------------------------------------------------------------------------------------------------------------
# Requests, as lmms-eval builds them
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _TaskRequests:
    name: str
    task: Any
    instances: list[Any]
    skipped: str | None = None


def _load_tasks(
    task_names: Sequence[str], include_paths: Sequence[str], limit: float | None, gen_kwargs: str | None
) -> list[_TaskRequests]:
    from lmms_eval.evaluator_utils import get_sample_size, get_task_list
    from lmms_eval.tasks import TaskManager, get_task_dict
    from lmms_eval.utils import simple_parse_args_string

    from .tasks import folder

    manager = TaskManager(include_path=[str(folder()), *map(str, include_paths)])
    unknown = [name for name in task_names if name not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"unknown task(s): {', '.join(unknown)}; tasks come from lmms-eval, `omni-lmms tasks-dir` and "
            "--include-path (check the name and the folder)"
        )
    overrides = simple_parse_args_string(gen_kwargs) if gen_kwargs else None
    loaded = []
    for output in get_task_list(get_task_dict(list(task_names), manager)):
        task = output.task
        if isinstance(task, tuple):
            task = task[1]
        if task is None:
            continue
        if task.get_config("output_type") != "generate_until":
            loaded.append(_TaskRequests(output.task_name, task, [], f"output_type {task.get_config('output_type')}"))
            continue
        if overrides:
            task.set_config(key="generation_kwargs", value=overrides, update=True)
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.build_all_requests(limit=get_sample_size(task, limit), rank=0, world_size=1)
        loaded.append(_TaskRequests(output.task_name, task, list(task.instances)))
    return loaded


# ---------------------------------------------------------------------------------------------------------------------
# One sample
# ---------------------------------------------------------------------------------------------------------------------


def _plan_sample(
    planner: Planner,
    request: Request,
    settings: RequestSettings,
    gpu_gib: Sequence[float],
    probe_times: list[tuple[float, str]],
    *,
    shared_prefix: bool = False,
) -> dict[str, Any]:
    """Plan one sample exactly as the adapter will (the same planner), and fit it to each GPU size; a shared group's
    leader with the copy of the prefix cache its members generate from."""

    row: dict[str, Any] = {"task": request.task, "doc_id": request.doc_id, "status": "planned"}
    started = time.perf_counter()
    try:
        plan = planner.plan(request, settings)
    except MediaError as error:
        probe_times.append((time.perf_counter() - started, error.path))
        return {**row, "status": "unreadable", "path": error.path, "error": error.cause}
    except BudgetError as error:
        return {**row, "status": "does_not_fit_budget", "error": str(error)}
    except Exception as error:  # noqa: BLE001 - reported per sample; the walk goes on
        return {**row, "status": "error", "error": f"{type(error).__name__}: {error}"}
    row["media"] = [item.kind for item in plan.items]
    sources = ", ".join(str(v.to_record()["path"]) for v in plan.videos)
    probe_times.append((time.perf_counter() - started, sources or f"{request.task}/{request.doc_id}"))

    videos = [
        {
            "path": record["path"], "frames": v.plan.frames, "width": v.plan.width, "height": v.plan.height,
            "duration": v.plan.duration, "audio_seconds": v.plan.audio_seconds, "tokens": v.plan.total_tokens,
            "rule": v.plan.rule, "reason": v.plan.reason, "reference_fits": v.plan.reference_fits,
            "reference_frames": v.plan.reference_frames, "reference_tokens": v.plan.reference_tokens,
            "frame_indices": list(v.plan.frame_indices),
        }
        for v, record in ((v, v.to_record()) for v in plan.videos)
    ]  # fmt: skip
    degraded = any(v.plan.degraded for v in plan.videos)
    row.update(
        input_tokens=plan.input_tokens,
        prompt_tokens=plan.prompt_tokens,
        max_new_tokens=settings.params.max_new_tokens,
        budget=plan.budget.media_tokens,
        videos=videos,
        frames=sum(v.plan.frames for v in plan.videos),
        degraded=degraded,
    )
    if degraded:
        row["wanted_tokens"] = plan.input_tokens + sum(
            v.plan.reference_tokens - v.plan.total_tokens for v in plan.videos
        )
        row["wanted_frames"] = sum(v.plan.reference_frames for v in plan.videos)

    row["peak_bytes"] = planner.estimate(plan, settings.params.max_new_tokens, shared_prefix=shared_prefix)
    row["shrinks"] = {}
    for gib in gpu_gib:
        room = int(gib * GIB) - planner.facts.weight_bytes
        try:
            fit = planner.fit(request, settings, plan, room, shared_prefix=shared_prefix) if room > 0 else None
        except (BudgetError, MediaError):
            fit = None
        row["shrinks"][f"{gib:g}"] = fit.shrinks if fit is not None and fit.fits else None
    return row


def _member_row(planner: Planner, leader: dict[str, Any], member: Request, settings: RequestSettings) -> dict[str, Any]:
    """A shared group member's row: the leader's media plan (the group is planned once, for its longest prompt) with
    the member's own prompt."""
    row = {
        **leader,
        "task": member.task,
        "doc_id": member.doc_id,
        "shared_with": f"{leader['task']}/{leader['doc_id']}",
    }
    if leader["status"] == "planned":
        prompt_tokens = planner.templated(member)[1]
        row.update(
            prompt_tokens=prompt_tokens,
            input_tokens=leader["input_tokens"] - leader["prompt_tokens"] + prompt_tokens,
            max_new_tokens=settings.params.max_new_tokens,
        )
    return row


# ---------------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------------


def _task_summary(name: str, rows: list[dict], gpu_gib: Sequence[float], skipped: str | None) -> dict[str, Any]:
    planned = [r for r in rows if r["status"] == "planned"]
    clipped = [r for r in planned if r.get("degraded")]
    resolutions = Counter(f"{v['width']}x{v['height']}" for r in planned for v in r["videos"])
    rules = Counter(v["rule"] for r in planned for v in r["videos"])
    memory = {}
    for gib in gpu_gib:
        key = f"{gib:g}"
        over = [r for r in planned if r["shrinks"][key] != 0]
        memory[f"{gib:g}"] = {
            "gpu_gib": gib,
            "fit": len(planned) - len(over),
            "do_not_fit": len(over),
            "fit_after_shrinking": sum(1 for r in over if r["shrinks"][key] is not None),
            "never_fit": sum(1 for r in over if r["shrinks"][key] is None),
            "samples": [
                {"doc_id": r["doc_id"], "peak_gib": round(r["peak_bytes"] / GIB, 3), "input_tokens": r["input_tokens"],
                 "shrinks_needed": r["shrinks"][key]}
                for r in sorted(over, key=lambda r: -r["peak_bytes"])
            ],
        }  # fmt: skip
    wanted = sum(r["wanted_tokens"] for r in clipped)
    got = sum(r["input_tokens"] for r in clipped)
    return {
        "task": name,
        "skipped": skipped,
        "requests": len(rows),
        "planned": len(planned),
        "tokens": distribution([r["input_tokens"] for r in planned]),
        "frames": distribution([r["frames"] for r in planned if r["videos"]]),
        "resolutions": dict(resolutions.most_common()),
        "plan_rules": dict(rules.most_common()),
        "reference_fits": sum(1 for r in planned for v in r["videos"] if v["reference_fits"]),
        "videos_with_audio": sum(1 for r in planned for v in r["videos"] if v["audio_seconds"] > 0),
        "clipped": {
            "samples": len(clipped),
            "tokens_wanted": wanted,
            "tokens_planned": got,
            "kept_fraction": round(got / wanted, 4) if wanted else None,
            "worst": [
                {
                    "doc_id": r["doc_id"],
                    "wanted_tokens": r["wanted_tokens"],
                    "planned_tokens": r["input_tokens"],
                    "wanted_frames": r["wanted_frames"],
                    "planned_frames": r["frames"],
                    "reason": "; ".join(v["reason"] for v in r["videos"] if v["rule"] != "reference"),
                }
                for r in sorted(clipped, key=lambda r: r["input_tokens"] / max(1, r["wanted_tokens"]))[:_LIST_LIMIT]
            ],
        },  # fmt: skip
        "peak_gib": distribution([round(r["peak_bytes"] / GIB, 3) for r in planned]),
        "memory": memory,
        "unreadable": [
            {"doc_id": r["doc_id"], "path": r["path"], "error": r["error"]} for r in rows if r["status"] == "unreadable"
        ],
        "does_not_fit_budget": [
            {"doc_id": r["doc_id"], "error": r["error"]} for r in rows if r["status"] == "does_not_fit_budget"
        ],
        "errors": [{"doc_id": r["doc_id"], "error": r["error"]} for r in rows if r["status"] == "error"],
    }


def run_preflight(
    tasks: Sequence[str],
    *,
    model_args: str = "",
    gpu_gib: Sequence[float] = DEFAULT_GPU_GIB,
    include_paths: Sequence[str] = (),
    output: str | Path = "preflight.json",
    limit: float | None = None,
    gen_kwargs: str | None = None,
    plots: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Walk, probe, plan and estimate every sample of ``tasks``; write the JSON report (and plots) and return it."""
    from lmms_eval.utils import simple_parse_args_string
    from tqdm import tqdm

    from .request import unpack_request

    if not tasks:
        raise ConfigError("no tasks given: pass --tasks name1,name2")
    gpu_gib = sorted(float(g) for g in gpu_gib)
    if not gpu_gib or any(not g > 0 for g in gpu_gib):
        raise ConfigError(f"--gpu-mem={gpu_gib} must list positive GiB sizes, e.g. 24,48,80")
    started = time.perf_counter()
    config = AdapterConfig.from_model_args(simple_parse_args_string(model_args or ""))
    planner = load_planner(config)
    loaded = _load_tasks(tasks, include_paths, limit, gen_kwargs)

    # The adapter's order of work: every request unpacked and its settings parsed, requests on the same media grouped
    # (share_video_prefix), each group planned once for its longest prompt.
    requests = []
    for entry in loaded:
        for instance in entry.instances:
            requests.append(unpack_request(len(requests), instance, {entry.name: entry.task.dataset}))
    settings: dict[int, RequestSettings] = {}
    planned_rows: dict[int, dict[str, Any]] = {}
    for request in requests:
        try:
            settings[request.index] = planner.settings(request)
        except ConfigError as error:
            planned_rows[request.index] = {
                "task": request.task, "doc_id": request.doc_id, "status": "error", "error": f"ConfigError: {error}"
            }  # fmt: skip
    valid = [r for r in requests if r.index in settings]
    groups = group_requests(
        valid,
        media_keys(valid, settings, share=config.share_video_prefix),
        settings,
        lambda request: planner.templated(request)[1],
    )
    probe_times: list[tuple[float, str]] = []
    with tqdm(total=len(requests), desc="preflight", unit="sample", dynamic_ncols=True, disable=not progress) as bar:
        bar.update(len(planned_rows))
        for group in groups:
            leader = _plan_sample(
                planner, group.leader, settings[group.leader.index], gpu_gib, probe_times, shared_prefix=group.shared
            )
            for member in group.members:
                planned_rows[member.index] = (
                    leader if member is group.leader else _member_row(planner, leader, member, settings[member.index])
                )
            bar.update(len(group.members))
    rows: dict[str, list[dict]] = defaultdict(list)
    for request in requests:
        rows[request.task].append(planned_rows[request.index])

    report: dict[str, Any] = {
        "tasks": [_task_summary(e.name, rows[e.name], gpu_gib, e.skipped) for e in loaded],
        "model": {
            "pretrained": config.pretrained,
            "max_model_len": planner.facts.max_model_len,
            "dtype": planner.facts.dtype,
            "attention": planner.facts.attention,
            "weights_gib": round(planner.facts.weight_bytes / GIB, 3),
            "weights_source": planner.facts.weight_bytes_source,
            "parameters": planner.facts.dims.parameters,
            "model_args": config.to_dict(),
        },
        "gpu_gib": gpu_gib,
        "gen_kwargs": gen_kwargs,
        "limit": limit,
        "slowest_probes": _slowest(probe_times),
        "probe_seconds_total": round(sum(s for s, _ in probe_times), 3),
        "seconds": None,
        "samples": [row for entry in loaded for row in rows[entry.name]],
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    report["plots"] = [str(p) for p in write_preflight_plots(report, output)] if plots else []
    report["seconds"] = round(time.perf_counter() - started, 2)
    output.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    report["output"] = str(output)
    return report


def _slowest(probe_times: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """The slowest files to probe, each file once (its slowest probe)."""
    slowest: dict[str, float] = {}
    for seconds, path in probe_times:
        slowest[path] = max(seconds, slowest.get(path, 0.0))
    ranked = sorted(slowest.items(), key=lambda item: -item[1])[:_LIST_LIMIT]
    return [{"path": path, "seconds": round(seconds, 4)} for path, seconds in ranked]


def render_preflight(report: dict[str, Any]) -> str:
    """The printable summary of :func:`run_preflight`'s report."""
    model = report["model"]
    lines = [
        f"Preflight of {', '.join(t['task'] for t in report['tasks'])} for {model['pretrained']} "
        f"(max_model_len {model['max_model_len']}, {model['dtype']}, {model['attention']}, weights {model['weights_gib']:g} GiB from {model['weights_source']})"
    ]
    for task in report["tasks"]:
        lines.append(f"{task['task']}: {task['requests']} samples, {task['planned']} planned")
        if task["skipped"]:
            lines.append(f"  skipped: {task['skipped']} (the adapter answers generate_until only)")
            continue
        if task["tokens"]:
            t = task["tokens"]
            lines.append(
                f"  input tokens  min {t['min']}  median {t['median']:g}  p90 {t['p90']}  p99 {t['p99']}  max {t['max']}"
            )
        if task["frames"]:
            f = task["frames"]
            lines.append(f"  frames        min {f['min']}  median {f['median']:g}  p90 {f['p90']}  max {f['max']}")
        if task["resolutions"]:
            top = ", ".join(f"{size} x{count}" for size, count in list(task["resolutions"].items())[:5])
            lines.append(f"  resolutions   {top}")
        clipped = task["clipped"]
        if clipped["samples"]:
            lines.append(
                f"  clipped by the budget: {clipped['samples']} samples; they wanted {clipped['tokens_wanted']} tokens "
                f"and got {clipped['tokens_planned']} ({100 * clipped['kept_fraction']:.1f}% kept)"
            )
        else:
            lines.append("  clipped by the budget: none (every plan is the reference plan)")
        if task["peak_gib"]:
            p = task["peak_gib"]
            lines.append(f"  predicted peak  median {p['median']:g} GiB  max {p['max']:g} GiB")
        for gib, memory in task["memory"].items():
            if memory["do_not_fit"]:
                docs = ", ".join(str(s["doc_id"]) for s in memory["samples"][:10])
                lines.append(
                    f"  {gib} GiB: {memory['do_not_fit']} do not fit as planned ({memory['fit_after_shrinking']} fit after "
                    f"the adapter shrinks them, {memory['never_fit']} never) - doc_ids {docs}"
                    + (" ..." if memory["do_not_fit"] > 10 else "")
                )
            else:
                lines.append(f"  {gib} GiB: all fit")
        for label, key in (
            ("unreadable", "unreadable"),
            ("nothing fits the budget", "does_not_fit_budget"),
            ("errors", "errors"),
        ):
            entries = task[key]
            if entries:
                lines.append(f"  {label}: {len(entries)}")
                for entry in entries[:_LIST_LIMIT]:
                    where = entry.get("path") or ""
                    lines.append(f"    doc_id {entry['doc_id']}: {where}{': ' if where else ''}{entry['error']}")
    if report["slowest_probes"]:
        lines.append(f"slowest probes (of {report['probe_seconds_total']:g} s probing in all):")
        lines.extend(f"  {p['seconds']:.3f} s  {p['path']}" for p in report["slowest_probes"][:5])
    lines.append(
        f"report: {report.get('output')}" + (f"; plots: {', '.join(report['plots'])}" if report["plots"] else "")
    )
    lines.append(f"took {report['seconds']:g} s")
    return "\n".join(lines)
