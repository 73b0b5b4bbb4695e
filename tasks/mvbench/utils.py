"""MVBench (``OpenGVLab/MVBench`` at revision ``video``): one task per sub-task, ``omni_mvbench`` the group.

Reference: lmms-eval's built-in ``mvbench`` utils, whose visual, prompt and per-sample scorer (``mcq_acc``) are used
as they are. The one difference, listed in ``tasks/PROTOCOLS.md``: the built-in's aggregation leaves empty answers
out of the denominator, which would hide failures; here they count as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omni_lmms_plugin.tasks._shared import LETTERS, response_text, sample_results, score_item


def mvbench_process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """Accuracy, answered accuracy and failures of one sub-task's sample, scored by the built-in ``mcq_acc``."""
    from lmms_eval.tasks.mvbench.utils import mcq_acc

    response = response_text(results)
    truth = next((LETTERS[i] for i, candidate in enumerate(doc["candidates"]) if candidate == doc["answer"]), "")
    correct = bool(truth) and bool(mcq_acc(truth, response))
    item = score_item(response, correct, answer=truth, pred=response)
    return sample_results("mvbench", item)
