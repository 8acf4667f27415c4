"""Which samples each rank reads: a disjoint slice of one permutation, reshuffled every epoch.

Every rank draws the same permutation from (seed, epoch), so no communication is needed. Rank r
takes positions r, r+n, r+2n, ... With ``drop_last=False`` the permutation is first padded by
wrapping around to a multiple of the world size (every sample is seen; at most n-1 are seen
twice) so every rank runs the same number of steps; with ``drop_last=True`` the tail is dropped
and the slices are strictly disjoint.

    idx = shard_indices(len(ds), comm.rank, comm.size, epoch=e, seed=0)
    sampler = DistributedSampler(len(ds), group=comm); sampler.set_epoch(e)
    loader = torch.utils.data.DataLoader(ds, batch_size=B, sampler=sampler)
"""
from __future__ import annotations

import torch


def epoch_order(n: int, epoch: int, seed: int = 0) -> torch.Tensor:
    """The permutation of ``range(n)`` every rank draws for ``epoch`` (no communication)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def shard_indices(n: int, rank: int, world_size: int, epoch: int = 0, seed: int = 0,
                  shuffle: bool = True, drop_last: bool = False) -> list[int]:
    """This rank's sample indices for ``epoch``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} ranks")
    if n < 0:
        raise ValueError(f"dataset length must be >= 0, got {n}")
    if shuffle:
        order = epoch_order(n, epoch, seed).tolist()
    else:
        order = list(range(n))
    if drop_last:
        order = order[: n - n % world_size]
    elif n % world_size and n:
        short = world_size - n % world_size
        order += (order * (short // n + 1))[:short]      # wrap around (n may be < world_size)
    return order[rank::world_size]


class DistributedSampler(torch.utils.data.Sampler):
    """A DataLoader sampler over :func:`shard_indices`; call ``set_epoch(e)`` every epoch."""

    def __init__(self, dataset_or_len, group=None, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int | None = None, world_size: int | None = None):
        self.n = dataset_or_len if isinstance(dataset_or_len, int) else len(dataset_or_len)
        if rank is None or world_size is None:
            from ..collectives.group import resolve as resolve_group
            comm = resolve_group(group)
            rank, world_size = comm.rank, comm.size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        return shard_indices(self.n, self.rank, self.world_size, self.epoch, self.seed,
                             self.shuffle, self.drop_last)

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return self.n // self.world_size if self.drop_last else -(-self.n // self.world_size)
