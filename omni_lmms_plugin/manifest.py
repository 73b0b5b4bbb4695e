"""The run manifest: versions, devices, the model's weight files and their SHA-256, the datasets and media files read.

Hashing a 7B checkpoint (about 17 GB) takes minutes, so each weight file's digest is cached by its resolved path,
size and modification time (``mtime_ns``) in a small JSON file (:func:`default_digest_cache`); a file whose size or
mtime changed is hashed again. The manifest says, per file, whether its digest was ``computed`` or read from the
``cache``.

Datasets: each task's split, size and the datasets library's fingerprint, with the Hub repository and the commit it
resolved (from the datasets cache folder, ``<owner>___<name>/<config>/<version>/<commit>``) when the data came from the
Hub; and a fingerprint of the media files the run actually read (:class:`MediaLog`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "weight_files",
    "snapshot_revision",
    "default_digest_cache",
    "weight_digest",
    "dist_version",
    "build_manifest",
    "dataset_entry",
    "MediaLog",
]

logger = logging.getLogger("omni_lmms_plugin")

_BLOCK_BYTES = 1 << 24  # read size when hashing a weight file
_MEDIA_EDGE_BYTES = 1 << 20  # a media file's fingerprint reads this much from its start and from its end
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def weight_files(pretrained: str, revision: str | None = None) -> list[Path]:
    """The weight files behind ``pretrained``: a local folder, or the snapshot in the Hugging Face cache (empty when
    neither is on disk)."""
    folder = Path(pretrained)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(
                    pretrained, revision=revision, local_files_only=True, allow_patterns=["*.safetensors", "*.json"]
                )
            )
        except Exception:  # noqa: BLE001 - provenance only: a missing snapshot leaves the weight list empty
            return []
    return sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))


def snapshot_revision(weights: list[Path]) -> str | None:
    """The commit of a Hugging Face cache snapshot holding ``weights`` (``.../snapshots/<commit>/file``), if any."""
    for path in weights:
        if path.parent.parent.name == "snapshots":
            return path.parent.name
    return None


def default_digest_cache() -> Path:
    """``$XDG_CACHE_HOME/omni_lmms_plugin/weight_sha256.json`` (``~/.cache`` when the variable is unset)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "omni_lmms_plugin" / "weight_sha256.json"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_cache(cache: Path) -> dict[str, Any]:
    try:
        entries = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _write_cache(cache: Path, entries: dict[str, Any]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(cache)
    except OSError as error:
        logger.warning("could not write the weight digest cache %s (%s); digests will be computed again", cache, error)


def weight_digest(paths: list[Path], cache: Path | None) -> dict[str, Any] | None:
    """The SHA-256 of every weight file and one digest over all of them; None when there are no files.

    Returns ``{"sha256": <over the sorted "name:digest" lines>, "files": [{"name", "bytes", "sha256", "source"}]}``
    where ``source`` is ``"cache"`` when the digest was reused (same resolved path, size in bytes and ``mtime_ns``)
    and ``"computed"`` when the file was read. ``cache`` None reads every file and keeps nothing.
    """
    if not paths:
        return None
    entries = _read_cache(cache) if cache is not None else {}
    files: list[dict[str, Any]] = []
    changed = False
    for path in paths:
        stat = path.stat()
        key = str(path.resolve())
        entry = entries.get(key)
        if isinstance(entry, dict) and entry.get("bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            sha, source = str(entry["sha256"]), "cache"
        else:
            sha, source = _sha256_file(path), "computed"
            entries[key] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
            changed = True
        files.append({"name": path.name, "bytes": stat.st_size, "sha256": sha, "source": source})
    if cache is not None and changed:
        _write_cache(cache, entries)
    lines = "".join(f"{f['name']}:{f['sha256']}\n" for f in sorted(files, key=lambda f: f["name"]))
    return {"sha256": hashlib.sha256(lines.encode()).hexdigest(), "files": files}


def dist_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def build_manifest(
    *,
    plugin_version: str,
    device: str,
    rank: int,
    world_size: int,
    model_path: str,
    revision: str | None,
    weights: list[Path],
    digest_cache: Path | None,
    dtype: str,
    attention: str,
    max_model_len: int,
    model_args: dict[str, Any],
    config_key: str,
) -> dict[str, Any]:
    """The manifest of one rank: library versions (FFmpeg's included), devices, the model and its weight digests
    (rank 0 only: the ranks share the files), dtype, attention, context length (tokens) and every model arg."""
    import accelerate
    import av
    import lmms_eval
    import PIL
    import soxr
    import torch
    import transformers

    digest = weight_digest(weights, digest_cache) if rank == 0 else None
    sources = sorted({f["source"] for f in digest["files"]}) if digest else []
    return {
        "plugin": plugin_version,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "lmms_eval": getattr(lmms_eval, "__version__", dist_version("lmms_eval")),
        "accelerate": accelerate.__version__,
        "av": av.__version__,
        # The media's numbers depend on these too: images are resized by PIL's bicubic, audio resampled by soxr.
        "pillow": PIL.__version__,
        "soxr": soxr.__version__,
        "ffmpeg": {
            name: ".".join(map(str, v)) if isinstance(v, tuple) else str(v) for name, v in av.library_versions.items()
        },
        "device": device,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
        "rank": rank,
        "world_size": world_size,
        "model_path": model_path,
        "model_revision": revision or snapshot_revision(weights),
        "weight_sha256": digest["sha256"] if digest else None,
        # "computed", "cache" or "cache+computed": where the per-file digests behind weight_sha256 came from.
        "weight_sha256_source": "+".join(sources) or None,
        "weight_files": digest["files"] if digest else [],
        "dtype": dtype,
        "attention": attention,
        "max_model_len": max_model_len,
        "model_args": model_args,
        "config_key": config_key,
    }


def dataset_entry(docs: Any, split: str) -> dict[str, Any]:
    """What identifies one task's documents: split, number of docs, the datasets library's content fingerprint,
    builder and config names, and for data loaded from the Hub its repository (lower case, as the datasets cache
    names it) and resolved commit, read from the Arrow cache file's folder."""
    info = getattr(docs, "info", None)
    entry: dict[str, Any] = {
        "split": split,
        "docs": len(docs),
        "fingerprint": getattr(docs, "_fingerprint", None),
        "builder": getattr(info, "builder_name", None),
        "config": getattr(info, "config_name", None),
        "repo": None,
        "commit": None,
    }
    for cache_file in getattr(docs, "cache_files", None) or []:
        # <cache>/<owner>___<name>/<config>/<version>/<commit>/<file>.arrow
        folder = Path(cache_file.get("filename", "")).parent
        if _COMMIT.match(folder.name) and "___" in folder.parents[2].name:
            entry["repo"] = folder.parents[2].name.replace("___", "/", 1)
            entry["commit"] = folder.name
            break
    return entry


def _media_fingerprint(path: Path) -> str:
    """SHA-256 of a file's size and its first and last MiB: cheap on a benchmark's gigabytes of video, and any
    re-encode, truncation or replacement changes it."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(_MEDIA_EDGE_BYTES))
        if size > _MEDIA_EDGE_BYTES:
            handle.seek(max(_MEDIA_EDGE_BYTES, size - _MEDIA_EDGE_BYTES))
            digest.update(handle.read(_MEDIA_EDGE_BYTES))
    return digest.hexdigest()


class MediaLog:
    """The media files each task read, by file name (the data set's location differs between machines), with a
    fingerprint of each (:func:`_media_fingerprint`)."""

    def __init__(self) -> None:
        self._files: dict[str, dict[str, str]] = {}

    def add(self, task: str, media: Iterable[dict[str, Any]]) -> None:
        """Record the files behind a sample's media entries (the ``path`` of each video; in-memory media have none)."""
        files = self._files.setdefault(task, {})
        for entry in media:
            path = entry.get("path")
            if path and os.path.isfile(path) and Path(path).name not in files:
                files[Path(path).name] = _media_fingerprint(Path(path))

    def summary(self, task: str) -> dict[str, Any]:
        """``{"count", "sha256" (over the sorted name:fingerprint lines), "files" {name: fingerprint}}``."""
        files = dict(sorted(self._files.get(task, {}).items()))
        lines = "".join(f"{name}:{fingerprint}\n" for name, fingerprint in files.items())
        return {"count": len(files), "sha256": hashlib.sha256(lines.encode()).hexdigest(), "files": files}
