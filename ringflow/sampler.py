"""Which rows of an in-memory dataset each rank trains on, step by step, resumably.

Every epoch is a permutation of all N rows drawn from (seed, epoch), the same on every rank;
step s takes the s-th global batch of it and rank r takes the r-th contiguous slice, so the
ranks' rows are disjoint and together they are exactly the global batch a single process
would draw. The position (epoch, batch) is the whole state: resuming is bitwise. (For a user's
own loop, ``ringflow.parallel.shard_indices`` slices the same permutation rank-strided.)

    batches = ShardedBatches(n=1797, global_batch=128, rank=comm.rank, world=comm.size, seed=0)
    idx = batches.next()              # LongTensor (128 // world,)
    state = batches.state_dict()      # {"epoch": 0, "batch": 1}
"""
from __future__ import annotations

import torch

from .parallel.sampler import epoch_order


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
