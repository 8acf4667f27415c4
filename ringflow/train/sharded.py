"""``--parallel fsdp`` in the trainer: the EMA kept on shards, and the checkpoint files.

A fully sharded model holds 1/n of its weights between steps, so its EMA does too: each rank
lerps its own slice (elementwise, so the gathered EMA is bitwise what a full EMA would be), and
the full EMA network is gathered only to sample or save. Checkpoints hold the same files as
for the replicated strategies (full model, EMA and optimizer state, written by rank 0), which
every rank helps gather, so they load on any world size.

    ema = ShardedEMA(EMA(net, ...), fsdp)       # EMA built before the net is wrapped
    files.update(fsdp_files(run))               # every rank calls it
"""
from __future__ import annotations

import torch

from ..parallel.fsdp import state as fsdp_state
from .ema import EMA


PREFIX = "net."        # the sharded module is the LossModule; checkpoints hold the bare net


def _groups(fsdp):
    return [g for u in fsdp.units for g in u.groups]


def bare(sd: dict) -> dict:
    return {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}


def wrapped(sd: dict) -> dict:
    return {PREFIX + k: v for k, v in sd.items()}


class ShardedEMA:
    """EMA's interface (``update``, ``model``, ``state_dict``, ``load_state_dict``, ``updates``)
    over the shards of ``fsdp``; ``ema.model`` (built from the unwrapped net) is refilled when
    read. Reading ``model`` or ``state_dict()`` is a collective."""

    def __init__(self, ema: EMA, fsdp):
        self.decay, self.warmup, self.updates = ema.decay, ema.warmup, ema.updates
        self.fsdp, self._model = fsdp, ema.model
        self.shards = [g.shard.detach().clone() for g in _groups(fsdp)]

    current_decay = EMA.current_decay

    @torch.no_grad()
    def update(self, net=None) -> None:
        d = self.current_decay()
        torch._foreach_lerp_(self.shards, [g.shard.detach() for g in _groups(self.fsdp)], 1.0 - d)
        self.updates += 1

    @property
    def model(self) -> torch.nn.Module:
        self._model.load_state_dict(self.state_dict())
        return self._model

    def state_dict(self) -> dict:
        return bare(fsdp_state.full(self.fsdp, shards=self.shards))

    def load_state_dict(self, sd: dict, updates: int) -> None:
        for mine, part in zip(self.shards, fsdp_state.cut(self.fsdp, wrapped(sd))):
            mine.copy_(part)
        self.updates = updates


def fsdp_files(run) -> dict:
    """Model, EMA and optimizer state gathered on every rank (collectives), kept by rank 0."""
    model, ema, optim = (bare(run.model.state_dict()), run.ema.state_dict(),
                         run.model.optim_state_dict(run.opt))
    if run.comm.rank:
        return {}
    return {"model.safetensors": model, "ema.safetensors": ema, "optim.pt": optim}
