"""Shared fixtures: the tiny offline checkpoints (built once per machine, cached) and their processor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a hub: everything they load is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_7b() -> Path:
    from omni_lmms_plugin.tiny_model import tiny_checkpoint

    return tiny_checkpoint("7b")


@pytest.fixture(scope="session")
def tiny_3b() -> Path:
    from omni_lmms_plugin.tiny_model import tiny_checkpoint

    return tiny_checkpoint("3b")


@pytest.fixture(scope="session")
def processor(tiny_7b):
    from transformers import Qwen2_5OmniProcessor

    return Qwen2_5OmniProcessor.from_pretrained(tiny_7b)
