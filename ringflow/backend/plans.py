"""What an all_reduce on one process group resolves, remembered per (numel, dtype, op, layout).

``rc.all_reduce`` re-derives on every call what depends only on the tensor's kind: the dtype
and op checks, the transport's device check, the algorithm auto picks, the ringflow ReduceOp.
A torch process group sees the same few kinds again and again (DDP's buckets, a loss, a
metric), so the group resolves a kind once, through ``rc.all_reduce_plan`` (the same checks,
the same errors), and afterwards checks per call only what can change between two tensors of
one kind: contiguity, device, autograd. A call that does not qualify, or a kind never seen,
takes ``rc.all_reduce_resolved`` as before.

    plans = AllReducePlans(comm)
    work = plans.run(t, opts.reduceOp, async_op)   # Work, None (ran inline), or NOT_RUN:
                                                   # not planned here, take the general path
"""
from __future__ import annotations

import torch

from .. import collectives as rc
from ..collectives import costmodel, select
from ..collectives.ops import ReduceOp

# torch's RedOpType (by its integer value) -> ringflow's ReduceOp, for the plans and the group's
# general path alike: translating by name costs microseconds, which a 4 KiB all_reduce notices.
# torch's ReduceOp hashes to that integer: reading the op from torch's options by its hash costs
# 0.54 us a call, through ``.op.value`` 0.87 (layer_cost.py --pieces). The ops ringflow lacks
# (PREMUL_SUM) stay out: unplanned, so the general path raises as_reduce_op's error.
TORCH_OPS = {getattr(torch.distributed.ReduceOp.RedOpType, op.name).value: op for op in ReduceOp
             if hasattr(torch.distributed.ReduceOp.RedOpType, op.name)}
_STRIDED = torch.strided
NOT_RUN = object()           # run()'s answer when the call is not planned (None: ran inline)


class AllReducePlans:
    """Per group: (numel, dtype, op, layout) -> (algorithm name, its function, ringflow op)."""

    def __init__(self, comm):
        self.comm = comm
        self._plans: dict = {}
        self._generation = costmodel.generation     # a new tune expires what auto picked

    def run(self, t: torch.Tensor, torch_op, async_op: bool):
        """Queue (or run inline) the all_reduce of ``t`` if a plan covers it; NOT_RUN if not."""
        if not t.is_contiguous() or not t.is_cpu or t.requires_grad:
            return NOT_RUN      # the general path: detach, the device check, its errors
        if self._generation != costmodel.generation:
            self._plans.clear()
            self._generation = costmodel.generation
        key = (t.numel(), t.dtype, hash(torch_op), t.layout)
        plan = self._plans.get(key) or self._resolve(key, t)
        if plan is None:
            return NOT_RUN
        name, fn, op = plan
        select.last["all_reduce"] = name
        comm, flat = self.comm, t if t.dim() == 1 else t.view(-1)
        return comm.run("all_reduce", lambda: fn(comm, flat, op), tensor=t, op=op,
                        async_op=async_op, algorithm=name)

    def _resolve(self, key, t: torch.Tensor):
        """The plan of ``key`` from the full checks on ``t`` (None: not planned; the general
        path then raises or handles what it is: complex, sparse, an op ringflow lacks)."""
        numel, dtype, op_value, layout = key
        if op_value not in TORCH_OPS or layout is not _STRIDED or t.is_complex():
            return None
        op = TORCH_OPS[op_value]
        name, fn = rc.all_reduce_plan(self.comm, t, op)     # raises as rc.all_reduce would
        if len(self._plans) > 256:                          # kinds a group sees are few
            self._plans.clear()
        self._plans[key] = plan = (name, fn, op)
        return plan

