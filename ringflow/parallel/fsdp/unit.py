"""A unit of a fully sharded model: a module whose parameters are gathered and freed together.

A unit keeps one FlatShard per (dtype, requires_grad) of its parameters. Its state across a
step: freed -> gathering (an all-gather in flight, a prefetch) -> gathered -> freed; during
backward it counts its trainable parameters' gradients down and, at zero, its gradients are
ready to be reduce-scattered.

    u = Unit("blocks.0", block, [("attn.qkv.weight", p), ...], comm, None)
    u.prefetch(); u.ensure_gathered(); ...; u.free()
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ... import collectives as rc
from .layout import FlatShard

MISMATCH = ("FullyShardedDataParallel: the ranks issued their gathers and reductions in different "
            "orders. Every rank must run the same units in forward and reach the same parameters "
            "(a parameter some ranks use and others skip, e.g. a branch chosen by the data, moves "
            "its unit's reduction); parameters no rank uses are fine. ")


def _wait(work) -> None:
    """``work.wait()``; a mismatch between ranks says what, in FSDP's terms, causes one."""
    try:
        work.wait()
    except rc.CollectiveError as e:
        if "do not match" in str(e):
            e.args = (MISMATCH + str(e),) + e.args[1:]
        raise


class Unit:
    """``named``: (fully qualified name, parameter) pairs this unit owns, in model order."""

    def __init__(self, name: str, module: nn.Module, named: Sequence[tuple[str, nn.Parameter]],
                 comm: rc.Communicator, compute_dtype: torch.dtype | None):
        self.name, self.module = name, module
        self.groups: list[FlatShard] = []
        buckets: dict[tuple, list] = {}
        for fqn, p in named:
            buckets.setdefault((p.dtype, p.requires_grad), []).append((fqn, p))
        for (dtype, _), items in buckets.items():
            cast = compute_dtype if dtype.is_floating_point else None
            self.groups.append(FlatShard([p for _, p in items], [n for n, _ in items], comm, cast))
        self.trainable = [p for g in self.groups if g.trainable for p in g.params]
        self.has_frozen = any(not g.trainable for g in self.groups)
        self._works: list = []              # an all-gather in flight
        self._versions: list[int] = []      # shard versions the gathered values came from
        self.reset_backward()
        self.free()

    # ---- gather / free ----------------------------------------------------------------------
    @property
    def gathered(self) -> bool:
        return bool(self.groups) and all(g.gathered for g in self.groups)

    def _stale(self) -> bool:
        """The optimizer (or a load) wrote the shards since they were gathered."""
        return self._versions != [g.shard._version for g in self.groups]

    def prefetch(self) -> None:
        """Launch the all-gather unless gathered (and current) or already in flight."""
        if self._works or (self.gathered and not self._stale()):
            return
        self._versions = [g.shard._version for g in self.groups]
        self._works = [g.gather(async_op=True) for g in self.groups]

    def ensure_gathered(self) -> None:
        """Return with the full parameters in place (waits for a prefetch, or gathers now)."""
        self.prefetch()
        works, self._works = self._works, []
        for w in works:
            _wait(w)

    def free(self) -> None:
        for w in self._works:               # never free under an all-gather writing into it
            _wait(w)
        self._works = []
        for g in self.groups:
            g.free()

    # ---- backward ---------------------------------------------------------------------------
    def reset_backward(self) -> None:
        self.pending = len(self.trainable)
        self.seen: set[int] = set()
        self.launched = False
        self.had_grads = False              # any trainable parameter had a gradient to reduce
        self.reductions: list = []          # (group, work, shard gradient)

    def count(self, p: torch.Tensor) -> bool:
        """One parameter's gradient is accumulated; True when this was the last one."""
        if id(p) in self.seen:
            return False
        self.seen.add(id(p))
        self.pending -= 1
        return self.pending == 0

    def launch_reduce(self) -> None:
        """Reduce-scatter every trainable group's gradients (missing ones count as zeros)."""
        self.launched = True
        self.had_grads = any(p.grad is not None for p in self.trainable)
        for g in self.groups:
            if g.trainable:
                work, out = g.reduce_grads(g.flat_grads())
                self.reductions.append((g, work, out))

    def finish_reduce(self, keep: bool = True) -> None:
        """Wait for the reductions; ``keep`` False (no rank had a gradient): leave the shard
        gradients untouched, so the optimizer skips this unit as torch skips unused ones."""
        for g, work, out in self.reductions:
            _wait(work)
            if keep:
                g.accept_grad(out)
        self.reductions = []

    def param_nbytes(self) -> int:
        """Bytes of this unit's gathered parameters (its working set while computing)."""
        return sum(g.full_nbytes for g in self.groups)
