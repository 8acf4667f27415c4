"""Faults across real processes: gloo (torch transport) and MPI, under torchrun, mpirun and bare.

Kept to a few launches (each costs seconds of interpreter start-up on a shared 2-core box);
tests/stress/fault_matrix.py repeats every fault >= 20 times over more algorithms.
"""
from __future__ import annotations

import re
import time

import pytest

from ringflow.collectives import ring
from tests.faults.procs import launch_bare, reports
from tests.launchers import run_mpirun, run_torchrun

T = 2            # RINGFLOW_TIMEOUT for these runs (seconds)
SLACK = 6.0      # the "+ a few seconds", generous for a loaded machine
WORKER = "tests/faults/faults_worker.py"
ENV = {"RINGFLOW_TIMEOUT": str(T), "OMP_NUM_THREADS": "1"}
pytestmark = pytest.mark.launched


def _worker(tmp_path, *args):
    return [WORKER, "--report", str(tmp_path), *args]


@pytest.mark.timeout(120)
def test_torch_dead_peer_every_survivor_raises_within_timeout(tmp_path):
    """kill -9 rank 1 at step 1 of all_reduce #2 (ring): ranks 0 and 2 raise on their own."""
    outs = launch_bare(3, _worker(tmp_path, "--fault", "kill:2:1", "--victim", "1"), ENV)
    rep = reports(tmp_path)
    assert rep[1]["status"] == "killed" and outs[1][0] == -9, outs[1]
    for r in (0, 2):
        status = rep[r]["status"]
        assert outs[r][0] == 1 and status.startswith("Collective"), (status, outs[r][1][-2000:])
        assert "all_reduce #2" in status and "waiting for rank" in status, status
        assert rep[r]["time"] - rep[1]["time"] < T + SLACK, rep
        assert "recent collectives" in outs[r][1]           # the flight recorder was printed
    assert any("waiting for rank 1" in rep[r]["status"] for r in (0, 2))


@pytest.mark.timeout(120)
def test_torch_stalled_peer_times_out_and_names_it(tmp_path):
    # above PAIR_EXCHANGE_BYTES, so two ranks run the ring's steps: a rank stalled at step 0 has
    # posted step 0 only, and its peer waits inside all_reduce #2 for step 1 (below it the one
    # exchange completes and the peer times out in the barrier after it)
    numel = ring.PAIR_EXCHANGE_BYTES // 4 + 1024
    outs = launch_bare(2, _worker(tmp_path, "--fault", f"stall:2:0:{1.7 * T}", "--victim", "1",
                                  "--numel", str(numel)), ENV)
    rep = reports(tmp_path)
    status = rep[0]["status"]
    assert status.startswith("CollectiveTimeout"), (status, outs[0][1][-2000:])
    assert re.search(r"all_reduce #2 timed out after 2.0s at step \d waiting for rank 1", status)
    assert rep[1]["status"].startswith("Collective"), rep[1]     # the sleeper fails on waking


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport,field,values", [
    ("torch", "dtype", "ranks [0] have float32; ranks [1] have float64"),
    # shm posts data beside the fingerprints (debug.py): rank 1's larger message must not land
    ("shm", "numel", "ranks [0] have 65536; ranks [1] have 65537")])
def test_debug_mismatch_named_on_every_rank(tmp_path, transport, field, values):
    outs = launch_bare(2, _worker(tmp_path, "--mismatch", field, "--victim", "1"),
                       {**ENV, "RINGFLOW_DEBUG": "1", "RINGFLOW_TRANSPORT": transport})
    rep = reports(tmp_path)
    for r in (0, 1):
        assert rep[r]["status"].startswith("CollectiveMismatch"), (rep[r], outs[r][1][-2000:])
        assert f"collective #2 mismatch in {field}: {values}" in rep[r]["status"], rep[r]["status"]


@pytest.mark.timeout(120)
def test_torchrun_dead_peer_exits_nonzero_and_every_rank_reports(tmp_path):
    start = time.monotonic()
    # step 0: at 64 Ki elements two ranks' ring is one exchange, so it has no step 1 (ring.py)
    code, out = run_torchrun(2, WORKER, "--report", str(tmp_path), "--fault", "kill:2:0",
                             "--victim", "1", env=ENV, check=False, timeout=90)
    assert code != 0, out[-3000:]
    rep = reports(tmp_path)
    assert rep[1]["status"] == "killed"
    # rank 0 raised by itself, or was told by the launcher's SIGTERM what it was doing: either way
    # its flight recorder is in the log
    assert "ringflow rank 0/2 recent collectives" in out, out[-4000:]
    assert "all_reduce(numel=65536, float32, op=sum, root=-1)" in out
    assert time.monotonic() - start < 60


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_mpirun_dead_peer_exits_nonzero(tmp_path):
    start = time.monotonic()
    code, out = run_mpirun(2, WORKER, "--report", str(tmp_path), "--fault", "kill:2:0",
                           "--victim", "1", env={**ENV, "RINGFLOW_TRANSPORT": "mpi"}, check=False,
                           timeout=90)
    assert code != 0, out[-3000:]
    assert reports(tmp_path)[1]["status"] == "killed", out[-3000:]
    assert time.monotonic() - start < 60
