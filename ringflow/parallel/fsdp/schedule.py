"""When each unit gathers, frees and reduces: the hooks of a fully sharded model.

Forward: before a unit runs, wait for its parameters and launch the next unit's all-gather
(prefetch); after it runs, free it (``reshard_after_forward``; the root unit stays, as its
parameters are the first backward needs). Backward: when the first gradient reaches a unit's
outputs, gather it again and prefetch the unit backward meets next; when the last of its
parameters' gradients is accumulated, reduce-scatter them (async, on the communication thread,
while autograd works on the units before it) and free it. At the end of backward, what never
got a gradient is reduced as zeros, every reduction is waited for, and all units are freed.
A unit whose parameters had no gradient on any rank (a block the forward skipped everywhere)
keeps its shard gradients as they were (None after ``zero_grad``), so the optimizer skips it,
as torch's FSDP2 and DDP leave a parameter unused on every rank; one small all-reduce per
backward tells the ranks apart from a unit unused on some ranks only (its zeros averaged in).

Reductions launch in one fixed order (the reverse of the units' forward order), so every rank
issues the same collectives in the same sequence even if a unit's gradients are complete at
different moments on different ranks.

    sched = Schedule(units, comm, reshard_after_forward=True); sched.attach()
"""
from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten

from ... import collectives as rc
from .unit import Unit


class Schedule:
    """``units[0]`` is the root (the whole model's leftover parameters), then the units in
    forward order."""

    def __init__(self, units: list[Unit], comm: rc.Communicator,
                 reshard_after_forward: bool = True):
        self.units, self.root, self.comm = units, units[0], comm
        self.reshard = reshard_after_forward
        self.forward_order = [u for u in units if u.groups]
        self.backward_order = [self.root] + [u for u in reversed(units[1:]) if u.groups]
        self.reduce_order = [u for u in reversed(units) if u.trainable]
        self.owner = {id(p): u for u in units for p in u.trainable}
        self.sync = True                     # reduce gradients in the next backward?
        self._queued = False
        self._next_reduce = 0
        self.handles: list = []

    def attach(self) -> None:
        for u in self.units:
            self.handles.append(u.module.register_forward_pre_hook(
                lambda m, args, u=u: self._pre_forward(u)))
            self.handles.append(u.module.register_forward_hook(
                lambda m, args, out, u=u: self._post_forward(u, out)))
            for p in u.trainable:
                self.handles.append(p.register_post_accumulate_grad_hook(self._on_grad))

    @staticmethod
    def _next(order: list[Unit], u: Unit) -> Unit | None:
        i = order.index(u) + 1 if u in order else len(order)
        return order[i] if i < len(order) else None

    # ---- forward ----------------------------------------------------------------------------
    def _pre_forward(self, u: Unit) -> None:
        u.ensure_gathered()
        nxt = self._next(self.forward_order, u)
        if nxt is not None:
            nxt.prefetch()

    def _post_forward(self, u: Unit, out) -> None:
        needs_grad = [t for t in tree_flatten(out)[0]
                      if isinstance(t, torch.Tensor) and t.requires_grad]
        if needs_grad:
            torch.autograd.graph.register_multi_grad_hook(
                needs_grad, lambda grads, u=u: self._pre_backward(u), mode="any")
        if u is self.root:
            if not needs_grad:               # inference: no backward comes to free it
                self._free_all()
        elif self.reshard or not needs_grad:
            u.free()

    # ---- backward ---------------------------------------------------------------------------
    def _arm(self) -> None:
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_end)

    def _pre_backward(self, u: Unit) -> None:
        self._arm()
        u.ensure_gathered()
        nxt = self._next(self.backward_order, u)
        if nxt is not None:
            nxt.prefetch()

    def _on_grad(self, p: torch.Tensor) -> None:
        self._arm()
        u = self.owner[id(p)]
        if u.count(p) and self.sync:
            self._launch_ready()

    def _launch_ready(self) -> None:
        """Launch complete units' reductions in ``reduce_order``, stopping at an incomplete one."""
        while self._next_reduce < len(self.reduce_order):
            u = self.reduce_order[self._next_reduce]
            if u.pending:
                return
            u.launch_reduce()
            if u is not self.root and not u.has_frozen:   # frozen layers may still need it
                u.free()
            self._next_reduce += 1

    def _backward_end(self) -> None:
        self._queued = False
        try:
            if self.sync:
                for u in self.reduce_order[self._next_reduce:]:
                    u.launch_reduce()        # gradients that never came are zeros
                used = self._used_anywhere()
                for u, anywhere in zip(self.reduce_order, used):
                    u.finish_reduce(keep=anywhere)
        finally:
            self._next_reduce = 0
            for u in self.units:
                u.reset_backward()
            self._free_all()

    def _used_anywhere(self) -> list[bool]:
        """Per unit of ``reduce_order``: did any rank have a gradient for it?"""
        had = torch.tensor([float(u.had_grads) for u in self.reduce_order])
        if self.comm.size > 1 and had.numel():
            rc.all_reduce(had, op=rc.ReduceOp.MAX, group=self.comm)
        return [bool(x) for x in had.tolist()]

    def _free_all(self) -> None:
        for u in self.units:
            u.free()

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
