"""doc_to_* functions of the demo task (a copy of this folder is what lmms-eval loads)."""

import os

from omni_lmms_plugin.provenance import is_failure_answer


def doc_to_visual(doc):
    if not doc["video"]:
        return []
    return [os.path.join(os.path.dirname(os.path.abspath(__file__)), doc["video"])]


def doc_to_text(doc):
    return f"{doc['question']}\nAnswer with the option's letter."


def process_results(doc, results):
    answer = results[0]
    failed = is_failure_answer(answer)
    return {"accuracy": float(not failed and answer.strip()[:1] == doc["answer"]), "omni_failed": int(failed)}
