"""Gradient buckets: parameters grouped into ~25 MiB flat buffers whose views are the ``.grad``s.

Parameters are taken in reverse registration order (roughly the order backward produces their
gradients), so the first bucket fills early in backward and its all-reduce starts while the rest
of backward runs. The first bucket is kept small (1 MiB) so communication starts as soon as
possible. Every rank computes the same assignment, and buckets are launched in index order.

    buckets = make_buckets(params, cap_bytes=25 << 20, first_cap_bytes=1 << 20)
    buckets[0].views[0] is the gradient of buckets[0].params[0]
"""
from __future__ import annotations

from typing import Sequence

import torch

from .flat import FlatBuffer

MIB = 1 << 20


class Bucket:
    """One flat gradient buffer, the parameters it serves, and this step's progress."""

    def __init__(self, index: int, params: list[torch.nn.Parameter]):
        self.index, self.params = index, params
        self.flat = FlatBuffer.like(params)
        self.views = self.flat.views
        self.pending = len(params)          # gradients still to arrive in this backward
        self.work = None                    # the all-reduce in flight

    @property
    def nbytes(self) -> int:
        return self.flat.data.numel() * self.flat.data.element_size()

    def reset(self) -> None:
        self.pending, self.work = len(self.params), None


def assign(params: Sequence[torch.Tensor], cap_bytes: int, first_cap_bytes: int) -> list[list[int]]:
    """Indices of ``params`` per bucket: reverse order, one dtype/device per bucket, capped sizes.

    A single parameter larger than the cap gets a bucket of its own.
    """
    if cap_bytes <= 0 or first_cap_bytes <= 0:
        raise ValueError(f"bucket caps must be positive bytes, got cap={cap_bytes}, "
                         f"first={first_cap_bytes}")
    done: list[list[int]] = []
    open_: dict[tuple, tuple[list[int], int]] = {}      # (dtype, device) -> (indices, bytes)
    for i in reversed(range(len(params))):
        p = params[i]
        key, size = (p.dtype, p.device), p.numel() * p.element_size()
        idx, used = open_.get(key, ([], 0))
        cap = first_cap_bytes if not done else cap_bytes
        if idx and used + size > cap:
            done.append(idx)
            idx, used = [], 0
        open_[key] = (idx + [i], used + size)
    done.extend(idx for idx, _ in open_.values() if idx)
    return done


def make_buckets(params: Sequence[torch.nn.Parameter], cap_bytes: int,
                 first_cap_bytes: int = MIB) -> list[Bucket]:
    """Buckets over ``params`` (see :func:`assign`)."""
    return [Bucket(b, [params[i] for i in idx])
            for b, idx in enumerate(assign(params, cap_bytes, first_cap_bytes))]
