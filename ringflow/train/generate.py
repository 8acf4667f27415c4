"""Draw samples on every rank at once: each rank draws its share, an all-gather joins them.

Used by training (periodic grids) and by ``ringflow.evaluate``; no rank idles in a collective
while another samples alone. Class labels run along the rows of the grid (row r shows class
r mod num_classes; ``grid_columns`` images a row), so a glance tells whether conditioning works.

    x = sample_sharded(objective, ema.model, 100, (1, 8, 8), comm, steps=50, cfg_scale=2.0,
                       num_classes=10, seed=0)          # (100, 1, 8, 8) on every rank
    x = sample_sharded(..., noise="sobol")               # evenly spread starting noise
"""
from __future__ import annotations

import contextlib
import math

import torch

from .. import collectives as rc
from ..models.noise import standard_normal


def grid_columns(n: int) -> int:
    """Images per row of an n-image grid: the smallest divisor of n from ceil(sqrt(n)) up, so
    the grid has no empty cells (8 -> 4: 2 rows of 4; 100 -> 10); ceil(sqrt(n)) when every
    such divisor would make a thin strip (7 -> 3)."""
    side = math.isqrt(max(n, 1) - 1) + 1                 # ceil(sqrt(n))
    return next((c for c in range(side, 2 * side + 1) if n % c == 0), side)


def grid_labels(n: int, num_classes: int, total: int | None = None) -> torch.Tensor | None:
    """(total or n,) labels constant along each row of an n-image grid (``grid_columns(n)``
    wide); None if unconditional. ``total`` > n pads with the rows that would follow."""
    if num_classes <= 0:
        return None
    return (torch.arange(total or n) // grid_columns(n)) % num_classes


def sample_seed(seed: int, rank: int) -> int:
    """A seed per rank: shards differ, and the grid is the same whenever the world size is."""
    return seed * 7919 + rank


@torch.no_grad()
def sample_sharded(objective, net, n: int, shape: tuple, comm, *, steps: int, cfg_scale: float,
                   num_classes: int, seed: int, device=None, autocast=None,
                   noise: str = "iid") -> torch.Tensor:
    """Collective: ``n`` samples of ``shape`` (float32, CPU), identical on every rank.

    ``noise`` "sobol" starts rank r from points [r * per, (r + 1) * per) of one scrambled Sobol
    sequence (``models.noise``), so the gathered samples start from one evenly spread set."""
    device = torch.device(device or "cpu")
    per = math.ceil(n / comm.size)
    # labels laid out for the n samples kept, so rows of the saved grid hold one class each
    labels = grid_labels(n, num_classes, total=per * comm.size)
    mine = slice(comm.rank * per, (comm.rank + 1) * per)
    y = labels[mine].to(device) if labels is not None else None
    gen = torch.Generator(device=device).manual_seed(sample_seed(seed, comm.rank))
    start = {}                                     # iid: the objective draws from gen itself
    if noise != "iid":
        start["noise"] = standard_normal((per, *shape), kind=noise, seed=seed,
                                         offset=comm.rank * per, device=device)
    with autocast or contextlib.nullcontext():
        x = objective.sample(net, (per, *shape), steps=steps, y=y, cfg_scale=cfg_scale,
                             generator=gen, **start)
    x = x.float().contiguous()
    out = torch.empty((per * comm.size, *shape), dtype=x.dtype, device=x.device)
    rc.all_gather_into_tensor(out, x, group=comm)
    return out[:n].cpu()
