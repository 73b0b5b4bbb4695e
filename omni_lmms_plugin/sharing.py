"""One video, many questions: the requests of a run that show the same media with the same settings are planned,
decoded, encoded and prefilled once, and each question is generated from a copy of that shared prefix.

With the chat template, every question on the same media renders as the same token prefix (system turn, then the
media blocks up to the last ``<|vision_eos|>`` / ``<|audio_eos|>``) followed by its own text. So a group of requests
is planned once, for the member whose prompt plus ``max_new_tokens`` is longest (then every member fits the plan's
budget); the leader's inputs are decoded and run through the processor once; the model's forward over the prefix
(with the media tensors) gives a key/value cache and the rope offset (``rope_deltas``) of the multimodal positions;
each member then generates from its full token ids, a deep copy of the cache and the restored offset, with no media
tensors (the suffix holds no media tokens). Checked in transformers 5.24: greedy answers equal those of each question
run alone with the group's plan (``tests/test_sharing.py``).

Requests whose media are not named by paths (PIL images, waveform arrays), that carry subtitles (their lines depend
on the plan and sit in the question) or that use beam search are groups of one and run the plain way.

Memory: a member's generation holds the prefix cache and one copy of it (prefix tokens x layers x 2 x KV heads x head
dim x dtype bytes each), on top of what the memory fit estimates for the leader's plan.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import MediaError
from .generation import GenerationParams, run_generate
from .inputs import PreparedInputs, inputs_hash
from .request import Request, RequestSettings, classify_visuals

__all__ = [
    "MediaGroup",
    "PrefixCache",
    "media_key",
    "media_keys",
    "group_requests",
    "member_inputs",
    "prefill",
    "generate_from_prefix",
]

# The tokens that close a media block in the chat template; the shared prefix ends after the last of them.
MEDIA_END_TOKENS = ("<|vision_eos|>", "<|audio_eos|>")


@dataclass(frozen=True)
class MediaGroup:
    """Requests showing the same media with the same video settings, in lmms-eval's order. ``leader`` is the member
    the media are planned for (the longest prompt plus ``max_new_tokens``); ``key`` identifies the media and
    settings (empty for a group of one)."""

    key: str
    members: tuple[Request, ...]
    leader: Request

    @property
    def shared(self) -> bool:
        return len(self.members) > 1

    def note(self, prefix_tokens: int) -> str:
        """What provenance says about the sharing."""
        return (
            f"prefix shared: group {self.key[:16]} of {len(self.members)} requests, planned for "
            f"{self.leader.task}/{self.leader.doc_id} (longest prompt); its {prefix_tokens} prefix tokens were "
            "decoded, encoded and prefilled once"
        )


def media_key(request: Request, settings: RequestSettings) -> str | None:
    """The group key of a request: its media (by path) and video settings; None when it cannot share (beam search
    expands the batch, which a shared cache of batch 1 does not follow)."""
    if settings.params.num_beams > 1:
        return None
    try:
        items = classify_visuals(request.visuals())
    except MediaError:
        return None  # fails when planned, on its own
    sources = []
    for item in items:
        if item.kind == "subtitles" or not isinstance(item.source, (str, list)):
            return None
        sources.append((item.kind, item.source))
    if not sources:
        return None
    payload = json.dumps([sources, settings.to_record()], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def media_keys(
    requests: Sequence[Request], settings: dict[int, RequestSettings], *, share: bool
) -> dict[int, str | None]:
    """Each request's group key (:func:`media_key`) by ``Request.index``; all None when ``share`` is False
    (``share_video_prefix=false``)."""
    return {request.index: media_key(request, settings[request.index]) if share else None for request in requests}


def group_requests(
    requests: Sequence[Request],
    keys: Mapping[int, str | None],
    settings: dict[int, RequestSettings],
    prompt_tokens: Callable[[Request], int],
) -> list[MediaGroup]:
    """Group ``requests`` (across tasks) by their keys, in the order of each group's first member.

    Args:
        requests: the requests to run, in lmms-eval's order.
        keys: each request's group key by ``Request.index`` (:func:`media_keys`); None (or absent) runs it alone.
        settings: each request's parsed settings, by ``Request.index``.
        prompt_tokens: a request's templated prompt length in tokens (called only for members of shared groups).
    """
    groups: dict[str, list[Request]] = {}
    order: list[str | Request] = []
    for request in requests:
        key = keys.get(request.index)
        if key is None:
            order.append(request)
        elif key in groups:
            groups[key].append(request)
        else:
            groups[key] = [request]
            order.append(key)
    result = []
    for entry in order:
        if isinstance(entry, Request):
            result.append(MediaGroup("", (entry,), entry))
            continue
        members = tuple(groups[entry])
        if len(members) == 1:
            result.append(MediaGroup("", members, members[0]))
            continue
        leader = max(members, key=lambda r: prompt_tokens(r) + settings[r.index].params.max_new_tokens)
        result.append(MediaGroup(entry, members, leader))
    return result


def _prefix_length(input_ids: torch.Tensor, tokenizer: Any) -> int:
    """Tokens up to and including the last media-closing token of a ``(1, L)`` id tensor."""
    ends = torch.tensor([tokenizer.convert_tokens_to_ids(token) for token in MEDIA_END_TOKENS])
    positions = torch.isin(input_ids[0], ends).nonzero()
    if positions.numel() == 0:
        raise ValueError("the inputs hold no media block: nothing to share")
    return int(positions[-1]) + 1


def _suffix_text(text: str) -> str:
    """The templated text after the last media-closing token (the question and the assistant turn's start)."""
    cut = max(text.rfind(token) + len(token) for token in MEDIA_END_TOKENS if token in text)
    return text[cut:]


def member_inputs(leader: PreparedInputs, text: str, prompt_tokens: int, tokenizer: Any) -> PreparedInputs:
    """A member's inputs from the leader's: the leader's media plan and prefix ids, then the member's own question.

    Args:
        leader: the leader's prepared inputs (decoded and processed once for the group).
        text: the member's chat-templated prompt (same system turn and media blocks as the leader's).
        prompt_tokens: the member's prompt tokens (every token but the media blocks' own).
        tokenizer: the processor's tokenizer.

    Returns:
        Inputs whose ``batch`` holds only ``input_ids`` and ``attention_mask`` (the media are in the prefix cache);
        ``input_hash`` is that of the full batch the member would get alone with this plan.
    """
    prefix = _prefix_length(leader.batch["input_ids"], tokenizer)
    suffix = tokenizer(_suffix_text(text), add_special_tokens=False, return_tensors="pt")["input_ids"]
    ids = torch.cat([leader.batch["input_ids"][:, :prefix], suffix], dim=1)
    plan = dataclasses.replace(leader.plan, text=text, prompt_tokens=prompt_tokens)
    if ids.shape[1] != plan.input_tokens:
        raise RuntimeError(
            f"token accounting mismatch in a shared prefix: planned {plan.input_tokens} input tokens, the prefix "
            f"({prefix}) and the question give {ids.shape[1]}; please report this with the provenance record"
        )
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    tokens = {**leader.tokens, "prompt": prompt_tokens, "input": int(ids.shape[1]), "shared_prefix": prefix}
    return PreparedInputs(
        batch,
        plan,
        copy.deepcopy(leader.media),
        tokens,
        inputs_hash({**leader.batch, **batch}),
        decode_seconds=0.0,
    )


@dataclass
class PrefixCache:
    """The model's key/value cache over a group's shared prefix and the rope offset its multimodal positions left."""

    cache: Any
    rope_deltas: torch.Tensor | None
    tokens: int


def prefill(model: torch.nn.Module, batch: dict[str, Any], tokenizer: Any, *, use_audio_in_video: bool) -> PrefixCache:
    """Run the model once over the shared prefix of ``batch`` (the leader's full inputs, on the device), media
    tensors included, and keep the cache."""
    prefix = _prefix_length(batch["input_ids"], tokenizer)
    inputs = {
        **batch,
        "input_ids": batch["input_ids"][:, :prefix],
        "attention_mask": batch["attention_mask"][:, :prefix],
    }
    with torch.inference_mode():
        output = model(**inputs, use_cache=True, use_audio_in_video=use_audio_in_video)
    return PrefixCache(output.past_key_values, model.model.rope_deltas, prefix)


def generate_from_prefix(
    model: torch.nn.Module,
    prefix: PrefixCache,
    batch: dict[str, Any],
    params: GenerationParams,
    *,
    use_audio_in_video: bool,
    tokenizer: Any,
) -> tuple[str, int]:
    """Generate a member's answer from a copy of the prefix cache: ``batch`` holds its full ``input_ids`` and
    ``attention_mask`` on the device. Returns the answer (cut at stop strings) and its new tokens."""
    # Every generate call leaves its own offset behind; the cached prefix's positions need the prefix's.
    model.model.rope_deltas = prefix.rope_deltas
    inputs = {**batch, "cache": copy.deepcopy(prefix.cache)}
    return run_generate(model, inputs, params, use_audio_in_video=use_audio_in_video, tokenizer=tokenizer)
