"""Exponential moving average of a network's weights, the copy that samples are drawn from.

Decay with warm-up as in diffusers' EMAModel: d_n = min(decay, (1 + n) / (10 + n)), so early
averages are not dominated by the random initialisation. Updated in float32 whatever the
training precision; every rank holds identical weights, so every rank's EMA is identical too.

    ema = EMA(net, decay=0.999)
    ema.update(net)                 # after each optimizer step
    sample(ema.model, ...)
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of ``net`` whose parameters track it with decay ``decay``."""

    def __init__(self, net: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.model = copy.deepcopy(net).eval().requires_grad_(False)

    def current_decay(self) -> float:
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        d = self.current_decay()
        ema_p = list(self.model.parameters())
        net_p = [p.detach() for p in net.parameters()]
        torch._foreach_lerp_(ema_p, net_p, 1.0 - d)       # ema += (1 - d) (net - ema)
        for b_ema, b in zip(self.model.buffers(), net.buffers()):
            b_ema.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.model.load_state_dict(state)
        self.updates = updates
