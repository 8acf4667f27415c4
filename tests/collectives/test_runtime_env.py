"""The runtime: launcher detection, transport choice, init/shutdown; transport helpers in-process."""
import sys
import time

import pytest
import torch

import ringflow
from ringflow import collectives as rc
from ringflow import launch, runtime
from ringflow.transport.shm.wait import wait_until
from ringflow.transport.base import PeerTimeout
from tests.launchers import run_cmd, run_torchrun

LAUNCHERS = {
    "torchrun": ({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2",
                  "MASTER_ADDR": "h", "MASTER_PORT": "1"}, (2, 4, 0, 2)),
    "mpirun": ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
                "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, (3, 4, 1, 2)),
    "pmi": ({"PMI_RANK": "1", "PMI_SIZE": "3"}, (1, 3, 1, 3)),
    "slurm": ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
               "SLURM_NTASKS_PER_NODE": "4(x2)"}, (5, 8, 1, 4)),
    "none": ({}, (0, 1, 0, 1)),
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_read_launch_env(launcher):
    env, want = LAUNCHERS[launcher]
    got = launch.read_launch_env(env)
    assert (got.launcher, (got.rank, got.size, got.local_rank, got.local_size)) == (launcher, want)


def test_launch_env_errors_name_the_variable():
    with pytest.raises(ValueError, match="RANK='x'"):
        launch.read_launch_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="rank 4 is outside a world of 4"):
        launch.read_launch_env({"RANK": "4", "WORLD_SIZE": "4"})


@pytest.mark.mpi            # "auto" under mpirun is mpi only where mpi4py is installed
def test_transport_choice():
    env = lambda name: launch.read_launch_env(LAUNCHERS[name][0])  # noqa: E731
    assert runtime._pick_transport(env("torchrun"), "auto") == "torch"      # two nodes
    one_node = launch.LaunchEnv("torchrun", 1, 2, 1, 2)
    assert runtime._pick_transport(one_node, "auto") == "shm|torch"         # shm, else torch
    assert runtime._pick_transport(one_node, "auto", torch.device("cuda", 0)) == "torch"  # NCCL
    assert runtime._pick_transport(env("mpirun"), "auto") == "mpi"       # mpi4py is installed
    assert runtime._pick_transport(env("none"), "auto") == "local"
    assert runtime._pick_transport(env("mpirun"), "torch") == "torch"
    with pytest.raises(ValueError, match="RINGFLOW_TRANSPORT"):
        runtime._pick_transport(env("none"), "carrier-pigeon")


def test_intra_auto_is_shared_memory_only_for_cpu_ranks_of_a_world_spanning_nodes():
    """intra="auto" (init's default) makes nothing, and so touches no store, where shared memory
    inside a node has no use: one rank per node, one node, CUDA, or a world already on shm.
    Where it applies (two nodes of CPU ranks) tests/collectives/two_node_worker.py checks it."""
    class World:
        name = "torch/gloo"
    two_nodes = launch.LaunchEnv("torchrun", 0, 4, 0, 2)
    assert runtime._make_intra(None, launch.LaunchEnv("torchrun", 0, 2, 0, 1), World(), 5) is None
    assert runtime._make_intra("auto", launch.LaunchEnv("torchrun", 0, 2, 0, 2), World(), 5) is None
    assert runtime._make_intra(None, two_nodes, World(), 5, torch.device("cuda", 0)) is None
    World.name = "shm"
    assert runtime._make_intra(None, two_nodes, World(), 5) is None
    assert runtime._make_intra("same", two_nodes, World(), 5) is None
    with pytest.raises(ValueError, match="intra='fast' is unknown"):
        runtime._make_intra("fast", two_nodes, World(), 5)


