"""ZeroOptimizer's all-gather of the updated parameters, moved under the next forward.

After the optimizer steps, each rank holds the new values of its own slice only. The other
slices reach it bucket by bucket, each broadcast by the rank that owns it (the mirror of
stage 2's reduce into the owner during backward; together the buckets are one all-gather).
Instead of waiting for them inside ``step()``, the broadcasts are launched when the next
forward starts (after the buffers' broadcast, whose rule stays DataParallel's), in the
order of the flat buffer, and each module waits in a forward pre-hook only for the buckets
that hold its own parameters: later blocks' parameters arrive while earlier blocks compute.
The bytes are those an all-gather would copy, so the results are bitwise the same.

Between ``step()`` and that forward the model's parameters are stale. ``module.state_dict()``
and ``module.load_state_dict()`` flush first (hooks); code that reads or writes parameters
directly in between (an EMA update) calls ``opt.wait_params()`` first.

    gather = ForwardGather(groups, module, bucket_elems)   # hooks on module
    gather.schedule()         # end of step(): launched by the next forward
    gather.flush()            # launch (if due) and wait for every bucket now
"""
from __future__ import annotations

from torch import nn

from .. import collectives as rc
from .zero_overlap import bucket_bounds


class ForwardGather:
    """Per-bucket broadcasts of ShardedGroups' parameters, waited for module by module."""

    def __init__(self, groups, module: nn.Module, bucket_elems: int):
        self.groups, self.module, self.comm = groups, module, groups[0].comm
        # (group, lo, hi) in flat order: the order the forward usually meets parameters in
        self.buckets = [(g, lo, hi) for g in groups for lo, hi in
                        reversed(bucket_bounds(g.flat.data.numel(), self.comm.size,
                                               max(1, bucket_elems)))]
        self.pending = False            # step() ran; the next forward launches the broadcasts
        self.works: list = []
        self.waited = 0                 # works[:waited] are complete
        self.handles = self._attach(self._needs())

    def _needs(self) -> dict[int, int]:
        """id(param) -> how many buckets (a prefix, FIFO) must be complete before it is read."""
        out, start = {}, 0
        for g in self.groups:
            mine = [(k, lo, hi) for k, (b, lo, hi) in enumerate(self.buckets) if b is g]
            for i, p in enumerate(g.params):
                a, b = g.flat.span(i)
                covering = [k for k, lo, hi in mine if lo < b and a < hi]
                out[id(p)] = max(covering) + 1 if covering else start
            start += len(mine)
        return out

    def _attach(self, need: dict[int, int]) -> list:
        handles, held = [], set()
        for m in self.module.modules():
            own = [need[id(p)] for p in m.parameters(recurse=False) if id(p) in need]
            held.update(id(p) for p in m.parameters(recurse=False))
            if own and m is not self.module:
                handles.append(m.register_forward_pre_hook(
                    lambda mod, args, upto=max(own): self._wait(upto)))
        # the root also waits for its own parameters and any the modules do not hold
        root = max([n for pid, n in need.items() if pid not in held] +
                   [need[id(p)] for p in self.module.parameters(recurse=False) if id(p) in need],
                   default=0)
        handles += [self.module.register_forward_pre_hook(lambda mod, args: self._wait(root)),
                    self.module.register_forward_hook(lambda mod, args, out: self.flush()),
                    self.module.register_state_dict_pre_hook(lambda *a: self.flush()),
                    self.module.register_load_state_dict_pre_hook(lambda *a: self.flush())]
        return handles

    def schedule(self) -> None:
        """The shards were stepped: the next forward (or ``flush``) sends them."""
        self.pending = True

    def _launch(self) -> None:
        self.pending, self.waited = False, 0
        for g in self.groups:             # my slice: what the all-gather would copy locally
            g.flat.data[g.lo:g.hi].copy_(g.shard)
        if self.comm.size == 1:
            self.works = []
            return
        self.works = [rc.broadcast(g.flat.data[lo:hi], src=lo // g.m, group=self.comm,
                                   async_op=True) for g, lo, hi in self.buckets]

    def _wait(self, upto: int) -> None:
        """Launch if due, then wait for the first ``upto`` buckets."""
        if self.pending:
            self._launch()
        while self.waited < min(upto, len(self.works)):
            self.works[self.waited].wait()
            self.waited += 1

    def flush(self) -> None:
        """Every parameter current on every rank when this returns."""
        self._wait(len(self.buckets))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
