"""Video-level sharing across data-parallel ranks.

lmms-eval deals documents to ranks round-robin, so the questions of one video (consecutive in Video-MME) land on
different ranks, and sharing within a rank never sees them together: with 3 or more ranks, nothing is shared. Before
answering, the ranks exchange what their shareable requests need (prompt, generation kwargs, task, doc id and the media
paths ``doc_to_visual`` returned) and agree on one owner rank per media group; each rank answers the groups it owns.
Afterwards they exchange the answers, so each rank returns its own requests' answers to lmms-eval, in its order.

Every rank computes the same deal from the same gathered offers (:func:`owners` is pure and deterministic). No torch:
the collective (``gather``: each rank's object in, the list of every rank's objects out, in rank order) is passed in.
Both exchanges are collectives: every rank must reach them, the same number of times. Each gathered item carries its
exchange's tag (which exchange, which ``generate_until`` call), so ranks out of step raise instead of mixing payloads;
a rank that fails while answering still joins the second exchange, and every rank then raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .request import Request

__all__ = ["Shipped", "Deal", "owners", "deal_requests", "return_answers"]

Gather = Callable[[Any], list[Any]]
# An answer as it travels between ranks: (text, input tokens, generated tokens).
Answer = tuple[str, int | None, int | None]


@dataclass(frozen=True)
class Shipped:
    """A request as another rank receives it: its lmms-eval fields and its media, already resolved to paths."""

    origin: int  # the rank lmms-eval gave it to
    index: int  # its Request.index there
    key: str  # its media group (sharing.media_key)
    context: str
    gen_kwargs: dict[str, Any]
    doc_id: int | str
    task: str
    split: str
    visuals: tuple[Any, ...]

    @classmethod
    def of(cls, request: Request, key: str, rank: int) -> Shipped:
        return cls(
            rank,
            request.index,
            key,
            request.context,
            dict(request.gen_kwargs),
            request.doc_id,
            request.task,
            request.split,
            tuple(request.visuals()),
        )

    def request(self, index: int) -> Request:
        """The request on the receiving rank, at its own ``index``; its ``doc_to_visual`` returns the shipped media."""
        visuals = list(self.visuals)
        return Request(
            index, self.context, dict(self.gen_kwargs), self.doc_id, self.task, self.split, lambda _doc: list(visuals)
        )


def portable(visuals: Sequence[Any]) -> bool:
    """Media that can travel to another rank and mean the same there: file paths (or lists of frame paths)."""
    return all(
        isinstance(item, str) or (isinstance(item, (list, tuple)) and all(isinstance(p, str) for p in item))
        for item in visuals
    )


def owners(offers: Sequence[Sequence[str]], base_loads: Sequence[int]) -> dict[str, int]:
    """The rank that answers each media group.

    Args:
        offers: per rank, the group key of each of its shareable requests.
        base_loads: per rank, the requests it answers anyway (those it cannot share).

    Groups go largest first (ties: the group offered first, by rank then position), each to the rank with the least
    load so far (ties: the lowest rank), so the ranks finish close together and every rank computes the same deal.
    """
    sizes: dict[str, int] = {}
    for keys in offers:
        for key in keys:
            sizes[key] = sizes.get(key, 0) + 1
    first_seen = {key: position for position, key in enumerate(sizes)}
    loads = list(base_loads)
    result: dict[str, int] = {}
    for key in sorted(sizes, key=lambda k: (-sizes[k], first_seen[k])):
        rank = min(range(len(loads)), key=lambda r: (loads[r], r))
        result[key] = rank
        loads[rank] += sizes[key]
    return result


@dataclass
class Deal:
    """This rank's part of the deal.

    * ``mine``: the requests this rank answers: its own that stay, then the ones other ranks sent it (at indexes from
      ``first_foreign_index`` on);
    * ``foreign``: for each received request's index here, its (origin rank, index there);
    * ``keys``: each received request's media group key, by its index here;
    * ``sent``: indexes of this rank's own requests another rank answers.
    """

    mine: list[Request]
    foreign: dict[int, tuple[int, int]] = field(default_factory=dict)
    keys: dict[int, str] = field(default_factory=dict)
    sent: list[int] = field(default_factory=list)


def _in_step(gather: Gather, tag: tuple[str, int], item: Any) -> list[Any]:
    """``gather`` of ``item``, checking that every rank sent it from the same exchange (``tag``)."""
    everyone = gather((tag, item))
    tags = [their_tag for their_tag, _ in everyone]
    if any(their_tag != tag for their_tag in tags):
        raise RuntimeError(
            f"data-parallel ranks are out of step in the request exchange (each rank's step: {tags}); run with "
            "share_across_ranks=false"
        )
    return [payload for _, payload in everyone]


def deal_requests(
    requests: Sequence[Request],
    keys: Mapping[int, str | None],
    *,
    rank: int,
    first_foreign_index: int,
    gather: Gather,
    call: int = 0,
) -> Deal:
    """Exchange the shareable ``requests`` (those with a key in ``keys`` and portable media) with the other ranks and
    return what this rank answers. A collective: every rank must call it, with or without requests; ``call`` counts
    the calls (every rank's must match)."""
    offered: list[Shipped] = []
    kept: list[Request] = []
    for request in requests:
        key = keys.get(request.index)
        visuals = request.visuals() if key is not None else []
        if key is not None and portable(visuals):
            offered.append(Shipped.of(request, key, rank))
        else:
            kept.append(request)
    everyone: list[tuple[list[Shipped], int]] = _in_step(gather, ("deal", call), (offered, len(kept)))
    deal = owners([[item.key for item in items] for items, _ in everyone], [count for _, count in everyone])
    mine = list(kept)
    result = Deal(mine)
    own = {request.index: request for request in requests}
    next_index = first_foreign_index
    for items, _ in everyone:
        for item in items:
            if deal[item.key] != rank:
                if item.origin == rank:
                    result.sent.append(item.index)
                continue
            if item.origin == rank:
                mine.append(own[item.index])
            else:
                mine.append(item.request(next_index))
                result.foreign[next_index] = (item.origin, item.index)
                result.keys[next_index] = item.key
                next_index += 1
    return result


def return_answers(
    deal: Deal,
    answers: Mapping[int, Answer],
    *,
    rank: int,
    gather: Gather,
    call: int = 0,
    failure: str | None = None,
) -> dict[int, Answer]:
    """Send the answers of received requests home and collect this rank's own from the others: the answers of
    ``deal.sent``, by index. A collective: every rank must call it, a rank that failed too (``failure`` says why; it
    gets nothing back and raises its own error); when another rank failed, this one raises."""
    outgoing = {deal.foreign[index]: answer for index, answer in answers.items() if index in deal.foreign}
    everyone: list[tuple[dict, str | None]] = _in_step(gather, ("answers", call), (outgoing, failure))
    failed = [(other, reason) for other, (_, reason) in enumerate(everyone) if reason is not None and other != rank]
    if failure is not None:
        return {}
    if failed:
        other, reason = failed[0]
        raise RuntimeError(f"rank {other} failed while answering requests dealt to it ({reason})")
    returned: dict[int, Answer] = {}
    for batch, _ in everyone:
        for (origin, index), answer in batch.items():
            if origin == rank:
                returned[index] = answer
    missing = sorted(set(deal.sent) - set(returned))
    if missing:
        raise RuntimeError(f"rank {rank}: no answer came back for requests {missing[:10]} sent to other ranks")
    return returned
