"""ZeroOptimizer stage 2's gradient reduction, overlapped with backward.

A ShardedGroup's flat gradient is owned in n equal regions (rank r steps [r*m, (r+1)*m)).
Each region is cut into buckets; as soon as backward has produced every gradient a bucket
covers, the bucket is reduced (averaged) into its owner on the communication thread while
autograd goes on: the reduce-scatter of the whole buffer, issued piece by piece as it fills.
Buckets launch in one fixed order (from the end of the buffer, where backward starts), so
every rank issues the same collectives in the same sequence. When backward ends, what never
got a gradient is reduced as zeros, every bucket is waited for, the owner's shard gradient
receives its part and the full gradients are dropped.

    stream = GradientStream(group, bucket_elems=25 << 18)   # hooks on the group's parameters
    loss.backward()          # group.shard.grad now holds this rank's averaged slice
"""
from __future__ import annotations

import torch

from .. import collectives as rc


def bucket_bounds(numel: int, size: int, cap: int) -> list[tuple[int, int]]:
    """[(start, stop)] covering [0, numel) in pieces of at most ``cap`` elements, never across
    a boundary of the ``size`` equal regions; from the end of the buffer to its start."""
    m = numel // size
    out = []
    for r in reversed(range(size)):
        stop = (r + 1) * m
        while stop > r * m:
            out.append((max(r * m, stop - cap), stop))
            stop = out[-1][0]
    return out


class GradientStream:
    """Post-accumulate-grad hooks that reduce one ShardedGroup's gradients bucket by bucket."""

    def __init__(self, group, bucket_elems: int):
        self.g, self.comm = group, group.comm
        total = group.flat.data.numel()
        self.buckets = bucket_bounds(total, self.comm.size, max(1, bucket_elems))
        spans = [group.flat.span(i) for i in range(len(group.params))]
        # bucket k waits for every non-empty parameter that overlaps it
        self.covers = [[i for i, (a, b) in enumerate(spans) if a < hi and lo < b]
                       for lo, hi in self.buckets]
        self.slot = {id(p): i for i, p in enumerate(group.params)}
        self.of_param = [[] for _ in group.params]
        for k, params in enumerate(self.covers):
            for i in params:
                self.of_param[i].append(k)
        self.done = False               # a backward reduced the gradients since the last step
        self._reset()
        self.handles = [p.register_post_accumulate_grad_hook(self._on_grad)
                        for p in group.params]

    def _reset(self) -> None:
        self.pending = [len(c) for c in self.covers]
        self.ready: set[int] = set()
        self.works: list = []
        self._next, self._queued = 0, False

    def _on_grad(self, p: torch.Tensor) -> None:
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_end)
        i = self.slot[id(p)]
        if i in self.ready:
            return                      # reentrant backward: counted already
        self.ready.add(i)
        view = self.g._grad_buffer().views[i]
        view.copy_(p.grad)
        p.grad = None                   # the flat copy is what gets reduced
        for k in self.of_param[i]:
            self.pending[k] -= 1
        self._launch_ready()

    def _launch_ready(self) -> None:
        while self._next < len(self.buckets) and self.pending[self._next] == 0:
            lo, hi = self.buckets[self._next]
            owner = lo // self.g.m
            data = self.g._grad_buffer().data[lo:hi]
            self.works.append((lo, hi, owner, rc.reduce(data, dst=owner, op=rc.ReduceOp.AVG,
                                                        group=self.comm, async_op=True)))
            self._next += 1

    def _backward_end(self) -> None:
        try:
            views = self.g._grad_buffer().views
            for i, p in enumerate(self.g.params):
                if i not in self.ready:   # no gradient this backward: zeros (or a kept .grad)
                    if p.grad is None:
                        views[i].zero_()
                    else:
                        views[i].copy_(p.grad)
                        p.grad = None
                    for k in self.of_param[i]:
                        self.pending[k] -= 1
            self._launch_ready()
            self._collect()
        finally:
            self._reset()

    def _collect(self) -> None:
        """Wait for every bucket; the owner adds its averaged slice to ``shard.grad`` (the
        first backward since ``step``/``zero_grad`` replaces it: backwards accumulate)."""
        g, mine = self.g, self.g.shard.grad
        for lo, hi, owner, work in self.works:
            work.wait()
            if owner == self.comm.rank:     # my buckets tile my whole slice: copy, or add
                part = mine[lo - g.lo:hi - g.lo]
                part.add_(g.grads.data[lo:hi]) if self.done else part.copy_(g.grads.data[lo:hi])
        g.grads = None
        self.done = True

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
