"""The backend's own collectives (torch.distributed's gloo/NCCL, the MPI library's) as algorithms.

Registered as ``algorithm="native"`` so the selector can pick them when they are
fastest (NCCL's kernels on GPUs) and the benchmark can run them side by side with
ringflow's. They exist only where the transport offers ``native_<collective>``
and only for the whole world (the backends' subgroups are not wired through).

    rc.all_reduce(t, algorithm="native")
"""
from __future__ import annotations

import torch

from .communicator import Communicator
from .debug import check_on_board
from .ops import ReduceOp


REDUCING = ("all_reduce", "reduce_scatter", "reduce")     # the verbs whose backend call sees the dtype


def supports(comm: Communicator, collective: str, dtype: torch.dtype | None = None) -> bool:
    """True when ``comm``'s transport runs ``collective`` itself for this whole group, on
    ``dtype`` (None: any dtype the backend takes)."""
    return comm.is_world and hasattr(comm.transport, f"native_{collective}") and (
        dtype is None or collective not in REDUCING or comm.transport.native_reduces(dtype))


def _require(comm: Communicator, collective: str):
    if not supports(comm, collective):
        raise ValueError(f"algorithm 'native' needs a transport with native_{collective} over the "
                         f"whole world; {comm.transport.name} transport, group {comm.ranks[:8]} "
                         "has none: use algorithm='auto' or a ringflow algorithm")
    return getattr(comm.transport, f"native_{collective}")


def _run(comm: Communicator, collective: str, *args) -> None:
    fn = _require(comm, collective)
    check_on_board(comm)          # the backend's messages carry no stamp: compare calls first
    try:
        fn(*args)
    except RuntimeError as e:     # the backend's own error (peer gone, its timeout): name the call
        raise comm.backend_failure(e) from e


# Transports sit below collectives, so they take the op by name ("sum", "avg", ...).
def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    _run(comm, "all_reduce", buf, op.value)


def reduce_scatter(comm: Communicator, out: torch.Tensor, inp: torch.Tensor, op: ReduceOp) -> None:
    _run(comm, "reduce_scatter", out, inp, op.value)


def all_gather(comm: Communicator, out: torch.Tensor, inp: torch.Tensor) -> None:
    _run(comm, "all_gather", out, inp)


def broadcast(comm: Communicator, buf: torch.Tensor, root: int = 0) -> None:
    _run(comm, "broadcast", buf, root)


def reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp, root: int = 0) -> None:
    _run(comm, "reduce", buf, root, op.value)
