"""Video-level sharing across data-parallel ranks: each video's requests answered on one rank, every request once,
each rank given back its own answers. Simulated ranks (threads and an all-gather that pickles, as torch's does), and
the real CLI on two ranks with ``torchrun``."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e import answer_of, lmms_eval, lmms_eval_args, logged_samples, provenance
from test_multinode import free_port

from omni_lmms_plugin import rank_sharing
from omni_lmms_plugin import synthetic_media as sm
from omni_lmms_plugin.demo import offline_env, write_demo_task
from omni_lmms_plugin.request import Request


def test_owners_deal_the_largest_groups_first_to_the_least_loaded_rank():
    deal = rank_sharing.owners([["a", "b", "a"], ["a", "c"]], base_loads=[0, 0])
    assert deal == {"a": 0, "b": 1, "c": 1}
    assert rank_sharing.owners([["a"], ["b"]], base_loads=[5, 0]) == {"a": 1, "b": 1}


class _SimulatedRanks:
    """An all-gather for ranks that are threads: each rank's object goes through pickle (as torch's all_gather_object
    sends it), and every rank gets the list in rank order."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=30)
        self.slots: list[bytes | None] = [None] * world

    def gather_for(self, rank: int):
        def gather(item):
            self.slots[rank] = pickle.dumps(item)
            self.barrier.wait()
            everyone = [pickle.loads(slot) for slot in self.slots]
            self.barrier.wait()  # all have read before the next round writes
            return everyone

        return gather


def test_each_video_is_answered_on_one_rank_and_every_rank_gets_its_own_answers_back():
    """4 videos x 3 questions in Video-MME's order, dealt round-robin to 3 ranks as lmms-eval deals them (each rank
    holds one question of each video, so sharing within a rank finds nothing). Catches: a video's questions split over
    ranks, a request answered twice or never, an answer returned to the wrong rank or index."""
    world = 3
    docs = [(f"/videos/{video}.mp4", f"video {video} question {q}") for video in range(4) for q in range(3)]
    per_rank = [
        [
            Request(i, question, {}, doc_id, "videomme", "test", lambda _doc, path=path: [path])
            for i, (doc_id, (path, question)) in enumerate(list(enumerate(docs))[rank::world])
        ]
        for rank in range(world)
    ]
    ranks = _SimulatedRanks(world)

    def run(rank: int):
        own = per_rank[rank]
        keys = {request.index: request.visuals()[0] for request in own}  # the media key: the path
        deal = rank_sharing.deal_requests(
            own, keys, rank=rank, first_foreign_index=len(own), gather=ranks.gather_for(rank)
        )
        answers = {r.index: (f"answer to {r.context}", 1, 2) for r in deal.mine}
        returned = rank_sharing.return_answers(deal, answers, rank=rank, gather=ranks.gather_for(rank))
        mine_own = {r.index for r in deal.mine if r.index not in deal.foreign}
        assert mine_own | set(returned) == {r.index for r in own} and not mine_own & set(returned)
        final = {**{i: answers[i] for i in mine_own}, **returned}
        assert {i: text for i, (text, _, _) in final.items()} == {r.index: f"answer to {r.context}" for r in own}
        return deal

    with ThreadPoolExecutor(world) as pool:
        deals = list(pool.map(run, range(world)))
    answered = [(r.visuals()[0], r.context) for deal in deals for r in deal.mine]
    assert sorted(answered) == sorted(docs)  # every request once
    for video in range(4):
        path = f"/videos/{video}.mp4"
        assert sum(any(r.visuals()[0] == path for r in deal.mine) for deal in deals) == 1  # one rank per video
    assert sorted(len(deal.mine) for deal in deals) == [3, 3, 6]  # 4 groups of 3 over 3 ranks


def test_requests_that_cannot_share_stay_on_their_rank():
    """In-memory media (not a path) and requests without a key are answered where lmms-eval put them."""
    ranks = _SimulatedRanks(2)
    own = [
        [Request(0, "q", {}, 0, "t", "test", lambda _doc: [object()]), Request(1, "q", {}, 1, "t", "test")],
        [Request(0, "q", {}, 2, "t", "test", lambda _doc: ["/v.mp4"])],
    ]
    keys = [{0: "k", 1: None}, {0: "k2"}]

    def run(rank: int):
        return rank_sharing.deal_requests(
            own[rank], keys[rank], rank=rank, first_foreign_index=10, gather=ranks.gather_for(rank)
        )

    with ThreadPoolExecutor(2) as pool:
        deals = list(pool.map(run, range(2)))
    assert [r.doc_id for r in deals[0].mine] == [0, 1] and not deals[0].foreign
    assert [r.doc_id for r in deals[1].mine] == [2]


def test_ranks_out_of_step_raise_instead_of_mixing_payloads():
    """One rank in the deal while the other returns answers (as when lmms-eval calls the model on one rank only):
    both raise. Catches: gathers without their exchange's tag (the deal would read answers as offers)."""
    ranks = _SimulatedRanks(2)

    def run(rank: int):
        gather = ranks.gather_for(rank)
        if rank == 0:
            return rank_sharing.deal_requests([], {}, rank=0, first_foreign_index=0, gather=gather, call=2)
        return rank_sharing.return_answers(rank_sharing.Deal([]), {}, rank=1, gather=gather, call=1)

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run, rank) for rank in range(2)]
        for future in futures:
            with pytest.raises(RuntimeError, match="out of step"):
                future.result()


