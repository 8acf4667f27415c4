"""One parameter group laid out flat and cut into equal per-rank shards (for ZeroOptimizer).

The group's parameters become views of one flat buffer (padded to a multiple of the world size),
so an all-gather into that buffer updates the model in place. Rank r owns elements
[r*m, (r+1)*m) and keeps a copy of them, ``shard``, which its optimizer steps.

    g = ShardedGroup(params, comm)      # broadcasts rank 0's values, re-points params
    g.shard, g.shard.grad               # (m,) each
    g.chunks                            # views of the shard (and of its grad): what steps

The optimizer steps ``chunks``, views of at most CHUNK elements, not the one shard: its
elementwise rules allocate temporaries as large as each tensor, and temporaries of tens of
MiB come fresh from the kernel (page faults) at every step, where megabyte ones are reused;
AdamW on one 16M-element shard took 3x as long here as on the same elements in 1M chunks.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import collectives as rc
from ..collectives.chunking import piece_bounds
from .flat import FlatBuffer

CHUNK = 1 << 20                 # elements per tensor the optimizer sees (4 MiB in fp32)


class ShardedGroup:
    """Flat parameters and gradients of one param group, and this rank's shard of them."""

    def __init__(self, params: Sequence[torch.nn.Parameter], comm: rc.Communicator):
        dtypes = {(p.dtype, p.device) for p in params}
        if len(dtypes) != 1:
            raise ValueError(f"a ZeroOptimizer param group must hold one dtype and device, got "
                             f"{sorted(str(d) for d in dtypes)}; put each in its own param group")
        self.params, self.comm = list(params), comm
        self.flat = FlatBuffer.like(self.params, pad_to=comm.size)
        self.grads: FlatBuffer | None = None               # full gradients, while they exist
        self.flat.copy_from([p.detach() for p in self.params])
        if comm.size > 1:
            rc.broadcast(self.flat.data, src=0, group=comm)    # replicas start identical
        for p, view in zip(self.params, self.flat.views):
            p.data = view                                      # the model now lives in the buffer
        self.m = self.flat.data.numel() // comm.size
        self.lo, self.hi = comm.rank * self.m, (comm.rank + 1) * self.m
        self.shard = self.flat.data[self.lo:self.hi].clone()
        self.shard.grad = torch.zeros_like(self.shard)
        self.bounds = piece_bounds(self.m, CHUNK)
        self.chunks = [self.shard[a:b] for a, b in self.bounds]
        for c, (a, b) in zip(self.chunks, self.bounds):
            c.grad = self.shard.grad[a:b]                   # shard.grad is only written in place

    def check_params(self) -> None:
        """Raise if a parameter no longer lives in the flat buffer: ``model.to(dtype or device)``
        after construction re-points it, and the step would update a buffer the model no
        longer reads (or fail on the dtype)."""
        for i, (p, view) in enumerate(zip(self.params, self.flat.views)):
            if p.numel() and p.data_ptr() != view.data_ptr():
                raise RuntimeError(
                    f"ZeroOptimizer: parameter {i} of its group (shape {tuple(p.shape)}) is now "
                    f"{p.dtype} on {p.device}, no longer the {view.dtype} on {view.device} the "
                    "optimizer was built over: the model was moved, cast or its parameters "
                    "replaced (model.to(...), .half(), .cuda()) after the ZeroOptimizer was "
                    "built. Build ZeroOptimizer after model.to(...)")

    def _grad_buffer(self) -> FlatBuffer:
        if self.grads is None:          # stage 2 drops it after each backward: new every step
            self.grads = FlatBuffer.like(self.params, pad_to=self.comm.size, huge_pages=True)
        return self.grads

    def release_grads(self) -> None:
        """Drop the full gradients once reduced (stage 2): only ``shard.grad`` stays."""
        for p in self.params:
            p.grad = None
        self.grads = None

    def collect_grads(self) -> None:
        """Every ``.grad`` into the flat gradient buffer (no grad: zeros; views need no copy)."""
        for p, view in zip(self.params, self._grad_buffer().views):
            if p.grad is None:
                view.zero_()
            elif p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad)
                p.grad = view

    def reduce_grads(self, stage: int):
        """Launch the average of gradients over ranks; afterwards ``shard.grad`` holds my part."""
        if stage == 1:          # all-reduce everything, then read my slice
            work = rc.all_reduce(self.grads.data, op=rc.ReduceOp.AVG, group=self.comm,
                                 async_op=True)
            return work, lambda: self.shard.grad.copy_(self.grads.data[self.lo:self.hi])
        work = rc.reduce_scatter_tensor(self.shard.grad, self.grads.data, op=rc.ReduceOp.AVG,
                                        group=self.comm, async_op=True)
        return work, None

    def refresh_shard(self) -> None:
        """Re-read my slice of the parameters: they may have been written since the last step
        (``model.load_state_dict`` after building the optimizer, weight swaps)."""
        self.shard.copy_(self.flat.data[self.lo:self.hi])

    def gather_params(self):
        """Launch the all-gather of every rank's stepped shard into the flat parameters."""
        return rc.all_gather_into_tensor(self.flat.data, self.shard, group=self.comm, async_op=True)

    def zero_grad(self, set_to_none: bool) -> None:
        if set_to_none:
            for p in self.params:
                p.grad = None
            return
        for p, view in zip(self.params, self._grad_buffer().views):
            view.zero_()
            p.grad = view
