"""Two-level all-reduce on two torchrun node agents of this machine (2 nodes x 2 ranks)."""
import os
import signal
import subprocess
import sys

import pytest

from tests.launchers import ROOT, _env, free_port

pytestmark = pytest.mark.launched

WORKER = "tests/collectives/two_node_worker.py"


def run_two_nodes(*args: str, timeout: float = 100) -> str:
    """Start both agents (rendezvous over c10d on localhost); fail with their output on error."""
    port = free_port()
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2",
               f"--node_rank={node}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
               "--rdzv-id=twonode", WORKER, *args]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(None), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        raise AssertionError(f"two-node run timed out after {timeout}s")
    text = "\n".join(outs)
    assert all(p.returncode == 0 for p in procs), text[-6000:]
    return text


@pytest.mark.timeout(150)
def test_two_level_across_two_torchrun_nodes():
    out = run_two_nodes()
    assert "two-level OK (torch inside nodes)" in out
    assert "two-level OK (shm inside nodes)" in out
    assert "two-level OK (overlapped pieces)" in out
