"""Agreement guards for faults in the data: non-finite gradients and uneven inputs.

A NaN on one rank must make every rank skip (or stop at) the same step, and ranks
with different numbers of batches must end the epoch together instead of leaving
one rank waiting in an all-reduce its peers will never call. Each guard is one tiny
all-reduce, so every rank reaches the same decision.

    if all_finite([p.grad for p in model.parameters()], group=comm):
        opt.step()                                   # else every rank skips this step
    for batch in even_batches(loader, group=comm):   # stops when the first rank runs out
        ...
"""
from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

import torch

from .. import collectives as rc
from ..collectives.group import resolve as resolve_group

T = TypeVar("T")


def _agree(flag: bool, comm) -> bool:
    """True on every rank iff ``flag`` is true on every rank (an all-reduce of one int, MIN)."""
    t = torch.tensor([int(flag)], dtype=torch.int32, device=comm.device)
    rc.all_reduce(t, op=rc.ReduceOp.MIN, group=comm)
    return bool(t.item())


def all_finite(tensors: Iterable[torch.Tensor | None], group=None) -> bool:
    """Whether every element of ``tensors`` is finite on every rank (None entries are skipped).

    Call it where ranks may see different values: before the gradient all-reduce, on a
    ZeRO shard, or on a per-rank loss. (After DataParallel's all-reduce the gradients
    are already identical everywhere, and a NaN anywhere is a NaN everywhere.)
    """
    comm = resolve_group(group)
    ok = True
    for t in tensors:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"all_finite takes tensors (or None), got {type(t).__name__}")
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            ok = False
            break
    return _agree(ok, comm) if comm.size > 1 else ok


def even_batches(batches: Iterable[T], group=None) -> Iterator[T]:
    """Yield from ``batches`` for as many steps as the shortest rank has; every rank stops together.

    With a length (a list, a DataLoader) this costs one all-reduce up front; without one
    (a stream) it costs one 4-byte all-reduce per step. The batches a longer rank does not
    get to are dropped, the same "drop last" every rank agrees on.
    """
    comm = resolve_group(group)
    if hasattr(batches, "__len__"):
        steps = torch.tensor([len(batches)], dtype=torch.int64, device=comm.device)
        if comm.size > 1:
            rc.all_reduce(steps, op=rc.ReduceOp.MIN, group=comm)
        for _, batch in zip(range(int(steps.item())), batches):   # range first: no extra pull
            yield batch
        return
    it = iter(batches)
    while True:
        batch = next(it, _END)
        have = batch is not _END
        if comm.size > 1:
            have = _agree(have, comm)
        if not have:
            return
        yield batch


_END = object()
