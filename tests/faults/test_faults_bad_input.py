"""Bad input at the collectives' boundary: a clear error on the calling rank, before any message.

Each call is made on rank 0 of a 2-rank world whose rank 1 never calls anything, so
a check that let the call through would hang (and fail on the communicator timeout).
"""
from __future__ import annotations

import traceback

import pytest
import torch

from ringflow import collectives as rc
from ringflow.collectives.communicator import Communicator
from ringflow.launch import read_launch_env
from ringflow.transport.local import LocalTransport


@pytest.fixture
def comm():
    c = Communicator(LocalTransport.group(2)[0], timeout=1.0)
    yield c
    c.close()


def _nc():
    return torch.ones(4, 4).t()                       # non-contiguous view


BAD = {
    "bool dtype": (lambda c: rc.all_reduce(torch.ones(3, dtype=torch.bool), group=c),
                   TypeError, "not supported"),
    "complex dtype": (lambda c: rc.all_reduce(torch.ones(3, dtype=torch.complex64), group=c),
                      TypeError, "not supported"),
    "avg of ints": (lambda c: rc.all_reduce(torch.ones(3, dtype=torch.int32), op="avg", group=c),
                    TypeError, "floating dtype"),
    "unknown op": (lambda c: rc.all_reduce(torch.ones(3), op="median", group=c),
                   ValueError, "unknown reduce op"),
    "not a tensor": (lambda c: rc.all_reduce([1.0, 2.0], group=c), TypeError, "torch.Tensor"),
    "numpy array": (lambda c: rc.broadcast(torch.ones(2).numpy(), group=c), TypeError,
                    "torch.Tensor"),
    "non-contiguous": (lambda c: rc.all_reduce(_nc(), group=c), ValueError, "contiguous"),
    "meta device": (lambda c: rc.all_reduce(torch.ones(3, device="meta"), group=c), ValueError,
                    "meta"),
    "src out of range": (lambda c: rc.broadcast(torch.ones(3), src=2, group=c), ValueError,
                         "out of range"),
    "negative dst": (lambda c: rc.reduce(torch.ones(3), dst=-1, group=c), ValueError,
                     "out of range"),
    "float src": (lambda c: rc.broadcast(torch.ones(3), src=1.0, group=c), ValueError,
                  "out of range"),
    "gather size": (lambda c: rc.all_gather_into_tensor(torch.ones(5), torch.ones(3), group=c),
                    ValueError, "expected 6"),
    "gather dtype": (lambda c: rc.all_gather_into_tensor(torch.ones(6, dtype=torch.float64),
                                                         torch.ones(3), group=c),
                     ValueError, "share dtype"),
    "scatter indivisible": (lambda c: rc.reduce_scatter_tensor(torch.ones(1), torch.ones(3),
                                                               group=c), ValueError, "divisible"),
    "all_to_all splits": (lambda c: rc.all_to_all_single(torch.ones(4), torch.ones(4),
                                                         input_split_sizes=[3, 3], group=c),
                          ValueError, "summing to 4"),
    "torch process group": (lambda c: rc.all_reduce(torch.ones(3), group=object()), TypeError,
                            "ringflow Communicator"),
    "unknown algorithm": (lambda c: rc.all_reduce(torch.ones(3), group=c, algorithm="fast"),
                          ValueError, "not available"),
    "subgroup member": (lambda c: c.subgroup([0, 2]), ValueError, "distinct ranks in [0, 2)"),
    "subgroup stream": (lambda c: c.subgroup([0, 1], stream=256), ValueError,
                        "stream must be in [0, 256)"),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_at_the_boundary_with_a_fix(comm, case):
    call, kind, words = BAD[case]
    with pytest.raises(kind) as info:
        call(comm)
    assert words in str(info.value), str(info.value)
    # Raised by ringflow's own checks, not from deep inside torch or a transport.
    frames = traceback.extract_tb(info.value.__traceback__)
    assert "ringflow" in frames[-1].filename, frames[-1]
    assert comm.seq == 0 or case == "unknown algorithm", "a refused call must not be numbered"


@pytest.mark.timeout(30)
def test_empty_tensors_are_fine(comm):
    """numel 0 is a real size: nothing is sent, nothing waits, nothing changes."""
    for t in (torch.ones(0), torch.ones(0, 3)):
        rc.all_reduce(t, group=comm)
        rc.broadcast(t, src=1, group=comm)
        rc.all_gather_into_tensor(torch.ones(0), t.reshape(-1), group=comm)
    assert comm.seq == 6


LAUNCH = {
    "RANK without WORLD_SIZE": ({"RANK": "1"}, "WORLD_SIZE"),
    "WORLD_SIZE without RANK": ({"WORLD_SIZE": "2"}, "RANK"),
    "rank past the world": ({"RANK": "2", "WORLD_SIZE": "2"}, "outside a world of 2"),
    "not a number": ({"RANK": "one", "WORLD_SIZE": "2"}, "must be integers"),
    "mpi half set": ({"OMPI_COMM_WORLD_RANK": "0"}, "OMPI_COMM_WORLD_SIZE"),
}


@pytest.mark.parametrize("case", list(LAUNCH))
def test_broken_launcher_variables_say_which_and_what_to_do(case):
    env, words = LAUNCH[case]
    with pytest.raises(ValueError) as info:
        read_launch_env(env)
    assert words in str(info.value), str(info.value)
