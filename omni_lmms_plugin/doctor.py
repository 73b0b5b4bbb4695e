"""``omni-lmms doctor``: the versions that matter, the GPUs, the allocator setting, the registration, and the known-bad
combinations with their fix. Exit code 1 when something would break a run."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version

__all__ = ["Finding", "TESTED_TRANSFORMERS", "collect", "render"]

# The transformers range the adapter is tested on (the 5.x processor calling form; 4.x lacks it).
TESTED_TRANSFORMERS = (Version("5.0"), Version("6.0"))
VERIFIED_MATRIX = [
    # python, torch, transformers, lmms-eval, av, accelerate: combinations this plugin's test suite passed on
    ("3.11", "2.14.1", "5.24.0", "0.7.3", "15.1.0", "1.15.0"),
]


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``level`` is ok, info, warn or error."""

    level: str
    subject: str
    detail: str


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _import_error(module: str) -> str | None:
    """Import ``module`` in a fresh interpreter (a broken binary extension must not take this process down)."""
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120)
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {result.returncode}"


def collect() -> list[Finding]:
    findings: list[Finding] = [Finding("info", "python", platform.python_version())]

    import torch

    findings.append(Finding("info", "torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"))
    for name in (
        "transformers",
        "lmms_eval",
        "accelerate",
        "av",
        "qwen-omni-utils",
        "flash-attn",
        "filelock",
        "omni-lmms-plugin",
    ):
        found = _version(name)
        optional = name in ("flash-attn", "qwen-omni-utils")  # extras: flash, test
        findings.append(Finding("info" if found or optional else "error", name, found or "not installed"))

    transformers_version = _version("transformers")
    if transformers_version and not TESTED_TRANSFORMERS[0] <= Version(transformers_version) < TESTED_TRANSFORMERS[1]:
        findings.append(
            Finding(
                "error",
                "transformers",
                f"{transformers_version} is outside the tested range >=5.0,<6: pip install 'transformers>=5.0,<6'",
            )
        )
    filelock_version = _version("filelock")
    if filelock_version and Version(filelock_version) >= Version("4"):
        findings.append(
            Finding(
                "error",
                "filelock",
                f"{filelock_version}: lmms-eval 0.7.3 imports filelock._api, gone in filelock 4: pip install 'filelock<4'",
            )
        )

    import av

    ffmpeg = av.library_versions.get("libavcodec")
    findings.append(Finding("info", "PyAV FFmpeg", f"libavcodec {'.'.join(map(str, ffmpeg)) if ffmpeg else 'unknown'}"))
    for codec in ("h264", "aac"):
        try:
            av.codec.Codec(codec, "r")
        except Exception as error:  # noqa: BLE001 - reported as a finding
            findings.append(Finding("error", "PyAV", f"no {codec} decoder ({error}): reinstall av from its wheels"))

    if _version("flash-attn"):
        problem = _import_error("flash_attn")
        if problem:
            findings.append(
                Finding(
                    "error",
                    "flash-attn",
                    f"installed but does not import ({problem}); it was probably built for another torch: pip install --force-reinstall --no-build-isolation flash-attn, or use attn_implementation=sdpa",
                )
            )
        elif not torch.cuda.is_available():
            findings.append(Finding("warn", "flash-attn", "installed but no CUDA device is visible: sdpa will be used"))

    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            findings.append(
                Finding(
                    "info",
                    f"cuda:{index}",
                    f"{torch.cuda.get_device_name(index)}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free",
                )
            )
    else:
        findings.append(Finding("info", "GPU", "none visible (CPU runs only)"))

    allocator = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    findings.append(
        Finding(
            "info",
            "allocator",
            allocator or "PYTORCH_CUDA_ALLOC_CONF unset: the adapter sets expandable_segments:True when it loads",
        )
    )

    from lmms_eval.models import list_available_models

    registered = "qwen2_5_omni_safe" in list_available_models(True)
    findings.append(
        Finding(
            "ok" if registered else "error",
            "registration",
            "qwen2_5_omni_safe is registered with lmms-eval"
            if registered
            else "qwen2_5_omni_safe is NOT registered: reinstall omni-lmms-plugin into this environment",
        )
    )
    return findings


def render(findings: list[Finding]) -> str:
    width = max(len(finding.subject) for finding in findings)
    lines = [f"[{finding.level:>5}] {finding.subject:<{width}}  {finding.detail}" for finding in findings]
    problems = sum(finding.level == "error" for finding in findings)
    lines.append(
        "verified matrix (python, torch, transformers, lmms-eval, av, accelerate): "
        + "; ".join(", ".join(row) for row in VERIFIED_MATRIX)
    )
    lines.append(f"{problems} problem(s) found" if problems else "no problems found")
    return "\n".join(lines)
