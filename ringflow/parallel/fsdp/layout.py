"""One flat, sharded group of parameters: the fp32 master shard this rank keeps, and the full
buffer (compute dtype) the module's parameters are views of while gathered.

Freeing resizes the full buffer's storage to zero bytes and gathering resizes it back and
all-gathers into it, so the parameters (and the views autograd saved for backward) stay the
same tensors throughout: they just have no bytes while freed.

    g = FlatShard(params, comm, compute_dtype=torch.bfloat16)  # broadcasts rank 0's values
    work = g.gather(async_op=True); work.wait()                 # params hold the full values
    g.free()                                                    # params hold no bytes
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ... import collectives as rc
from ..flat import FlatBuffer


def _resize(t: torch.Tensor, nbytes: int) -> None:
    t.untyped_storage().resize_(nbytes)


class FlatShard:
    """Parameters of one dtype and one ``requires_grad`` laid flat; rank r owns [r*m, (r+1)*m).

    ``shard`` is an fp32 ``nn.Parameter`` (the optimizer steps it); ``full`` is the gathered
    buffer in ``compute_dtype`` (the parameters' dtype unless mixed precision asks otherwise).
    """

    def __init__(self, params: Sequence[nn.Parameter], names: Sequence[str], comm: rc.Communicator,
                 compute_dtype: torch.dtype | None = None):
        self.params, self.names, self.comm = list(params), list(names), comm
        self.trainable = self.params[0].requires_grad
        master = FlatBuffer.like([p.detach() for p in self.params], dtype=torch.float32,
                                 pad_to=comm.size)
        master.copy_from([p.detach() for p in self.params])
        if comm.size > 1:
            rc.broadcast(master.data, src=0, group=comm)       # replicas start from rank 0
        self.shapes = master.shapes
        self.spans = [master.span(i) for i in range(len(self.params))]
        self.m = master.data.numel() // comm.size
        self.lo, self.hi = comm.rank * self.m, (comm.rank + 1) * self.m
        self.shard = nn.Parameter(master.data[self.lo:self.hi].clone(),
                                  requires_grad=self.trainable)
        self.dtype = compute_dtype or self.params[0].dtype
        self.full = FlatBuffer([p.shape for p in self.params], self.dtype, self.shard.device,
                               pad_to=comm.size)
        for p, view in zip(self.params, self.full.views):
            p.data = view                                       # the module reads the buffer
        self.full.data.copy_(master.data)                       # gathered now, as built
        self.gathered = True

    @property
    def full_nbytes(self) -> int:
        return self.full.data.numel() * self.full.data.element_size()

    def gather(self, async_op: bool = True):
        """Allocate the full buffer and all-gather every rank's shard into it (cast first)."""
        _resize(self.full.data, self.full_nbytes)
        self.gathered = True
        src = self.shard.detach()
        if src.dtype != self.dtype:
            src = src.to(self.dtype)                            # bf16 on the wire
        return rc.all_gather_into_tensor(self.full.data, src, group=self.comm, async_op=async_op)

    def free(self) -> None:
        """Drop the full buffer's bytes (the parameters keep their shapes, not their data)."""
        _resize(self.full.data, 0)
        self.gathered = False

    def flat_grads(self) -> torch.Tensor:
        """Every parameter's ``.grad`` laid flat in fp32 (missing ones as zeros); the
        parameters' ``.grad`` are dropped, as the flat copy is what gets reduced."""
        out = torch.zeros(self.full.data.numel(), dtype=torch.float32, device=self.shard.device)
        for i, p in enumerate(self.params):
            if p.grad is not None:
                a, b = self.spans[i]
                out[a:b].copy_(p.grad.reshape(-1))
                p.grad = None
        return out

    def reduce_grads(self, flat: torch.Tensor):
        """Launch the average over ranks of ``flat`` into a fresh (m,) fp32 shard gradient."""
        out = torch.empty(self.m, dtype=torch.float32, device=flat.device)
        work = rc.reduce_scatter_tensor(out, flat, op=rc.ReduceOp.AVG, group=self.comm,
                                        async_op=True)
        return work, out

    def accept_grad(self, grad: torch.Tensor) -> None:
        """``shard.grad`` += grad (a backward without ``zero_grad`` accumulates, as in torch)."""
        if self.shard.grad is None:
            self.shard.grad = grad
        else:
            self.shard.grad.add_(grad)
