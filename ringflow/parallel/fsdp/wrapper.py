"""FullyShardedDataParallel: parameters, gradients and optimizer state at 1/n per rank.

All-reduce is reduce-scatter followed by all-gather; this wrapper places the two halves around
each unit's compute. Each unit (by default every item of the model's ModuleLists, e.g. the
transformer blocks, plus the rest as the root unit) keeps a flat fp32 shard of its parameters;
it all-gathers them before its forward (the next unit's gather prefetched meanwhile), frees
them after (``reshard_after_forward``), gathers again in backward, and reduce-scatters its
gradients as soon as they are complete, while backward goes on with earlier units.

    model = FullyShardedDataParallel(net, mixed_precision=torch.bfloat16)   # after net.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)   # any elementwise optimizer: shards
    loss(model(x)).backward(); model.clip_grad_norm_(1.0); opt.step(); opt.zero_grad()
    with model.no_sync(): loss(model(x)).backward()        # accumulate, reduce in the next one
    sd = model.state_dict(); osd = model.optim_state_dict(opt)   # collectives, any world size

``model.parameters()`` yields the shards (what the optimizer steps); the wrapped module's own
parameters hold data only while their unit is gathered. A unit no rank computed a gradient
for keeps its shard gradients None (the optimizer skips it, as torch does an unused
parameter); a parameter without a gradient in a unit that has others is reduced as zeros
(its flat shard is stepped as one tensor); tied
weights go to the root unit; frozen parameters are sharded in a group of their own and never
reduced; the optimizer must be elementwise (SGD, Adam, AdamW...), as it sees flat shards.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ... import collectives as rc
from ...collectives.group import resolve as resolve_group
from ..buffers import BufferSync
from . import optim_state, state
from .plan import plan_units
from .schedule import Schedule
from .unit import Unit

LOW_PRECISION = (torch.bfloat16, torch.float16)


class FullyShardedDataParallel(nn.Module):
    """``FullyShardedDataParallel(model, units=None, reshard_after_forward=True,
    mixed_precision=None, group=None, broadcast_buffers=True)``.

    units: modules of ``model`` to gather one at a time, in forward order (None: the items of
    its ModuleLists). mixed_precision: torch.bfloat16 or torch.float16 for the parameters in
    compute and on the wire (floating inputs are cast too); master shards, gradient reduction
    and the optimizer stay fp32.
    """

    def __init__(self, model: nn.Module, units=None, reshard_after_forward: bool = True,
                 mixed_precision: torch.dtype | None = None, group=None,
                 broadcast_buffers: bool | str = True):
        super().__init__()
        if mixed_precision not in (None, *LOW_PRECISION):
            raise ValueError(f"mixed_precision={mixed_precision!r}: expected None (fp32), "
                             "torch.bfloat16 or torch.float16")
        self.module, self.comm = model, resolve_group(group)
        self.mixed_precision = mixed_precision
        self.units = [Unit(name, m, named, self.comm, mixed_precision)
                      for name, m, named in plan_units(model, units)]
        self.schedule = Schedule(self.units, self.comm, reshard_after_forward)
        self.schedule.attach()
        self.buffer_sync = BufferSync(model, self.comm, broadcast_buffers)
        if self.comm.size > 1 and broadcast_buffers is not False:
            self.buffer_sync.sync()                     # replicas start with rank 0's buffers

    def forward(self, *args, **kwargs):
        self.buffer_sync.before_forward()
        if self.mixed_precision is not None:
            args, kwargs = tree_map(self._cast, (args, kwargs))
        return self.module(*args, **kwargs)

    def _cast(self, x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.to(self.mixed_precision)
        return x

    # ---- what the optimizer sees: the shards ------------------------------------------------
    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]:
        """This rank's trainable flat shards, named ``<unit>#<group>`` (frozen ones excluded)."""
        for u in self.units:
            for k, g in enumerate(u.groups):
                if g.trainable:
                    yield f"{prefix}{u.name or 'root'}#{k}", g.shard

    @contextlib.contextmanager
    def no_sync(self):
        """Backwards inside accumulate full gradients locally; the next synced one reduces all."""
        before, self.schedule.sync = self.schedule.sync, False
        try:
            yield
        finally:
            self.schedule.sync = before

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip the shards' gradients by the norm of the whole model's gradient (torch's rule)."""
        grads = [s.grad for s in self.parameters() if s.grad is not None]
        p = float(norm_type)
        zero = torch.zeros((), dtype=torch.float32)
        if math.isinf(p):
            local = torch.stack([g.abs().max() for g in grads if g.numel()] or [zero]).max()
        else:
            local = torch.stack([g.abs().pow(p).sum() for g in grads] or [zero]).sum()
        total = local.reshape(1).to(torch.float32)
        rc.all_reduce(total, op=rc.ReduceOp.MAX if math.isinf(p) else rc.ReduceOp.SUM,
                      group=self.comm)
        total = total[0] if math.isinf(p) else total[0].pow(1.0 / p)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef)
        return total

    # ---- checkpoints (see state.py and optim_state.py) --------------------------------------
    def state_dict(self, *args, rank0_only: bool = False, **kwargs) -> dict:
        """The unwrapped model's state dict, fp32, on every rank (rank0_only: {} elsewhere).
        A collective: every rank calls it."""
        return state.full(self, rank0_only)

    def sharded_state_dict(self) -> dict:
        """This rank's shards and the buffers; no communication (merge with ``merge_sharded``)."""
        return state.sharded(self)

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):
        """Load a full state dict (any world size) or this rank's sharded one."""
        state.load(self, state_dict)

    def optim_state_dict(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's state per parameter name (a collective; loads on any world size)."""
        return optim_state.full(self, optimizer)

    def load_optim_state_dict(self, optimizer: torch.optim.Optimizer, osd: dict) -> None:
        optim_state.load(self, optimizer, osd)

    def memory(self) -> dict:
        """Bytes this rank holds now: shards, their gradients, gathered parameters, full
        gradients; and the largest unit's gathered parameters (the working set)."""
        groups = [g for u in self.units for g in u.groups]
        return {
            "shards": sum(g.shard.numel() * 4 for g in groups),
            "shard_grads": sum(g.shard.grad.numel() * 4 for g in groups
                               if g.shard.grad is not None),
            "gathered": sum(g.full.data.untyped_storage().nbytes() for g in groups),
            "full_grads": sum(p.grad.numel() * p.grad.element_size() for g in groups
                              for p in g.params if p.grad is not None),
            "largest_unit": max(u.param_nbytes() for u in self.units),
        }
