"""The ring: reduce-scatter and all-gather by hand; all-reduce is the two in sequence.

Every function works in place on a flat, contiguous 1-D buffer whose chunks are
given by ``chunking.chunk_bounds``. Rank r sends to r+1 and receives from r-1;
each step posts its send and receive together. A chunk is cut into the same
number of slices on every rank so that receiving slice k+1 overlaps reducing
slice k (double-buffered scratch, no allocation per step once warm).

Reduction order is fixed by the ring (chunk c is summed starting at rank c+1),
so results never depend on timing, and the all-gather copies bytes, so every
rank ends bitwise identical.

Two ranks: the ring's two steps (half of the buffer each way, then the other half back) move
what one exchange of whole buffers moves, so up to PAIR_EXCHANGE_BYTES the all-reduce is that
one exchange (``_pair_exchange``), which computes the ring's bytes (same operands, same order).
"""
from __future__ import annotations

import torch

from . import pipeline
from .chunking import all_gather_chunks, chunk_bounds, reduce_scatter_chunks
from .communicator import Communicator
from .ops import ReduceOp, finish_avg, reduce_out
from .pipeline import configured_slice_bytes, trace_step


# Up to this many bytes a two-rank all-reduce is one exchange of whole buffers instead of the
# ring's two dependent steps: over gloo a message costs a round of thread wake-ups. On loopback
# (2 ranks, benchmarks/collectives/pipeline_sweep.py, config "rd": the same exchange) it ran
# 1.30-1.39x gloo at 1 MiB, 0.83-1.06x at 4 MiB and 0.95-1.25x at 8 MiB, where the pipelined ring
# in whole pieces on 1-4 channels ran 0.23-0.84x, 0.61-1.03x and 0.66-1.03x; at 16 MiB the ring
# caught up (0.90-1.03x against 0.88-1.09x): its reductions overlap its transfers. Across two
# emulated hosts at 1-4 MiB the two ran level: the link is the bound, both move the whole buffer
# each way (benchmarks/results/across_hosts.md, 2026-12-07b).
PAIR_EXCHANGE_BYTES = 8 << 20


def _slices(bounds: tuple[int, int], nslices: int) -> list[tuple[int, int]]:
    start, stop = bounds
    return [(start + a, start + b) for a, b in chunk_bounds(stop - start, nslices)]


