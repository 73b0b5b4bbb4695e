"""The manifest: weight digests computed once and then read from the cache while a file is unchanged, datasets with
their Hub commit, and fingerprints of the media files a run read."""

from __future__ import annotations

import hashlib
import json
import os

import datasets
import pytest

from omni_lmms_plugin import manifest


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for index in range(2):
        (folder / f"model-{index}.safetensors").write_bytes(os.urandom(1 << 20))
    return folder


def test_a_weight_digest_is_computed_once_and_reused_while_the_file_is_unchanged(checkpoint, tmp_path, monkeypatch):
    """Catches the cache not being consulted (then the second call reports ``computed``) and a stale digest being
    reused after a file changed (its size and mtime are part of the key)."""
    cache = tmp_path / "cache" / "weight_sha256.json"
    weights = manifest.weight_files(str(checkpoint))
    first = manifest.weight_digest(weights, cache)
    assert [f["source"] for f in first["files"]] == ["computed", "computed"]
    assert first["files"][0]["sha256"] == hashlib.sha256(weights[0].read_bytes()).hexdigest()

    def refuse(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(manifest, "_sha256_file", refuse)
    second = manifest.weight_digest(weights, cache)
    assert [f["source"] for f in second["files"]] == ["cache", "cache"]
    assert second["sha256"] == first["sha256"]
    monkeypatch.undo()

    weights[1].write_bytes(os.urandom(1 << 20))  # same size, new content and mtime
    os.utime(weights[1], ns=(weights[1].stat().st_atime_ns, weights[1].stat().st_mtime_ns + 10**9))
    third = manifest.weight_digest(weights, cache)
    assert [f["source"] for f in third["files"]] == ["cache", "computed"]
    assert third["sha256"] != first["sha256"]
    assert manifest.weight_digest(weights, None)["sha256"] == third["sha256"], "the cache changes no digest"


def test_a_corrupt_cache_is_recomputed_not_trusted(checkpoint, tmp_path):
    cache = tmp_path / "weight_sha256.json"
    cache.write_text("{not json")
    digest = manifest.weight_digest(manifest.weight_files(str(checkpoint)), cache)
    assert {f["source"] for f in digest["files"]} == {"computed"}
    assert len(json.loads(cache.read_text())) == 2


def test_the_adapter_manifest_says_where_the_weight_digest_came_from(tiny_7b, tmp_path, monkeypatch):
    from omni_lmms_plugin.adapter import Qwen25OmniSafe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    sources = []
    for attempt in range(2):
        model = Qwen25OmniSafe(pretrained=str(tiny_7b), device="cpu", provenance_dir=str(tmp_path / f"p{attempt}"))
        sources.append(model.manifest["weight_sha256_source"])
        assert model.manifest["weight_files"] and model.manifest["weight_sha256"]
    assert sources == ["computed", "cache"]


def test_a_hub_dataset_records_its_repository_and_resolved_commit(tmp_path):
    """The datasets library caches Hub data under ``<owner>___<name>/<config>/<version>/<commit>``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = tmp_path / "lmms-lab___video-mme" / "videomme" / "0.0.0" / commit
    folder.mkdir(parents=True)
    docs = datasets.Dataset.from_dict({"question": ["q1", "q2"]}).flatten_indices(
        cache_file_name=str(folder / "video-mme-test.arrow")
    )
    entry = manifest.dataset_entry(docs, "test")
    assert entry["repo"] == "lmms-lab/video-mme" and entry["commit"] == commit and entry["docs"] == 2
    local = manifest.dataset_entry(datasets.Dataset.from_dict({"question": ["q"]}), "test")
    assert local["repo"] is None and local["commit"] is None


def test_the_media_fingerprint_changes_with_the_file_read(tmp_path):
    """Catches a fingerprint that ignores the file's content (a re-encoded or replaced video of the same name)."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(os.urandom(3 << 20))
    log = manifest.MediaLog()
    log.add("t", [{"kind": "video", "path": str(video)}, {"kind": "image"}])
    before = log.summary("t")
    assert before["count"] == 1 and set(before["files"]) == {"clip.mp4"}
    data = bytearray(video.read_bytes())
    data[-10] ^= 0xFF  # a change near the end of the file
    video.write_bytes(bytes(data))
    after = manifest.MediaLog()
    after.add("t", [{"kind": "video", "path": str(video)}])
    assert after.summary("t")["files"]["clip.mp4"] != before["files"]["clip.mp4"]
    assert after.summary("t")["sha256"] != before["sha256"]