@pytest.mark.parametrize("transport", ["local", "torch"])
def test_init_world_of_one_is_idempotent_and_shuts_down(transport, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID",
                "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    comm = ringflow.init(transport=transport, timeout=20)
    try:
        assert ringflow.init() is comm and (comm.rank, comm.size) == (0, 1)
        assert comm.transport.name.startswith(transport) and comm.timeout == 20
        t = torch.arange(5.0)
        rc.all_reduce(t, op=rc.ReduceOp.AVG)
        assert torch.equal(t, torch.arange(5.0))
    finally:
        ringflow.shutdown()
    assert not ringflow.is_initialized()
    if transport == "torch":
        assert not torch.distributed.is_initialized()   # the process group was destroyed


MPI_WORLD_OF_ONE = """
import ringflow, torch
from ringflow import collectives as rc
comm = ringflow.init(transport="mpi", timeout=20)
assert ringflow.init() is comm and comm.size == 1 and comm.transport.name == "mpi"
t = torch.arange(5.0); rc.all_reduce(t, algorithm="native"); rc.all_reduce(t)
assert torch.equal(t, torch.arange(5.0)), t
ringflow.shutdown(); ringflow.shutdown()
print("MPI WORLD OF ONE OK")
"""


def sm_segments(folder) -> list[str]:
    """Open MPI's shared-memory BTL files in ``folder`` (its backing directory in these tests:
    OMPI_MCA_btl_sm_backing_directory, so other processes' files in /dev/shm do not count)."""
    return sorted(p.name for p in folder.glob("sm_segment.*"))


@pytest.mark.launched
@pytest.mark.mpi
@pytest.mark.timeout(60)
def test_mpi_world_of_one_in_a_fresh_process(tmp_path):
    """A singleton MPI (plain python, no mpirun); own process, so pytest never initialises MPI.
    It leaves no 16 MiB sm_segment file behind (Open MPI singletons never unlink theirs)."""
    env = {"OMPI_MCA_btl_sm_backing_directory": str(tmp_path)}
    _, out = run_cmd([sys.executable, "-c", MPI_WORLD_OF_ONE], timeout=50, env=env)
    assert "MPI WORLD OF ONE OK" in out, out
    assert not sm_segments(tmp_path), f"the singleton left {sm_segments(tmp_path)} behind"


@pytest.mark.launched
@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_mpi_transport_under_torchrun_is_refused_before_mpi_starts(tmp_path):
    """torchrun's ranks cannot meet through MPI (each would be a singleton, leaving an
    sm_segment file per rank): every rank fails at once, saying to use mpirun."""
    env = {"RINGFLOW_TRANSPORT": "mpi", "OMPI_MCA_btl_sm_backing_directory": str(tmp_path)}
    start = time.monotonic()
    code, out = run_torchrun(2, "-c", "import ringflow; ringflow.init()", env=env, timeout=100,
                             check=False, extra=("--no-python", sys.executable))
    assert code != 0 and out.count("needs ranks started by an MPI launcher") >= 2, out[-3000:]
    assert "mpirun -np N" in out and "RINGFLOW_TRANSPORT=shm" in out, out[-3000:]
    assert time.monotonic() - start < 90
    assert not sm_segments(tmp_path), f"MPI started anyway: {sm_segments(tmp_path)}"


def test_started_by_mpi_reads_the_mpi_launchers_variables():
    assert launch.started_by_mpi(LAUNCHERS["mpirun"][0]) and launch.started_by_mpi(LAUNCHERS["pmi"][0])
    assert launch.started_by_mpi({**LAUNCHERS["slurm"][0], "PMIX_RANK": "5"})   # srun --mpi=pmix
    assert not launch.started_by_mpi(LAUNCHERS["torchrun"][0])
    assert not launch.started_by_mpi(LAUNCHERS["slurm"][0]) and not launch.started_by_mpi({})


def test_missing_mpi4py_says_how_to_install(monkeypatch):
    from ringflow.transport import mpi
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'ringflow\[mpi\]'"):
        mpi.load_mpi()


def test_polling_wait_sleeps_instead_of_spinning():
    cpu, wall = time.process_time(), time.monotonic()
    with pytest.raises(PeerTimeout, match="receive from rank 3 timed out"):
        wait_until(lambda: False, 0.5, peer=3, what="receive from rank 3")
    assert time.monotonic() - wall >= 0.5
    assert time.process_time() - cpu < 0.15              # a busy loop would burn ~0.5 s of CPU