def slice_count(comm: Communicator, chunk_elems: int, itemsize: int) -> int:
    """How many pipeline slices a chunk of ``chunk_elems`` gets (same on every rank)."""
    size = configured_slice_bytes(comm)
    if not size or chunk_elems == 0:
        return 1
    per = max(1, size // itemsize)
    return max(1, -(-chunk_elems // per))


def reduce_scatter_(comm: Communicator, buf: torch.Tensor, bounds: list[tuple[int, int]],
                    op: ReduceOp) -> None:
    """After n-1 steps, chunk ``comm.rank`` of ``buf`` holds the reduction over ranks (SUM for AVG)."""
    n, r = comm.size, comm.rank
    if n == 1:
        return
    if not _fused(comm):
        pipeline.reduce_scatter_(comm, buf, bounds, op)
        return
    biggest = max(b - a for a, b in bounds)
    nslices = slice_count(comm, biggest, buf.element_size())
    piece = -(-biggest // nslices)
    landing = comm.scratch(buf.dtype, 2 * piece, buf.device).view(2, piece)
    tracer = comm.tracer
    for step in range(n - 1):
        t0 = tracer.now() if tracer.on else 0
        send_c, recv_c = reduce_scatter_chunks(r, n, step)
        (sa, sb), (ra, rb) = bounds[send_c], bounds[recv_c]
        _reduce_step(comm, buf[sa:sb], buf[ra:rb], buf[ra:rb], landing, nslices, op, step)
        if t0:
            trace_step(comm, step, t0, nslices, (sb - sa) * buf.element_size())


def _fused(comm: Communicator) -> bool:
    """Whether this ring runs step by step: on a transport that reduces as it receives (shm),
    whose steps take every slice at once, and on one whose messages cannot be posted one by
    one ahead of their partners (NCCL: one stream, a lone receive blocks it). Elsewhere
    (gloo, MPI, threads) the pipelined ring runs."""
    return hasattr(comm.transport, "irecv_reduce") or not comm.transport.pipelines


def _fused_step(comm: Communicator, src: torch.Tensor, mine: torch.Tensor, dst: torch.Tensor,
                sends, recvs, op: ReduceOp, step: int) -> None:
    """The step on a transport that reduces as it receives (shm): no landing copy, all slices
    posted at once, the transport combining each arrived piece with ``mine`` into ``dst``."""
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size

    def combine(out, first, arrived):
        reduce_out(out, first, arrived, op)          # same operand order as the landing path
    works, tracing = [], comm.tracer.on
    for k, ((sa, sb), (ra, rb)) in enumerate(zip(sends, recvs)):
        if rb > ra:     # through the Communicator: the receive carries the call's stamp
            works.append((left, comm.irecv_reduce(dst[ra:rb], mine[ra:rb], left, combine)))
        works.append((right, comm.isend(src[sa:sb], right)))
        if tracing:
            _trace_post(comm, k, src[sa:sb], dst[ra:rb], right, left, "reduced on arrival")
    for who, work in works:
        comm.wait(work, peer=who, step=step)


def all_gather_(comm: Communicator, buf: torch.Tensor, bounds: list[tuple[int, int]]) -> None:
    """Each rank starts owning chunk ``comm.rank`` of ``buf``; afterwards all chunks are everywhere."""
    n, r = comm.size, comm.rank
    if n == 1:
        return
    if not _fused(comm):
        pipeline.all_gather_(comm, buf, bounds)
        return
    right, left = (r + 1) % n, (r - 1) % n
    biggest = max(b - a for a, b in bounds)
    nslices = slice_count(comm, biggest, buf.element_size())
    tracer = comm.tracer
    for step in range(n - 1):
        t0 = tracer.now() if tracer.on else 0
        send_c, recv_c = all_gather_chunks(r, n, step)
        sends, recvs = _slices(bounds[send_c], nslices), _slices(bounds[recv_c], nslices)
        works = [comm.sendrecv(buf[sa:sb], right, buf[ra:rb], left)
                 for (sa, sb), (ra, rb) in zip(sends, recvs)]
        if t0:
            for k, ((sa, sb), (ra, rb)) in enumerate(zip(sends, recvs)):
                _trace_post(comm, k, buf[sa:sb], buf[ra:rb], right, left, "copied")
        for send_work, recv_work in works:
            comm.wait(recv_work, peer=left, step=n - 1 + step)
            comm.wait(send_work, peer=right, step=n - 1 + step)
        if t0:
            sa, sb = bounds[send_c]
            trace_step(comm, n - 1 + step, t0, nslices, (sb - sa) * buf.element_size())


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    """Ring all-reduce of flat ``buf`` in place: reduce-scatter, then all-gather (pipelined
    across the two, pipeline.py, where the transport does not reduce on arrival; two ranks up
    to PAIR_EXCHANGE_BYTES: one exchange, the same bytes)."""
    if not _fused(comm):
        if comm.size == 2 and buf.numel() * buf.element_size() <= PAIR_EXCHANGE_BYTES:
            _pair_exchange(comm, buf, op)
        else:
            pipeline.all_reduce(comm, buf, op)
        return
    bounds = chunk_bounds(buf.numel(), comm.size)
    reduce_scatter_(comm, buf, bounds, op)
    a, b = bounds[comm.rank]
    finish_avg(buf[a:b], op, comm.size)      # divide once, before the bytes are copied around
    all_gather_(comm, buf, bounds)


def _pair_exchange(comm: Communicator, buf: torch.Tensor, op: ReduceOp) -> None:
    """The two-rank ring in one exchange: each rank sends its whole buffer and combines the
    peer's into it, with the ring's operand order: on the chunk a rank owns its own block comes
    first, on the other chunk the peer's (the ring sums chunk c starting at rank c+1, the owner
    last: mine (op) arrived). Both ranks so compute every element from the same two operands in
    the same order, and AVG divides the same sum: the ring's bytes on both ranks."""
    peer, tracer = 1 - comm.rank, comm.tracer
    t0 = tracer.now() if tracer.on else 0
    theirs = comm.scratch(buf.dtype, buf.numel(), buf.device)
    sw, rw = comm.sendrecv(buf, peer, theirs, peer)
    comm.wait(rw, peer=peer, step=0)
    comm.wait(sw, peer=peer, step=0)
    for c, (a, b) in enumerate(chunk_bounds(buf.numel(), 2)):
        mine, other = buf[a:b], theirs[a:b]
        reduce_out(mine, *((mine, other) if c == comm.rank else (other, mine)), op)
    finish_avg(buf, op, 2)
    if t0:
        tracer.complete("pair exchange", t0, {"bytes": buf.numel() * buf.element_size(),
                                              "peer": comm.ranks[peer]})


def reduce_scatter(comm: Communicator, out: torch.Tensor, inp: torch.Tensor, op: ReduceOp) -> None:
    """out (numel m) = reduction of chunk ``rank`` of every rank's ``inp`` (numel m*n).

    Out of place: ``inp`` is only read. Partial sums live in two chunk-sized
    accumulators that alternate by step (one is on the wire while the other is
    written), the last step writes straight into ``out``, so nothing of size m*n
    is copied or allocated. ``out`` may alias chunk ``rank`` of ``inp``.
    """
    n, r = comm.size, comm.rank
    bounds = chunk_bounds(inp.numel(), n)
    if n == 1:
        out.copy_(inp)
        return
    biggest = max(b - a for a, b in bounds)
    nslices = slice_count(comm, biggest, inp.element_size())
    piece = -(-biggest // nslices)
    scratch = comm.scratch(inp.dtype, 2 * biggest + 2 * piece, inp.device)
    acc, landing = scratch[: 2 * biggest].view(2, biggest), scratch[2 * biggest:].view(2, piece)
    tracer = comm.tracer
    for step in range(n - 1):
        t0 = tracer.now() if tracer.on else 0
        send_c, recv_c = reduce_scatter_chunks(r, n, step)
        (sa, sb), (ra, rb) = bounds[send_c], bounds[recv_c]
        src = inp[sa:sb] if step == 0 else acc[(step - 1) % 2, : sb - sa]
        dst = out if step == n - 2 else acc[step % 2, : rb - ra]
        _reduce_step(comm, src, inp[ra:rb], dst, landing, nslices, op, step)
        if t0:
            trace_step(comm, step, t0, nslices, (sb - sa) * inp.element_size())
    finish_avg(out, op, n)


def _reduce_step(comm: Communicator, src: torch.Tensor, mine: torch.Tensor, dst: torch.Tensor,
                 landing: torch.Tensor, nslices: int, op: ReduceOp, step: int) -> None:
    """Send ``src`` right while dst = mine (op) what arrives from the left, slice by slice."""
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    sends, recvs = _slices((0, src.numel()), nslices), _slices((0, mine.numel()), nslices)
    if _fused(comm):
        _fused_step(comm, src, mine, dst, sends, recvs, op, step)
        return

    tracer = comm.tracer
    tracing = tracer.on

    def post(k: int):
        (sa, sb), (ra, rb) = sends[k], recvs[k]
        if tracing:
            _trace_post(comm, k, src[sa:sb], landing[k % 2, : rb - ra], right, left, "landing")
        return comm.sendrecv(src[sa:sb], right, landing[k % 2, : rb - ra], left)

    pending, send_works = post(0), []
    for k in range(nslices):
        send_work, recv_work = pending
        send_works.append(send_work)
        if k + 1 < nslices:
            pending = post(k + 1)          # slot (k+1)%2 was consumed at k-1
        comm.wait(recv_work, peer=left, step=step)
        ra, rb = recvs[k]
        if tracing:
            t0 = tracer.now()
        reduce_out(dst[ra:rb], mine[ra:rb], landing[k % 2, : rb - ra], op)   # same order as in place
        if tracing:
            tracer.complete(f"reduce slice {k}", t0, {"bytes": (rb - ra) * dst.element_size()})
    for w in send_works:
        comm.wait(w, peer=right, step=step)


def all_gather(comm: Communicator, out: torch.Tensor, inp: torch.Tensor) -> None:
    """out (numel m*n) = concatenation of every rank's ``inp`` (numel m) in rank order."""
    bounds = chunk_bounds(out.numel(), comm.size)
    a, b = bounds[comm.rank]
    out[a:b].copy_(inp)
    all_gather_(comm, out, bounds)


# ---- the timeline (RINGFLOW_TRACE): called only when comm.tracer.on ------------------------
def _trace_post(comm: Communicator, k: int, send: torch.Tensor, recv: torch.Tensor, right: int,
                left: int, into: str) -> None:
    """Slice ``k``'s send to ``right`` and receive from ``left`` were posted (group ranks)."""
    comm.tracer.instant(f"post slice {k}", {
        "send_bytes": send.numel() * send.element_size(), "to": comm.ranks[right],
        "recv_bytes": recv.numel() * recv.element_size(), "from": comm.ranks[left],
        "recv_into": into})
