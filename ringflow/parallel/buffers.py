"""Rank 0's buffers (BatchNorm statistics) on every rank, by torch DDP's rule.

Buffers are not gradients: nothing averages them, so each replica's running statistics drift
apart unless someone copies them. torch DDP broadcasts rank 0's buffers at the start of every
training forward (grad enabled, train mode), and not in a forward under ``torch.no_grad()`` or
in ``eval()`` mode, so one rank may evaluate alone without issuing a collective its peers never
make. DataParallel, ZeroOptimizer and DistributedOptimizer share this one implementation.

    sync = BufferSync(module, comm, mode=True)    # True | False | "always"
    sync.before_forward()                         # DataParallel.forward calls it itself
    sync.attach()                                 # the optimizers: a forward pre-hook on module
"""
from __future__ import annotations

import torch
from torch import nn

from .. import collectives as rc
from .flat import FlatBuffer, group_by_dtype

MODES = (True, False, "always")


class BufferSync:
    """Broadcasts ``module``'s buffers from rank 0 of ``comm`` before the forwards ``mode`` names:
    True, training forwards; "always", every forward (every rank must then call each forward);
    False, none."""

    def __init__(self, module: nn.Module, comm: rc.Communicator, mode: bool | str = True):
        if mode not in MODES:
            raise ValueError(f"broadcast_buffers={mode!r}: expected True (training forwards), "
                             "False (never) or 'always' (every forward)")
        self.module, self.comm, self.mode = module, comm, mode
        self._flats: tuple | None = None            # (buffer ids, [(flat, buffers)])

    def due(self) -> bool:
        """Whether the forward about to run broadcasts (torch DDP's rule, see the module doc)."""
        if self.mode == "always":
            return True
        return bool(self.mode) and self.module.training and torch.is_grad_enabled()

    def before_forward(self) -> None:
        if self.comm.size > 1 and self.due():
            self.sync()

    def sync(self) -> None:
        """Rank 0's buffers everywhere: one broadcast per dtype, flat buffers reused across steps."""
        bufs = list(self.module.buffers())
        key = tuple(id(b) for b in bufs)                 # a module may swap a buffer object
        if self._flats is None or self._flats[0] != key:
            self._flats = (key, [(FlatBuffer.like([bufs[i] for i in idx]), [bufs[i] for i in idx])
                                 for idx in group_by_dtype(bufs).values()])
        for flat, group in self._flats[1]:
            flat.copy_from(group)
            rc.broadcast(flat.data, src=0, group=self.comm)
            flat.copy_to(group)

    def attach(self):
        """Run ``before_forward`` before each of ``module``'s forwards; returns the hook handle."""
        return self.module.register_forward_pre_hook(lambda module, args: self.before_forward())

