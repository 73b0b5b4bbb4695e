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

from omni_lmms_plugin import answering
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

    # A request runs alone (_answer/_stage) or in a group sharing its video (_answer_group/_stage_group, whose leader's
    # doc id decides the group's faults); each attempt stages once.
    current: dict[str, int] = {}

    def counting(method, doc_of):
        def wrapped(self, unit, *rest):
            current.update(doc_id=doc_of(unit), attempt=-1)
            return method(self, unit, *rest)

        return wrapped

    def staging(method, docs_of):
        def wrapped(self, unit, *rest):
            current["attempt"] += 1
            if calls_file:
                with open(calls_file, "a") as handle:
                    handle.writelines(f"{doc_id}\n" for doc_id in docs_of(unit))
            return method(self, unit, *rest)

        return wrapped

    def out_of_memory_first(generate):
        def wrapped(*args, **kwargs):
            doc_id, attempt_index = current["doc_id"], current["attempt"]
            if (doc_id in oom_docs and attempt_index == 0) or (oom_random and random_oom(doc_id, attempt_index)):
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
            return generate(*args, **kwargs)

        return wrapped

    answerer = answering.Answerer
    answerer._answer = counting(answerer._answer, lambda request: request.doc_id)
    answerer._answer_group = counting(answerer._answer_group, lambda group: group.leader.doc_id)
    answerer._stage = staging(answerer._stage, lambda request: [request.doc_id])
    answerer._stage_group = staging(answerer._stage_group, lambda group: [r.doc_id for r in group.members])
    answering.run_generate = out_of_memory_first(answering.run_generate)
    answering.generate_from_prefix = out_of_memory_first(answering.generate_from_prefix)

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