def test_a_rank_that_fails_while_answering_makes_every_rank_raise():
    """A rank whose answering raised still joins the answer exchange, so the others raise too instead of waiting for
    answers that never come. Catches: the failing rank skipping the exchange (the others would hang: here the
    barrier times out; checked by hand: BrokenBarrierError, failed), or the others returning without the answers
    it held."""
    ranks = _SimulatedRanks(2)
    deals = [rank_sharing.Deal([], sent=[0]), rank_sharing.Deal([], foreign={5: (0, 0)})]

    def run(rank: int):
        failure = "GenerationFailedError: doc 3" if rank == 1 else None
        return rank_sharing.return_answers(deals[rank], {}, rank=rank, gather=ranks.gather_for(rank), failure=failure)

    with ThreadPoolExecutor(2) as pool:
        healthy, failed = pool.submit(run, 0), pool.submit(run, 1)
        with pytest.raises(RuntimeError, match=r"rank 1 failed while answering .*doc 3"):
            healthy.result()
        assert failed.result() == {}


def test_lmms_eval_response_cache_turns_the_exchange_off(tiny_7b, tmp_path, monkeypatch):
    """With ``--use_cache`` a rank whose requests all hit lmms-eval's cache never calls the model, so the ranks would
    not meet in the exchange. Catches: the command line not read (checked by hand: share_across_ranks stayed on)."""
    from test_adapter import make_model

    from omni_lmms_plugin.adapter import _response_cache_on

    assert _response_cache_on(["lmms_eval", "--use_cache", "/tmp/cache"])
    assert _response_cache_on(["lmms_eval", "--use_cache=/tmp/cache"])
    assert not _response_cache_on(["lmms_eval", "--tasks", "omni_demo"])
    monkeypatch.setattr(sys, "argv", ["lmms_eval", "--use_cache", str(tmp_path / "cache")])
    assert make_model(tiny_7b, tmp_path).config.share_across_ranks is False


@pytest.mark.slow
def test_two_ranks_share_a_video_whose_questions_lmms_eval_dealt_to_both(tiny_7b, tmp_path):
    """Two videos x two questions in Video-MME's order on two ranks (``torchrun --nproc-per-node 2``): lmms-eval
    gives each rank one question of each video. Each video's questions are answered together on one rank (its prefix
    shared), every sample once, with the answers of a one-process run; a resumed run computes nothing again. Catches:
    no exchange between ranks (checked by hand: with ``_deal_across_ranks`` returning None every record ran alone and
    this failed), a sample answered on both ranks or on none, answers returned to the wrong rank, a resume that reads
    only its own rank's journal (checked by hand: 6 records instead of 4)."""
    folder = tmp_path / "task"
    folder.mkdir()
    for video in range(2):
        sm.write_video(folder / f"v{video}.mp4", width=160, height=120, duration=3.0, tone_hz=300 + 100 * video)
    docs = [
        {"video": f"v{video}.mp4", "question": f"Video {video}, question {q}? A. yes B. no", "answer": "AB"[q]}
        for video in range(2)
        for q in range(2)
    ]
    task = write_demo_task(folder, videos=[], extra_docs=docs)

    single = tmp_path / "single"
    lmms_eval(lmms_eval_args(tiny_7b, task, single, "resume=false"), tmp_path)

    distributed = tmp_path / "distributed"

    def two_ranks(model_args: str) -> None:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
            "-m", "lmms_eval", *lmms_eval_args(tiny_7b, task, distributed, model_args),
        ]  # fmt: skip
        result = subprocess.run(command, cwd=tmp_path, env=offline_env(), capture_output=True, text=True, timeout=600)
        log = result.stdout + result.stderr
        assert result.returncode == 0 and "Error during evaluation" not in log, log[-4000:]

    two_ranks("resume=false")

    records = provenance(distributed)
    assert sorted(r["doc_id"] for r in records) == [0, 1, 2, 3]
    for record in records:
        assert "of 2 requests" in " ".join(record["attempts"][-1]["notes"]), record["attempts"][-1]["notes"]
    by_video = {}
    for path in sorted((distributed / "omni_provenance").glob("samples_rank*.jsonl")):
        for line in path.read_text().splitlines():
            by_video.setdefault(docs[int(json.loads(line)["doc_id"])]["video"], set()).add(path.name)
    assert all(len(journals) == 1 for journals in by_video.values())  # each video answered on one rank

    def answers(output):
        return {s["doc_id"]: answer_of(s) for s in logged_samples(output)}

    assert answers(distributed) == answers(single)

    # Resumed on two ranks: each rank finds its own requests in whichever rank's journal answered them.
    two_ranks("resume=true")
    assert len(provenance(distributed)) == 4  # nothing computed again
    assert answers(distributed) == answers(single)

    # share_across_ranks=false: each rank answers what lmms-eval gave it, nothing shared (one question per video).
    distributed = tmp_path / "apart"
    two_ranks("resume=false,share_across_ranks=false")
    assert not any("prefix shared" in " ".join(r["attempts"][-1]["notes"]) for r in provenance(distributed))


_EXIT_CHECK = """
import atexit, os, sys
import torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
dist.init_process_group("gloo", rank=0, world_size=1)
# Registered first, so it runs last (atexit runs in reverse order): after the adapter's handler.
atexit.register(lambda: print("initialized at exit:", dist.is_initialized(), flush=True))
from omni_lmms_plugin.adapter import destroy_cpu_process_group_at_exit
destroy_cpu_process_group_at_exit()
"""


def test_the_cpu_process_group_is_destroyed_before_the_interpreter_exits():
    """lmms-eval never destroys the process group; with gloo, its threads outliving the interpreter's teardown aborted
    a rank once after its run finished (SIGABRT, "terminate called without an active exception"). The adapter
    destroys a gloo group at exit, while the interpreter is whole. Catches: no handler registered (checked by hand:
    the group was still initialised at exit)."""
    result = subprocess.run(
        [sys.executable, "-c", _EXIT_CHECK, str(free_port())], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "initialized at exit: False" in result.stdout, result.stdout + result.stderr[-2000:]
