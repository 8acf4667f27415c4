"""ZeroOptimizer: any torch optimizer, its state sharded over ranks (ZeRO stages 1 and 2).

All-reduce is reduce-scatter followed by all-gather; ZeRO puts the optimizer step in between.
Each rank steps only its 1/n slice of the (flattened) parameters, so optimizer state per rank is
1/n of the unsharded one. Stage 2 reduce-scatters the gradients, so each rank receives only the
averaged gradients of its slice, and then drops the full ones: it reduces bucket by bucket
during backward (zero_overlap.py), so ``p.grad`` is None once backward returns and each rank's
shard gradient holds its averaged slice; stage 1 all-reduces them in ``step()`` and reads its
slice. After the step, an all-gather copies every rank's updated slice into the model's
parameters: inside ``step()``, or with ``gather_in_forward=True`` bucket by bucket under the
next forward, each module waiting only for its own parameters (zero_gather.py).

    opt = ZeroOptimizer(model, torch.optim.AdamW, stage=2, gather_in_forward=True, lr=1e-4)
    loss.backward(); opt.clip_grad_norm_(1.0); opt.step(); opt.zero_grad()

Use it on an unwrapped model (it averages the gradients itself, in ``step``); at construction it
broadcasts rank 0's parameters and makes them views of its flat buffer, so build it after moving
the model to its device and dtype (``.to()`` afterwards detaches them: ``step`` refuses, saying
so). Pass the model (``ZeroOptimizer(model, ...)`` or ``module=model``) to keep its buffers in
step across ranks as DataParallel does. In-place writes to the parameters
(``model.load_state_dict``) are fine: each step re-reads the local slice. The user's optimizer
class is composed, never subclassed; it must be elementwise (SGD, Adam, AdamW, RMSprop,
Adagrad...): per-tensor rules such as LAMB's trust ratio would see shards, not tensors.
Parameters without a gradient are stepped with zeros.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import collectives as rc
from ..collectives.group import resolve as resolve_group
from . import zero_state
from .buffers import BufferSync
from .composed import ComposedOptimizer
from .shard import ShardedGroup
from .zero_gather import ForwardGather
from .zero_overlap import GradientStream


def _module_and_params(params, module: nn.Module | None):
    """``ZeroOptimizer(model, ...)`` is ``ZeroOptimizer(model.parameters(), ..., module=model)``."""
    if isinstance(params, nn.Module):
        if module is not None and module is not params:
            raise ValueError("ZeroOptimizer got a module as params and another as module=; pass "
                             "the model once")
        return params, params.parameters()
    return module, params


def _param_groups(params) -> list[dict]:
    groups = list(params)
    if not groups:
        raise ValueError("ZeroOptimizer got an empty parameter list")
    if not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    return [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]


class ZeroOptimizer(ComposedOptimizer):
    """``ZeroOptimizer(params, optimizer_class, group=None, stage=2, module=None,
    broadcast_buffers=True, bucket_cap_mb=25, gather_in_forward=False, **optimizer_kwargs)``.

    bucket_cap_mb: stage 2's reduction granularity during backward, and the all-gather's
    under ``gather_in_forward`` (at most this much per collective; smaller starts earlier,
    larger sends fewer messages).
    gather_in_forward: send the updated parameters during the next forward, each module
    waiting only for its own (zero_gather.py), instead of inside ``step()``; needs ``module``.
    Parameters are then stale between ``step()`` and the next forward: call ``wait_params()``
    before reading or writing them there (the module's ``state_dict``/``load_state_dict`` do).

    params: parameters, param groups, or the model itself (then ``module`` is that model).
    module: the model the parameters belong to; its buffers (BatchNorm statistics) get
    DataParallel's rule, rank 0's broadcast at each training forward (``broadcast_buffers``:
    True, False or "always", see buffers.py). Without it buffers are never synchronised.
    """

    def __init__(self, params, optimizer_class, group=None, stage: int = 2,
                 module: nn.Module | None = None, broadcast_buffers: bool | str = True,
                 bucket_cap_mb: float = 25, gather_in_forward: bool = False, **defaults):
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 (shard optimizer state) or 2 (also shard "
                             f"gradients), got {stage!r}")
        self.comm, self.stage = resolve_group(group), stage
        module, params = _module_and_params(params, module)
        if gather_in_forward and module is None:
            raise ValueError("gather_in_forward=True needs the model, whose forward pre-hooks "
                             "wait for the parameters: pass ZeroOptimizer(model, ...) or "
                             "module=model")
        self.buffer_sync = None if module is None else BufferSync(module, self.comm,
                                                                  broadcast_buffers)
        if self.buffer_sync is not None:
            self.buffer_sync.attach()
        user_groups = _param_groups(params)
        self.groups = [ShardedGroup(g["params"], self.comm) for g in user_groups]
        # stage 2 reduces during backward, bucket by bucket (zero_overlap.py)
        self.streams = [GradientStream(g, int(bucket_cap_mb * 2**20) // g.flat.data.element_size())
                        for g in self.groups] if stage == 2 else []
        self.gather = ForwardGather(self.groups, module, int(bucket_cap_mb * 2**20) //
                                    self.groups[0].flat.data.element_size()) \
            if gather_in_forward else None
        inner = [{**{k: v for k, v in g.items() if k != "params"}, "params": s.chunks}
                 for g, s in zip(user_groups, self.groups)]
        super().__init__(optimizer_class(inner, **defaults))
        self._reduced = False

    # ---- the step: reduce-scatter | step my shard | all-gather ------------------------------
    def reduce_gradients(self) -> None:
        """Average gradients over ranks into each shard's ``.grad`` (once per step)."""
        if self._reduced:
            return
        for g in self.groups:
            g.check_params()            # model.to(dtype) after construction: say so, not a dtype error
        if self.streams and all(s.done for s in self.streams):
            self._reduced = True        # backward reduced them already
            return
        launched = []
        for g in self.groups:
            g.collect_grads()
            launched.append(g.reduce_grads(self.stage))
        for g, (work, then) in zip(self.groups, launched):
            work.wait()
            if then is not None:
                then()
            if self.stage == 2:
                g.release_grads()
        self._reduced = True

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("ZeroOptimizer.step does not take a closure (every rank would have "
                             "to re-run forward in lockstep); call backward before step()")
        self.wait_params()              # two steps without a forward between them
        self.reduce_gradients()
        for g in self.groups:
            g.refresh_shard()
        self.optimizer.step()
        if self.gather is not None:
            self.gather.schedule()      # sent under the next forward
        else:
            works = [g.gather_params() for g in self.groups]
            for w in works:
                w.wait()
        self._reduced = False
        for s in self.streams:
            s.done = False

    def wait_params(self) -> None:
        """Return with every parameter holding its value after the last ``step()`` (only
        ``gather_in_forward`` defers them; a collective then: every rank calls it)."""
        if self.gather is not None:
            self.gather.flush()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.groups:
            g.zero_grad(set_to_none)
        for s in self.streams:          # the next backward replaces the reduced gradients
            s.done = False

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip by the norm of the whole (averaged) gradient, computed across shards.

        Same rule as ``torch.nn.utils.clip_grad_norm_``; returns the total norm.
        """
        self.reduce_gradients()
        grads = [g.shard.grad for g in self.groups]
        p = float(norm_type)
        if math.isinf(p):
            local = torch.stack([gr.abs().max() if gr.numel() else gr.new_zeros(()) for gr in grads]).max()
            op = rc.ReduceOp.MAX
        else:
            local = torch.stack([gr.abs().pow(p).sum() for gr in grads]).sum()
            op = rc.ReduceOp.SUM
        total = local.reshape(1).to(torch.float32)
        rc.all_reduce(total, op=op, group=self.comm)
        total = total[0] if math.isinf(p) else total[0].pow(1.0 / p)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for gr in grads:
            gr.mul_(coef)
        return total

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Consolidated: the state dict of the same optimizer over the unsharded parameters.

        A collective (every rank calls it; every rank gets the dict, rank 0 saves it). It loads
        into ``optimizer_class(model.parameters())`` or into a ZeroOptimizer of any world size.
        """
        try:
            return zero_state.consolidate(self)
        except rc.CollectiveError as e:  # rank 0 alone, typically: say what the call is
            e.args = (f"ZeroOptimizer.state_dict() is a collective (it all-gathers every rank's "
                      f"shard of the state): every rank of the group must call it at the same "
                      f"point, and rank 0 saves the result; to save without communication use "
                      f"sharded_state_dict() on each rank. It failed: {e}",) + e.args[1:]
            raise

    def sharded_state_dict(self) -> dict:
        """This rank's shard only (no communication); load it back with the same world size."""
        return zero_state.sharded(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a consolidated or a sharded state dict (see the two methods above)."""
        zero_state.load(self, state_dict)
