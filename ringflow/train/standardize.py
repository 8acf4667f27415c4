"""--standardize: train on vector data z-scored per coordinate; samples are scaled back.

The flow's noise is N(0, I) whatever the data's scale; moons span std 0.87 in x and 0.5 in y,
so without this the network resolves the thinner direction less finely (moons-mlp, sliced W2:
0.0374 -> 0.0336 in one process, 0.0367 -> 0.0364 from the CLI; benchmarks/results/models.md).
The statistics come from the data set itself (the same on every rank and in
``ringflow.evaluate``), so nothing is stored.

    space = Standardized.of(x)            # x (N, D)
    z = space.encode(x)                   # (N, D), mean 0 and std 1 per coordinate
    samples = space.decode(z_samples)     # back in the data's coordinates, on the CPU
"""
from __future__ import annotations

import torch


class Standardized:
    """Per-coordinate mean and std of a data set (N, D), and the maps to and from z-scores."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean, self.std = mean, std

    @classmethod
    def of(cls, x: torch.Tensor) -> "Standardized":
        if x.dim() != 2 or len(x) < 2:
            raise ValueError(f"--standardize z-scores vectors (N, D) with N >= 2, got data of "
                             f"shape {tuple(x.shape)}")
        std = x.std(0)
        if not (std > 0).all():
            raise ValueError("--standardize: a coordinate of the data is constant (std 0)")
        return cls(x.mean(0), std)

    @property
    def shape(self) -> tuple:
        return tuple(self.mean.shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.float().cpu() * self.std + self.mean
