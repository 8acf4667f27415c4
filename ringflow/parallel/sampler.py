"""Which samples each rank reads: disjoint slices of one permutation, reshuffled every epoch.

Every rank draws the same permutation from (seed, epoch) (``epoch_order``), so no communication
is needed. Two ways to slice it:

- ``shard_indices`` / ``DistributedSampler`` (a user's own loop, one epoch at a time): rank r
  takes positions r, r+n, r+2n, ... With ``drop_last=False`` the permutation is first padded
  by wrapping around to a multiple of the world size (every sample is seen; at most n-1 are
  seen twice) so every rank runs the same number of steps; with ``drop_last=True`` the tail is
  dropped and the slices are strictly disjoint.
- ``ShardedBatches`` (``ringflow.train``, step by step): step s takes the s-th global batch of
  the permutation and rank r its r-th contiguous slice, so together the ranks draw exactly the
  global batch a single process would. The position (epoch, batch) is the whole state:
  resuming is bitwise.

    idx = shard_indices(len(ds), comm.rank, comm.size, epoch=e, seed=0)
    sampler = DistributedSampler(len(ds), group=comm); sampler.set_epoch(e)
    loader = torch.utils.data.DataLoader(ds, batch_size=B, sampler=sampler)
    batches = ShardedBatches(n=1797, global_batch=128, rank=comm.rank, world=comm.size, seed=0)
    idx = batches.next()              # LongTensor (128 // world,)
    state = batches.state_dict()      # {"epoch": 0, "batch": 1}
"""
from __future__ import annotations

import torch

# Streams derived from a run's seed are seeded seed * SEED_STRIDE + a small offset (the epoch for
# epoch orders, 1 + rank for the trainer's noise), so neighbouring seeds share no stream. Resume
# is bitwise only while this number stays the same.
SEED_STRIDE = 1_000_003


def epoch_order(n: int, epoch: int, seed: int = 0) -> torch.Tensor:
    """The permutation of ``range(n)`` every rank draws for ``epoch`` (no communication)."""
    g = torch.Generator().manual_seed(seed * SEED_STRIDE + epoch)
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


class ShardedBatches:
    """Disjoint per-rank slices of shuffled global batches; the last partial batch is dropped."""

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int = 0):
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} is not divisible by {world} ranks")
        if n < global_batch:
            raise ValueError(f"the dataset has {n} rows, fewer than one global batch of "
                             f"{global_batch}; lower the batch size")
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.per_rank, self.rank = global_batch // world, rank
        self.batches_per_epoch = n // global_batch
        self.epoch, self.batch = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        return epoch_order(self.n, epoch, self.seed)      # the same one shard_indices slices

    def next(self) -> torch.Tensor:
        """This rank's row indices for the next step (per_rank,)."""
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
            self._order = self._permutation(self.epoch)
        start = self.batch * self.global_batch + self.rank * self.per_rank
        self.batch += 1
        return self._order[start:start + self.per_rank]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._order = self._permutation(self.epoch)
