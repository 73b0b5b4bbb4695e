"""Past one machine: the same lmms-eval command on two simulated nodes (``torchrun --nnodes 2``, one CPU rank each,
a static rendezvous on localhost), as a SLURM job would start it on two machines sharing a file system."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from e2e import lmms_eval_args, logged_samples, provenance

from omni_lmms_plugin.demo import offline_env, write_demo_task

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_answer_every_sample_once_with_provenance_per_rank(tiny_7b, tmp_path):
    """Catches: ranks taken from LOCAL_RANK instead of the global RANK (both nodes are local rank 0: they would write
    one journal, samples_rank0, and answer the same shard twice), a node that skips its shard."""
    task = write_demo_task(tmp_path / "task")
    output = tmp_path / "out"
    args = lmms_eval_args(tiny_7b, task, output, "resume=false")
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(node),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "lmms_eval",
                *args,
            ],
            cwd=tmp_path,
            env=offline_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for node in (0, 1)
    ]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, log in zip(nodes, logs, strict=True):
        assert node.returncode == 0 and "Error during evaluation" not in log, log[-4000:]

    journals = sorted(path.name for path in (output / "omni_provenance").glob("samples_rank*.jsonl"))
    assert journals == ["samples_rank0.jsonl", "samples_rank1.jsonl"]
    manifests = sorted(path.name for path in (output / "omni_provenance").glob("manifest_rank*.json"))
    assert manifests == ["manifest_rank0.json", "manifest_rank1.json"]
    assert sorted(r["doc_id"] for r in provenance(output)) == [0, 1, 2, 3]
    assert sorted(s["doc_id"] for s in logged_samples(output)) == [0, 1, 2, 3]
