"""The naive data parallelism: one blocking all-reduce per gradient after backward.

Slow (a collective per parameter, no overlap) but obviously right: the test oracle for
:class:`DataParallel`, :class:`ZeroOptimizer` and the hooks.

    model = NaiveDataParallel(model, comm)
    model(x).mean().backward(); model.average_gradients(); opt.step()
"""
from __future__ import annotations

from torch import nn

from .. import collectives as rc
from ..collectives.group import resolve as resolve_group
from .sync import broadcast_coalesced


class NaiveDataParallel(nn.Module):
    """Broadcast at construction; ``average_gradients()`` after each backward."""

    def __init__(self, module: nn.Module, group=None):
        super().__init__()
        self.module = module
        self.comm = resolve_group(group)
        broadcast_coalesced(list(module.parameters()) + list(module.buffers()), 0, self.comm)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def average_gradients(self) -> None:
        """Every parameter's gradient becomes its average over ranks, one call per parameter."""
        for p in self.module.parameters():
            if p.requires_grad and p.grad is not None:
                rc.all_reduce(p.grad, op=rc.ReduceOp.AVG, group=self.comm)
