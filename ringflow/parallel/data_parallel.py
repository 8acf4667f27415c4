"""DataParallel: the user's model, averaged over ranks, with one line changed in their loop.

    model = ringflow.parallel.DataParallel(model)          # broadcasts rank 0's weights
    loss = model(x).mean(); loss.backward()                # grads are averaged when this returns
    opt.step()

At construction, rank 0's parameters and buffers are broadcast so replicas start identical.
Gradients live in flat ~25 MiB buckets (their views are the parameters' ``.grad``); each bucket
is all-reduced on the communication thread as soon as its last gradient arrives, so
communication overlaps the rest of backward. See :class:`~ringflow.parallel.reducer.Reducer`.
After ``opt.zero_grad()`` (set_to_none=True) autograd hands each parameter a fresh gradient,
which is copied once into its bucket; ``opt.zero_grad(set_to_none=False)`` keeps the views and
autograd accumulates straight into the buckets.

Gradient accumulation: ``with model.no_sync(): model(x).backward()`` (or set
``model.sync_grads = False``) accumulates locally; the next synchronised backward averages the
accumulated sum. The flag is read when ``forward`` runs, as in torch's DDP.

``model.state_dict()`` is the wrapped module's (no ``module.`` prefix), so it loads into an
unwrapped model; ``load_state_dict`` accepts both forms.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..collectives.group import resolve as resolve_group
from .buffers import BufferSync
from .ddp_kwargs import check_ddp_kwargs
from .reducer import Reducer
from .sync import broadcast_coalesced

PREFIX = "module."


class _BackwardStart(torch.autograd.Function):
    """Identity on the forward's outputs whose backward runs first and arms the reducer."""

    @staticmethod
    def forward(ctx, reducer, *tensors):
        ctx.reducer = reducer
        return tuple(t.clone() for t in tensors)     # a clone, so outputs are ordinary tensors

    @staticmethod
    def backward(ctx, *grads):
        ctx.reducer.arm()
        return (None, *grads)


def _tensors_in(obj, found: list) -> None:
    if isinstance(obj, torch.Tensor):
        if obj.requires_grad:
            found.append(obj)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _tensors_in(x, found)
    elif isinstance(obj, dict):
        for x in obj.values():
            _tensors_in(x, found)


def _replace(obj, swap: dict):
    if isinstance(obj, torch.Tensor):
        return swap.get(id(obj), obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):        # namedtuple
        return type(obj)(*(_replace(x, swap) for x in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace(x, swap) for x in obj)
    if isinstance(obj, dict):
        return type(obj)((k, _replace(v, swap)) for k, v in obj.items())
    return obj


class DataParallel(nn.Module):
    """Data-parallel wrapper: ``DataParallel(model, group=None, bucket_cap_mb=25, compress=None)``.

    group: ringflow Communicator (None: the world). compress: None | "bf16" | "fp16" (float32
    gradients travel in half precision, summed in fp32: compress.py). find_unused_parameters:
    tolerate parameters that get no gradient in a step (otherwise a clear error names them).
    broadcast_buffers: copy rank 0's buffers (BatchNorm statistics) to every rank at each
    training forward, as torch DDP does: not in a forward under ``torch.no_grad()`` or in
    ``eval()`` mode, so one rank may evaluate on its own; "always" broadcasts at every forward
    (then every rank must call each forward).
    torch DDP's other keywords are accepted where they change nothing here (device_ids of the
    module's own device, static_graph, ...) and refused with the reason otherwise (ddp_kwargs.py).
    """

    def __init__(self, module: nn.Module, group=None, bucket_cap_mb: float = 25,
                 compress: str | None = None, find_unused_parameters: bool = False,
                 broadcast_buffers: bool | str = True, first_bucket_mb: float = 1, **ddp_kwargs):
        super().__init__()
        init_sync = check_ddp_kwargs(module, ddp_kwargs)
        self.module = module
        self.comm = resolve_group(group)
        self.buffer_sync = BufferSync(module, self.comm, broadcast_buffers)   # checks the value
        if init_sync:
            broadcast_coalesced(list(module.parameters()) + list(module.buffers()), 0, self.comm)
        self.reducer = Reducer(list(module.named_parameters()), self.comm, bucket_cap_mb,
                               first_bucket_mb, compress, find_unused_parameters)
        self.sync_grads = True        # False: backward accumulates locally (see no_sync)

    @property
    def broadcast_buffers(self) -> bool | str:
        """When rank 0's buffers are broadcast (True, False or "always"; see BufferSync)."""
        return self.buffer_sync.mode

    @broadcast_buffers.setter
    def broadcast_buffers(self, mode: bool | str) -> None:
        self.buffer_sync = BufferSync(self.module, self.comm, mode)

    def forward(self, *args, **kwargs):
        self.buffer_sync.before_forward()
        sync = self.sync_grads and torch.is_grad_enabled()
        self.reducer.prepare(sync)
        out = self.module(*args, **kwargs)
        if not sync:
            return out
        found: list[torch.Tensor] = []
        _tensors_in(out, found)
        if not found:
            return out
        wrapped = _BackwardStart.apply(self.reducer, *found)
        return _replace(out, {id(t): w for t, w in zip(found, wrapped)})

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes of forwards run inside accumulate gradients locally, unaveraged."""
        before, self.sync_grads = self.sync_grads, False
        try:
            yield
        finally:
            self.sync_grads = before

    # ---- checkpoints: the wrapped module's keys --------------------------------------------
    def state_dict(self, *args, **kwargs):
        """The wrapped module's state dict (no ``module.`` prefix): loads into an unwrapped model."""
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a state dict saved with or without the ``module.`` prefix."""
        if state_dict and all(k.startswith(PREFIX) for k in state_dict):
            state_dict = {k[len(PREFIX):]: v for k, v in state_dict.items()}
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)
