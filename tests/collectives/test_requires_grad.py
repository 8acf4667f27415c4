"""A tensor with requires_grad=True goes through every verb, in place, as torch.distributed
lets it: the collective works on the data; the tensor stays a leaf that requires grad.

Before, the ring's in-place adds ran under autograd and failed ("add(): functions with out=...
arguments don't support automatic differentiation", "a view of a leaf Variable that requires
grad is being used in an in-place operation").
"""
import pytest
import torch

from ringflow import collectives as rc
from ringflow.collectives.threads import run_ranks

N = 3          # thread-ranks
ROWS = 6       # elements per rank's block where a verb splits


def _leaf(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, requires_grad=True)


def _all_reduce(comm):
    t = _leaf([comm.rank + 1.0] * 4)
    rc.all_reduce(t, group=comm)
    return t, torch.full((4,), float(sum(range(1, N + 1))))


def _reduce_scatter(comm):
    out, inp = _leaf([0.0] * 2), _leaf([float(i) for i in range(2 * N)])
    rc.reduce_scatter_tensor(out, inp, group=comm)
    return out, torch.tensor([2.0 * comm.rank, 2.0 * comm.rank + 1]) * N


def _all_gather(comm):
    out, inp = _leaf([0.0] * (2 * N)), _leaf([comm.rank * 1.0] * 2)
    rc.all_gather_into_tensor(out, inp, group=comm)
    return out, torch.arange(N, dtype=torch.float32).repeat_interleave(2)


def _broadcast(comm):
    t = _leaf([comm.rank + 5.0] * 4)
    rc.broadcast(t, src=1, group=comm)
    return t, torch.full((4,), 6.0)


def _reduce(comm):
    t = _leaf([comm.rank + 1.0] * 4)
    rc.reduce(t, dst=0, group=comm)
    mine = float(sum(range(1, N + 1))) if comm.rank == 0 else comm.rank + 1.0
    return t, torch.full((4,), mine)


def _all_to_all(comm):
    out, inp = _leaf([0.0] * N), _leaf([10.0 * comm.rank + j for j in range(N)])
    rc.all_to_all_single(out, inp, group=comm)
    return out, torch.tensor([10.0 * i + comm.rank for i in range(N)])


def _async_all_reduce(comm):
    t = _leaf([comm.rank + 1.0] * 4)
    rc.all_reduce(t, op=rc.ReduceOp.MAX, group=comm, async_op=True).wait()
    return t, torch.full((4,), float(N))


VERBS = {"all_reduce": _all_reduce, "reduce_scatter_tensor": _reduce_scatter,
         "all_gather_into_tensor": _all_gather, "broadcast": _broadcast, "reduce": _reduce,
         "all_to_all_single": _all_to_all, "all_reduce async": _async_all_reduce}


@pytest.mark.parametrize("verb", list(VERBS))
def test_requires_grad_tensor_is_reduced_in_place(verb):
    def body(comm):
        got, want = VERBS[verb](comm)
        assert got.requires_grad and got.is_leaf, f"{verb} changed the tensor's autograd state"
        return got.detach().clone(), want

    for rank, (got, want) in enumerate(run_ranks(N, body, timeout=20)):
        assert torch.equal(got, want), f"{verb} rank {rank}: got {got.tolist()}, want {want.tolist()}"


def test_result_feeds_autograd_afterwards():
    """The reduced leaf is an ordinary parameter afterwards: its gradient is computed as usual."""
    def body(comm):
        w = _leaf([comm.rank + 1.0, 2.0])
        rc.all_reduce(w, group=comm)
        (w * w).sum().backward()
        return w.grad.clone()

    for g in run_ranks(2, body, timeout=20):
        assert torch.equal(g, torch.tensor([6.0, 8.0])), g    # d(w^2)/dw = 2w, w = [3, 4]
