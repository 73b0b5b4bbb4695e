"""Run the real lmms-eval CLI with faults injected into qwen2_5_omni_safe, for the reliability tests.

    python fault_runner.py '<json spec>' <lmms-eval arguments...>

Spec keys (all optional):

- ``oom_first_attempt: [doc ids]``: the first attempt of these docs raises ``torch.cuda.OutOfMemoryError``;
- ``oom_random: {"seed": s, "rate": p}``: any attempt raises it with probability p, decided by (seed, doc, attempt);

The out-of-memory error is raised where the GPU would raise it: inside ``generate``, after the attempt has planned,
decoded and recorded its plan and input tokens, so a test can compare the retry's inputs with the failed attempt's.
- ``slow_decode: [file names]``: decoding these files stalls 0.2 s per frame (a hanging decoder);
- ``count_calls: "<file>"``: one line per model call, to count the work a run did.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import torch

from omni_lmms_plugin import adapter
from omni_lmms_plugin.media import video


def main() -> None:
    spec = json.loads(sys.argv[1])
    sys.argv = ["lmms-eval", *sys.argv[2:]]
    oom_docs = set(spec.get("oom_first_attempt", []))
    oom_random = spec.get("oom_random")
    calls_file = spec.get("count_calls")
    slow_files = set(spec.get("slow_decode", []))

    def random_oom(doc_id, attempt_index) -> bool:
        key = f"{oom_random['seed']}:{doc_id}:{attempt_index}".encode()
        return int(hashlib.sha256(key).hexdigest()[:8], 16) / 2**32 < oom_random["rate"]

    current: dict[str, int] = {}
    original_answer = adapter.Qwen25OmniSafe._answer
    original_stage = adapter.Qwen25OmniSafe._stage
    original_run_generate = adapter.run_generate

    def answer(self, request, settings, prepared):
        current.update(doc_id=request.doc_id, attempt=-1)
        return original_answer(self, request, settings, prepared)

    def stage(self, request, settings, scale, prefetched_inputs):
        # Each attempt stages once: count it, then plan, decode and fit as the adapter does.
        current["attempt"] += 1
        if calls_file:
            with open(calls_file, "a") as handle:
                handle.write(f"{request.doc_id}\n")
        return original_stage(self, request, settings, scale, prefetched_inputs)

    def run_generate(*args, **kwargs):
        doc_id, attempt_index = current["doc_id"], current["attempt"]
        if (doc_id in oom_docs and attempt_index == 0) or (oom_random and random_oom(doc_id, attempt_index)):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return original_run_generate(*args, **kwargs)

    adapter.Qwen25OmniSafe._answer = answer
    adapter.Qwen25OmniSafe._stage = stage
    adapter.run_generate = run_generate

    original_frames = video._Decoder.frames

    def frames(self):
        stall = os.path.basename(self.name) in slow_files
        for item in original_frames(self):
            if stall:
                time.sleep(0.2)
            yield item

    video._Decoder.frames = frames
    from lmms_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
