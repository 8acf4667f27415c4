"""RingflowProcessGroup: torch.distributed's ProcessGroup API over a ringflow Communicator.

torch calls these methods for every collective on a group of backend "ringflow" (from Python and
from C++: DDP's reducer, FSDP2, functional collectives). Each queues the collective on ringflow's
engine (async: DDP overlaps its buckets with backward) and returns a BackendWork whose future
yields the tensors, or raises ringflow's own error. The algorithm is ringflow's choice ("auto",
or what RINGFLOW_ALGORITHM forces).

    dist.init_process_group("ringflow")        # torch builds one of these per group
    dist.all_reduce(t)                          # -> RingflowProcessGroup.allreduce([t], opts)
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .. import collectives as rc
from ..collectives.communicator import Communicator
from ..collectives.ops import as_reduce_op
from . import lists, p2p, plans
from .work import BackendWork

def _op(opts):
    """ringflow's ReduceOp for torch's (an object whose ``op`` is the RedOpType; by its value,
    plans.TORCH_OPS: hashing the enum itself costs 0.4 us more)."""
    red = opts.reduceOp.op
    return plans.TORCH_OPS.get(red.value) or as_reduce_op(red)


def _async(opts) -> bool:
    """Whether the caller may wait later. torch's Python verbs say (``opts.asyncOp`` is False for
    ``async_op=False``): those run inline, with no hand-over to the engine thread. Calls from
    C++ (DDP's reducer, FSDP2, functional collectives) keep the default, True: queued, so they
    overlap with backward."""
    return opts is None or opts.asyncOp


def _one(tensors, verb: str) -> torch.Tensor:
    if len(tensors) != 1:
        raise ValueError(f"ringflow's process group takes one tensor per rank in {verb}, got "
                         f"{len(tensors)} (one process per device; the multi-device form is gone "
                         "from torch)")
    return tensors[0]


class RingflowProcessGroup(dist.ProcessGroup):
    """One torch process group whose collectives run on ringflow's ``comm``."""

    def __init__(self, comm: Communicator, name: str):
        super().__init__(comm.rank, comm.size)
        self.comm = comm
        self._name = name             # torch's getter reads a C++ backend this group lacks
        self._plans = plans.AllReducePlans(comm)

    @property
    def group_name(self) -> str:
        """torch's name for this group (functional collectives and destroy look it up)."""
        return self._name

    def getBackendName(self) -> str:
        return "ringflow"

    def __repr__(self) -> str:
        return f"RingflowProcessGroup(rank={self.comm.rank}, size={self.comm.size})"

    # ---- how a call becomes a Work ------------------------------------------------------------
    def _queue(self, name: str, job, result, tensor, opts) -> BackendWork:
        """Run ``job`` as one recorded collective (queued on the engine thread, or inline)."""
        return BackendWork.of(self.comm.run(name, job, tensor=tensor, async_op=_async(opts)),
                              result)

    def _last(self, works, result) -> BackendWork:
        """The engine runs in order and refuses after a failure: the last Work speaks for all."""
        return BackendWork.of(works[-1] if works else None, result)

    # ---- reductions ---------------------------------------------------------------------------
    def allreduce(self, tensors, opts=None):
        """``dist.all_reduce(t)`` (``opts.asyncOp`` False) runs inline and returns None: torch's
        blocking verbs take None as "done, nothing to wait for" (every one of them checks), and
        building a Work per call cost a tenth of a 4 KiB all_reduce. C++ callers (DDP's
        reducer, functional collectives) leave asyncOp True and get a Work with its future.
        A kind of tensor seen before runs on its plan (plans.py): the checks and choices of
        its first call are not made again."""
        if opts is None:
            opts = dist.AllreduceOptions()
        if len(tensors) == 1:
            work = self._plans.run(tensors[0], opts.reduceOp, opts.asyncOp)
            if work is not plans.NOT_RUN:
                return BackendWork.of(work, tensors) if work is not None else None
        return self._allreduce(_one(tensors, "allreduce"), tensors, opts)

    def _allreduce(self, t, tensors, opts):
        """The general path: any tensor, every check, every error."""
        try:                                       # past the checks torch already made
            work = rc.all_reduce_resolved(self.comm, _real(t), _op(opts), opts.asyncOp)
        except TypeError:                          # the refusal path: a sparse tensor?
            if not t.is_sparse:
                raise
            job = lists.sparse_all_reduce(self.comm, t, _op(opts))
            return self._queue("all_reduce_sparse", job, tensors, None, opts)
        return BackendWork.of(work, tensors) if opts.asyncOp else None

    def allreduce_coalesced(self, tensors, opts=None):
        op = _op(opts or dist.AllreduceCoalescedOptions())
        works = [rc.all_reduce(_real(t), op=op, group=self.comm, async_op=_async(opts))
                 for t in tensors]
        return self._last(works, tensors)

    def reduce(self, tensors, opts=None):
        t, opts = _one(tensors, "reduce"), opts or dist.ReduceOptions()
        work = rc.reduce(_real(t), dst=opts.rootRank, op=_op(opts), group=self.comm,
                         async_op=_async(opts))
        return BackendWork.of(work, tensors)

    def reduce_scatter(self, outputs, input_lists, opts=None):
        out, inputs = _one(outputs, "reduce_scatter"), _one(input_lists, "reduce_scatter")
        lists.check_list(inputs, self.comm.size, "reduce_scatter", "the input list")
        job = lists.reduce_scatter_list(self.comm, out, inputs,
                                        _op(opts or dist.ReduceScatterOptions()))
        return self._queue("reduce_scatter", job, outputs, out, opts)

    def reduce_scatter_single(self, output, input, opts=None):
        op = _op(opts or dist.ReduceScatterOptions())
        work = rc.reduce_scatter_tensor(output, input, op=op, group=self.comm,
                                        async_op=_async(opts))
        return BackendWork.of(work, [output])

    def reduce_scatter_single_coalesced(self, outputs, inputs, opts=None):
        op = _op(opts or dist.ReduceScatterOptions())
        works = [rc.reduce_scatter_tensor(o, i, op=op, group=self.comm, async_op=_async(opts))
                 for o, i in zip(outputs, inputs, strict=True)]
        return self._last(works, outputs)

    # ---- copies -------------------------------------------------------------------------------
    def broadcast(self, tensors, opts=None):
        t, opts = _one(tensors, "broadcast"), opts or dist.BroadcastOptions()
        work = rc.broadcast(lists.as_bytes(t), src=opts.rootRank, group=self.comm,
                            async_op=_async(opts))
        return BackendWork.of(work, tensors)

    def allgather(self, output_lists, inputs, opts=None):
        outputs, inp = _one(output_lists, "allgather"), _one(inputs, "allgather")
        lists.check_list(outputs, self.comm.size, "allgather", "the output list")
        return self._queue("allgather", lists.all_gather_list(self.comm, outputs, inp),
                           output_lists, inp, opts)

    def allgather_coalesced(self, output_lists, inputs, opts=None):
        """output_lists[j][i]: rank j's tensor i (torch's layout: one list per rank)."""
        lists.check_list(output_lists, self.comm.size, "allgather_coalesced", "the output list")
        works = [self.comm.run("allgather", lists.all_gather_list(
                     self.comm, [outs[i] for outs in output_lists], inp),
                     tensor=inp, async_op=_async(opts))
                 for i, inp in enumerate(inputs)]
        return self._last(works, output_lists)

    def all_gather_single(self, output, input, opts=None):
        work = rc.all_gather_into_tensor(lists.as_bytes(output), lists.as_bytes(input),
                                         group=self.comm, async_op=_async(opts))
        return BackendWork.of(work, [output])

    def all_gather_single_coalesced(self, outputs, inputs, opts=None):
        works = [rc.all_gather_into_tensor(lists.as_bytes(o), lists.as_bytes(i), group=self.comm,
                                           async_op=_async(opts))
                 for o, i in zip(outputs, inputs, strict=True)]
        return self._last(works, outputs)

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        work = rc.all_to_all_single(output, input, output_split_sizes or None,
                                    input_split_sizes or None,
                                    group=self.comm, async_op=_async(opts))
        return BackendWork.of(work, [output])

    def alltoall(self, outputs, inputs, opts=None):
        lists.check_list(outputs, self.comm.size, "alltoall", "the output list")
        lists.check_list(inputs, self.comm.size, "alltoall", "the input list")
        return self._queue("alltoall", lists.all_to_all_list(self.comm, outputs, inputs),
                           outputs, inputs[0], opts)

    def gather(self, output_lists, inputs, opts=None):
        inp, root = _one(inputs, "gather"), (opts or dist.GatherOptions()).rootRank
        outputs = _one(output_lists, "gather") if self.comm.rank == root else []
        if self.comm.rank == root:
            lists.check_list(outputs, self.comm.size, "gather", "the gather list")
        return self._queue("gather", lists.gather_list(self.comm, outputs, inp, root),
                           output_lists, inp, opts)

    def scatter(self, outputs, input_lists, opts=None):
        out, root = _one(outputs, "scatter"), (opts or dist.ScatterOptions()).rootRank
        inputs = _one(input_lists, "scatter") if self.comm.rank == root else []
        if self.comm.rank == root:
            lists.check_list(inputs, self.comm.size, "scatter", "the scatter list")
        return self._queue("scatter", lists.scatter_list(self.comm, out, inputs, root),
                           outputs, out, opts)

    def barrier(self, opts=None):
        return BackendWork.of(rc.barrier(group=self.comm, async_op=_async(opts)), [])

    # ---- point to point -------------------------------------------------------------------------
    def send(self, tensors, dst: int, tag: int = 0):
        t = lists.as_bytes(_one(tensors, "send")).reshape(-1)
        return p2p.post(self.comm, "send", t, dst, tag, tensors)

    def recv(self, tensors, src: int, tag: int = 0):
        t = lists.as_bytes(_one(tensors, "recv")).reshape(-1)
        return p2p.post(self.comm, "recv", t, src, tag, tensors)

    def recv_anysource(self, tensors, tag: int = 0):
        """``dist.recv(t)`` / ``dist.irecv(t)`` without src: the Work names the sender."""
        t = lists.as_bytes(_one(tensors, "recv")).reshape(-1)
        return p2p.post(self.comm, "recv", t, p2p.ANY, tag, tensors)

    def shutdown(self) -> None:
        from .world import close_world
        close_world(self.comm)


def _real(t: torch.Tensor) -> torch.Tensor:
    """A complex tensor is reduced as its (re, im) pairs: sums and averages stay right."""
    return torch.view_as_real(t) if t.is_complex() else t
