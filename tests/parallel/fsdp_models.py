"""Small models and batches for the fully sharded tests: blocks in a ModuleList (the default
units), an embedding in front and a head behind (the root unit).

    ref = reference(make_blocks(0), steps=10, rows=8)     # one process, the whole batch
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

D, IN, OUT = 16, 5, 3


class Block(nn.Module):
    """Pre-norm residual MLP: (B, D) -> (B, D)."""

    def __init__(self, d: int = D):
        super().__init__()
        self.ln, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.fc2(F.gelu(self.fc1(self.ln(x))))


class Blocks(nn.Module):
    """(B, IN) -> Linear -> depth Blocks -> Linear -> (B, OUT)."""

    def __init__(self, depth: int = 4):
        super().__init__()
        self.inp, self.out = nn.Linear(IN, D), nn.Linear(D, OUT)
        self.blocks = nn.ModuleList(Block() for _ in range(depth))

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h)
        return self.out(h)


@torch.no_grad()
def make_blocks(seed: int, depth: int = 4) -> Blocks:
    """Weights from a private generator (thread ranks share torch's global one)."""
    net, g = Blocks(depth), torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.copy_(torch.randn(p.shape, generator=g) / max(p.shape[-1], 1) ** 0.5)
    return net


def batch(step: int, rows: int):
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(rows, IN, generator=g), torch.randn(rows, OUT, generator=g)


def local_rows(comm, rows: int) -> slice:
    per = rows // comm.size
    return slice(comm.rank * per, (comm.rank + 1) * per)


def reference(net, steps: int, rows: int, opt_fn, first: int = 0) -> dict:
    """Train ``net`` in one process on the whole batches; its state dict afterwards."""
    opt = opt_fn(net.parameters())
    for step in range(first, first + steps):
        x, t = batch(step, rows)
        F.mse_loss(net(x), t).backward()
        opt.step()
        opt.zero_grad()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def max_rel_diff(sd: dict, ref: dict) -> float:
    return max(((sd[k] - v).abs().max() / v.abs().max().clamp_min(1e-12)).item()
               for k, v in ref.items())
