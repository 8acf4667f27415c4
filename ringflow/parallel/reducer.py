"""The gradient reducer shared by DataParallel and DistributedOptimizer.

During backward, a post-accumulate-grad hook on each parameter makes sure its gradient lives in
its bucket view and counts the bucket down; a full bucket is all-reduced asynchronously on the
communication thread, always in bucket index order (a later bucket that fills first waits for
the earlier ones to launch). A callback queued on the autograd engine runs when backward ends:
it launches what is left (gradients that never came are zeros in the buffer), waits for every
bucket, and returns, so backward returns with averaged gradients.

    reducer = Reducer(list(model.named_parameters()), comm)
    reducer.prepare(sync=True); loss.backward()        # grads are now averaged over ranks
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import collectives as rc
from .buckets import MIB, make_buckets
from .compress import wire_dtype


class UnusedParametersError(RuntimeError):
    """Some parameters got no gradient in a synchronised backward."""


class Reducer:
    """Buckets, hooks and the per-backward state machine of gradient averaging."""

    def __init__(self, named_params: Sequence[tuple[str, torch.nn.Parameter]], comm: rc.Communicator,
                 bucket_cap_mb: float = 25, first_bucket_mb: float = 1, compress: str | None = None,
                 find_unused_parameters: bool = False):
        seen, named = set(), []
        for name, p in named_params:                       # tied weights: reduce once
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                named.append((name, p))
        if not named:
            raise ValueError("no parameter requires grad: there is nothing to average")
        self.comm, self.find_unused = comm, find_unused_parameters
        self.tracer = comm.tracer                           # RINGFLOW_TRACE (trace.NULL: off)
        self.names = {id(p): n for n, p in named}
        self.params = [p for _, p in named]
        self.buckets = make_buckets(self.params, int(bucket_cap_mb * MIB), int(first_bucket_mb * MIB))
        self.slot = {id(p): (b, i) for b in self.buckets for i, p in enumerate(b.params)}
        self.wire = wire_dtype(compress)                    # float32 buckets' wire dtype
        self.sync = True                                    # average in the next backward?
        self.after_backward = None                          # called after every backward
        self._queued, self._next, self._ready = False, 0, set()
        self._attach_views()
        self.handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in self.params]

    def _attach_views(self) -> None:
        for b in self.buckets:
            for p, view in zip(b.params, b.views):
                if p.grad is not None:
                    view.copy_(p.grad)
                    p.grad = view

    # ---- one backward ---------------------------------------------------------------------
    def prepare(self, sync: bool) -> None:
        """Called before a forward: whether the backward that follows averages gradients."""
        self.sync = sync

    def arm(self) -> None:
        """Queue the end-of-backward work on the autograd engine (once per backward)."""
        if not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_end)

    def _backward_end(self) -> None:
        self._queued = False
        try:
            if self.sync:
                self.finalize()
        finally:
            if self.after_backward is not None:
                self.after_backward()

    def _into_view(self, p: torch.Tensor) -> None:
        """Make ``p.grad`` its bucket view, copying when autograd gave it a fresh tensor."""
        b, i = self.slot[id(p)]
        view = b.views[i]
        if p.grad.data_ptr() != view.data_ptr():
            view.copy_(p.grad)
            p.grad = view

    def _on_grad(self, p: torch.Tensor) -> None:
        self._into_view(p)
        self.arm()
        if not self.sync:
            return
        if id(p) in self._ready:
            return                                         # reentrant backward: already counted
        self._ready.add(id(p))
        b, _ = self.slot[id(p)]
        b.pending -= 1
        if b.pending == 0:
            if self.tracer.on:
                self._trace_ready(b, "gradients")
            self._launch_ready()

    def _launch_ready(self) -> None:
        """Launch full buckets in index order, stopping at the first one still waiting."""
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            self._launch(self.buckets[self._next])
            self._next += 1

    def _launch(self, b) -> None:
        buf = b.flat.data
        wire = self.wire if buf.dtype == torch.float32 else None   # others go in their own dtype
        b.work = rc.all_reduce(buf, op=rc.ReduceOp.AVG, group=self.comm, async_op=True,
                               wire_dtype=wire)
        if self.tracer.on:
            self._trace_launched(b)

    def finalize(self) -> None:
        """End of backward: launch what is left, wait for all buckets, check unused parameters."""
        try:
            missing = self._fill_missing()
            self._launch_ready()
            used = self._globally_used(missing) if self.find_unused else None
            t0 = self.tracer.now() if self.tracer.on else 0
            for b in self.buckets:
                b.work.wait()
            if t0:
                self.tracer.complete("wait for buckets", t0, {"buckets": len(self.buckets)},
                                     cat="bucket")
            self._settle(missing, used)
        finally:
            self._reset()

    def _fill_missing(self) -> list[torch.Tensor]:
        """Parameters without a gradient this backward contribute zeros (a kept .grad: itself)."""
        missing = [p for p in self.params if id(p) not in self._ready]
        for p in missing:
            b, i = self.slot[id(p)]
            if p.grad is None:
                b.views[i].zero_()
            else:
                self._into_view(p)                          # accumulated in an earlier no_sync pass
            b.pending -= 1
            if b.pending == 0 and self.tracer.on:
                self._trace_ready(b, "end of backward")
        return [p for p in missing if p.grad is None]

    def _globally_used(self, missing: list[torch.Tensor]) -> torch.Tensor:
        """1.0 for each parameter that had a gradient on any rank. Every rank issues this call
        (it is decided by ``find_unused``, not by ``missing``) so the call order stays shared."""
        flags = torch.ones(len(self.params), dtype=torch.float32, device=self.comm.device)
        index = {id(p): k for k, p in enumerate(self.params)}
        for p in missing:
            flags[index[id(p)]] = 0.0
        rc.all_reduce(flags, op=rc.ReduceOp.MAX, group=self.comm)
        return flags

    def _settle(self, missing: list[torch.Tensor], used: torch.Tensor | None) -> None:
        if not missing:
            return
        if used is None:
            names = ", ".join(self.names[id(p)] for p in missing)
            raise UnusedParametersError(
                f"rank {self.comm.rank}: these parameters got no gradient in this backward: {names}. "
                "Pass find_unused_parameters=True if some parameters are legitimately skipped "
                "(conditional branches), or set requires_grad=False on frozen ones.")
        index = {id(p): k for k, p in enumerate(self.params)}
        for p in missing:
            if used[index[id(p)]] > 0:                      # another rank had one: take the average
                b, i = self.slot[id(p)]
                p.grad = b.views[i]

    def _reset(self) -> None:
        for b in self.buckets:
            b.reset()
        self._next = 0
        self._ready.clear()

    # ---- the timeline (RINGFLOW_TRACE): called only when self.tracer.on ------------------------
    def _trace_ready(self, b, why: str) -> None:
        """Bucket ``b`` has every gradient (``why``: the last came from autograd, or the end of
        backward filled in the ones that never came); its span runs until its all-reduce ends."""
        args = {"bytes": b.nbytes, "params": len(b.params), "ready_by": why}
        self.tracer.instant(f"bucket {b.index} ready", args, cat="bucket")
        self.tracer.async_span("b", f"bucket {b.index}", b.index, "bucket", args)

    def _trace_launched(self, b) -> None:
        name = f"bucket {b.index}"
        self.tracer.instant(f"{name} launched", {"collective_seq": self.comm.seq - 1},
                            cat="bucket")
        tracer = self.tracer

        def done(work) -> None:                             # on the communication thread
            state = "failed" if work.exception() is not None else "done"
            tracer.instant(f"{name} {state}", cat="bucket")
            tracer.async_span("e", name, b.index, "bucket", {"state": state})
        b.work.add_done_callback(done)

    def remove(self) -> None:
        """Detach the hooks (the model keeps working without averaging)."""
        for h in self.handles:
            h.remove()
        self.handles = []
