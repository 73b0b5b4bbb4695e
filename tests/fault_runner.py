"""Run the real lmms-eval CLI with faults injected into qwen2_5_omni_safe, for the reliability tests.

    python fault_runner.py '<json spec>' <lmms-eval arguments...>

The spec maps a fault to the doc ids whose FIRST attempt it hits: ``{"oom_first_attempt": [0, 2]}`` raises
``torch.cuda.OutOfMemoryError`` from generation; ``{"count_calls": "<file>"}`` appends one line per model call.
"""

from __future__ import annotations

import json
import sys

import torch

from omni_lmms_plugin import adapter


def main() -> None:
    spec = json.loads(sys.argv[1])
    sys.argv = ["lmms-eval", *sys.argv[2:]]
    original = adapter.Qwen25OmniSafe._generate
    oom_docs = set(spec.get("oom_first_attempt", []))
    calls_file = spec.get("count_calls")

    def generate(self, request, inputs, attempt, params):
        if calls_file:
            with open(calls_file, "a") as handle:
                handle.write(f"{request.doc_id}\n")
        if request.doc_id in oom_docs and attempt.index == 0:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return original(self, request, inputs, attempt, params)

    adapter.Qwen25OmniSafe._generate = generate
    from lmms_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
