"""The submission bundle of ``omni-lmms report --bundle``: results, samples, manifests, provenance and the report in one
``.tar.gz`` with a ``SHA256SUMS`` file (``sha256sum -c`` format); :func:`check_bundle` verifies one."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

from .runs import RunFolder

__all__ = ["CHECKSUMS", "write_bundle", "check_bundle"]

CHECKSUMS = "SHA256SUMS"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(run: RunFolder, out: str | Path, extra_files: Iterable[Path] = ()) -> Path:
    """One ``.tar.gz`` with the results, the samples files, every manifest and provenance journal, the benchmark
    submission files (``<run>/submissions/*.json``, e.g. EgoSchema's), ``extra_files`` (the report and its plots), and
    ``SHA256SUMS`` over all of them; paths inside are relative to the run folder, under one top folder named after the
    archive."""
    out = Path(out)
    top = out.name.removesuffix(".gz").removesuffix(".tar").removesuffix(".tgz") or "bundle"
    members: list[tuple[str, bytes]] = []
    submissions = sorted((run.path / "submissions").glob("*.json"))
    paths = [run.results_path, *run.sample_paths, *run.manifest_paths, *run.provenance_paths, *submissions]
    for path in [*paths, *extra_files]:
        path = Path(path)
        try:
            name = path.resolve().relative_to(run.path.resolve()).as_posix()
        except ValueError:
            name = f"omni_report/{path.name}"
        members.append((name, path.read_bytes()))
    checksums = "".join(f"{_sha256(data)}  {name}\n" for name, data in members).encode()
    members.append((CHECKSUMS, checksums))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    tmp.replace(out)
    return out


def check_bundle(bundle: str | Path) -> list[str]:
    """Problems with a bundle: files whose SHA-256 differs from ``SHA256SUMS``, listed files that are missing, files
    not listed. Empty when the bundle is intact."""
    problems: list[str] = []
    with tarfile.open(bundle, "r:gz") as archive:
        files = {}
        for member in archive.getmembers():
            if member.isfile():
                handle = archive.extractfile(member)
                files[member.name.split("/", 1)[1] if "/" in member.name else member.name] = (
                    handle.read() if handle else b""
                )
    if CHECKSUMS not in files:
        return [f"{bundle}: no {CHECKSUMS} file"]
    listed = {}
    for line in files.pop(CHECKSUMS).decode().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for name, digest in listed.items():
        if name not in files:
            problems.append(f"{name}: listed in {CHECKSUMS} but missing")
        elif _sha256(files[name]) != digest:
            problems.append(f"{name}: SHA-256 {_sha256(files[name])} does not match {CHECKSUMS} ({digest})")
    problems.extend(f"{name}: not listed in {CHECKSUMS}" for name in sorted(set(files) - set(listed)))
    return problems
