"""Start-up cost of the weight digest in the run manifest: every start hashing every weight file (before) vs the
per-file digest cache (after).

    python benchmarks/startup_hash.py [--gib 8] [--files 4] [--folder DIR]

Writes a dummy checkpoint of ``--gib`` GiB in ``--files`` ``*.safetensors`` files (random bytes; the 7B's weights are
about 17 GB), then times :func:`omni_lmms_plugin.manifest.weight_digest` three ways: without a cache (what every
start, resumes included, did before), with an empty cache (the first start: hash and store), and with the cache
filled (every later start). The files were just written, so the reads come from the page cache: a start after a
reboot reads the disk and the "before" figure grows, the cached one does not.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from omni_lmms_plugin import manifest

_BLOCK = 64 << 20


def write_checkpoint(folder: Path, gib: float, files: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    per_file = int(gib * (1 << 30)) // files
    block = os.urandom(_BLOCK)
    paths = []
    for index in range(files):
        path = folder / f"model-{index + 1:05d}-of-{files:05d}.safetensors"
        if not path.exists() or path.stat().st_size != per_file:
            with open(path, "wb") as handle:
                for start in range(0, per_file, _BLOCK):
                    handle.write(block[: min(_BLOCK, per_file - start)])
        paths.append(path)
    return paths


def timed(paths: list[Path], cache: Path | None) -> tuple[float, str]:
    started = time.perf_counter()
    digest = manifest.weight_digest(paths, cache)
    sources = "+".join(sorted({f["source"] for f in digest["files"]}))
    return time.perf_counter() - started, sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=8.0, help="checkpoint size in GiB (default 8)")
    parser.add_argument("--files", type=int, default=4, help="weight files (default 4)")
    parser.add_argument("--folder", default=None, help="where to write the checkpoint (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.folder) if args.folder else Path(scratch) / "checkpoint"
        paths = write_checkpoint(folder, args.gib, args.files)
        cache = Path(scratch) / "weight_sha256.json"
        before, _ = timed(paths, None)
        first, first_source = timed(paths, cache)
        later, later_source = timed(paths, cache)
    print(f"checkpoint: {args.gib:g} GiB in {args.files} files")
    print(f"before (no cache, every start):  {before:8.3f} s")
    print(f"after, first start ({first_source}):  {first:8.3f} s")
    print(f"after, later starts ({later_source}):    {later:8.3f} s  ({before / later:,.0f}x faster)")


if __name__ == "__main__":
    main()
