"""float32 all-reduce with bf16/fp16 bytes on the wire: a ring, fp32 accumulation, one rounding
per hop.

    rc.all_reduce(grads_fp32, wire_dtype=torch.bfloat16)    # half the bytes of the float32 ring
    rc.all_reduce(grads_fp32, op=rc.ReduceOp.AVG, wire_dtype=torch.float16)

Reduce-scatter (n-1 steps): a rank rounds the float32 partial sum of the chunk it forwards to the
wire dtype (once), receives its left neighbour's partial of the next chunk in the wire dtype,
widens it and adds it into its own float32 chunk, which is the accumulator. All-gather: each
owner divides (AVG) and rounds its final chunk to the wire dtype once; those bytes go round the
ring and every rank, the owner included, widens the same bytes, so all ranks end bitwise
identical. Chunk c is summed in the ring's fixed order (rank c+1 first, the owner last), so the
result never depends on timing. Chunks travel in slices, so rounding, widening and adding one
slice overlaps the transfer of the next; over gloo, MPI and threads on pipeline.py's schedule (a
slice reduced at step t goes on as step t+1's at once, so the reduce-scatter runs into the
all-gather without a pause), over shm and NCCL step by step, as their float32 ring does.
Buffers, from the communicator's scratch pool: a wire-dtype copy of the tensor (what goes out
and what lands) and float32 rows to widen arrivals into.

Error bound (normal range). Let u be the wire dtype's unit roundoff (round to nearest: 2^-8 for
bf16, 8 significant bits; 2^-11 for fp16, 11 bits) and v = 2^-24 float32's. A value of chunk c
meets n roundings to the wire dtype (n-1 hops, then the all-gather's) and at most n float32
roundings (n-1 additions and AVG's division), each multiplying what has been summed so far by
(1 + d), |d| <= u or v. As in recursive summation (Higham, Accuracy and Stability of Numerical
Algorithms, 2nd ed., section 4.2), elementwise

    |result - exact| <= ((1 + u)^n (1 + v)^n - 1) * sum_i |x_i|   (~ n u sum|x|; /n for AVG)

i.e. n x 0.39 % of sum|x| for bf16 (n=2: 0.78 %, n=4: 1.6 %), n x 0.049 % for fp16;
``error_bound(wire, n)`` is that factor. MAX and MIN are exact up to one rounding (rounding is
monotonic: the result is the true max rounded once); PRODUCT has the same factor relative to
|product|. Outside the normal range: fp16 overflows to inf past 65504 (partial sums included;
bf16 has float32's range), and values below the smallest normal (fp16: 2^-14) lose precision to
an absolute error of half the subnormal spacing per rounding (fp16: n * 2^-25).

Against the other half-precision paths: ``fp32acc`` (direct.py) takes tensors already in bf16/fp16
and rounds twice in all (input, total) at any n; this ring takes float32 and rounds n times, each
hop sending only its own share, which is what a bandwidth-bound link wants. A world of one rounds
once, so the result is always a wire-dtype value, whatever the world size.
"""
from __future__ import annotations

import torch

from .. import settings
from . import pipeline, ring
from .chunking import all_gather_chunks, chunk_bounds, reduce_scatter_chunks
from .communicator import Communicator
from .ops import ReduceOp, finish_avg, reduce_into

WIRE_DTYPES = (torch.bfloat16, torch.float16)
WIRE_SLICE_BYTES = 1 << 20      # wire bytes a slice, where the transport slices nothing (gloo)
_FP32_UNIT_ROUNDOFF = 2.0 ** -24


def check(tensor: torch.Tensor, wire: torch.dtype) -> None:
    """Refuse a wire dtype other than bf16/fp16, or a tensor that is not float32."""
    if wire not in WIRE_DTYPES:
        raise ValueError(f"wire_dtype={wire} is not supported: use torch.bfloat16 or torch.float16 "
                         "(or wire_dtype=None for the tensor's own dtype)")
    if tensor.dtype != torch.float32:
        raise TypeError(f"wire_dtype={wire} compresses float32 tensors only, got {tensor.dtype}; "
                        "pass wire_dtype=None (a bf16/fp16 tensor already travels in its own "
                        "dtype: algorithm='fp32acc' sums it in float32)")


def verb(wire: torch.dtype) -> str:
    """The call's name in stamps, fingerprints and the flight recorder: a rank compressing and
    one not are different collectives (their messages differ in size)."""
    return "all_reduce_wire_" + str(wire).replace("torch.", "")


def error_bound(wire: torch.dtype, n: int) -> float:
    """gamma with |result - exact| <= gamma * sum_i |x_i| elementwise (SUM; AVG: both sides / n)."""
    u = torch.finfo(wire).eps / 2           # eps is the spacing at 1: twice the unit roundoff
    return (1 + u) ** n * (1 + _FP32_UNIT_ROUNDOFF) ** n - 1


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp, wire: torch.dtype) -> None:
    """All-reduce flat float32 ``buf`` in place with ``wire`` on the wire (see the module doc):
    pipelined where the float32 ring is (gloo, MPI, threads), step by step where it is not
    (shm, whose steps take every slice at once: the pipeline ran 2x slower there at 4 MiB;
    NCCL, where a receive cannot be posted ahead of its partner)."""
    n = comm.size
    if n == 1:                                  # one rounding, as every hop count has
        sent = comm.scratch(wire, buf.numel(), buf.device)
        sent.copy_(buf)
        buf.copy_(sent)
        return
    bounds = chunk_bounds(buf.numel(), n)
    biggest = max(b - a for a, b in bounds)
    slices = _slice_count(comm, biggest, torch.finfo(wire).bits // 8)
    if ring._fused(comm):                   # the float32 ring's own test, so both agree
        sent = comm.scratch(wire, buf.numel(), buf.device)
        _reduce_scatter(comm, buf, sent, bounds, op, slices)
        a, b = bounds[comm.rank]
        finish_avg(buf[a:b], op, n)
        _all_gather(comm, buf, sent, bounds, slices)
        return
    cuts = {b - a: pipeline.pieces(b - a, 1, slices) for a, b in bounds}   # 2 lengths at most
    _WireRing(comm, buf, bounds, cuts, op, range(2 * n - 2), wire).go()


def _slice_count(comm: Communicator, chunk: int, itemsize: int) -> int:
    """The ring's slices (the transport's or RINGFLOW_SLICE_BYTES), or WIRE_SLICE_BYTES where
    those say whole chunks: here each slice also costs passes over memory (round, widen, add),
    which slices overlap with the transfer of the next."""
    count = ring.slice_count(comm, chunk, itemsize)
    if count == 1 and settings.get("RINGFLOW_SLICE_BYTES") is None:
        count = max(1, -(-chunk * itemsize // WIRE_SLICE_BYTES))
    return count


# ---- step by step (shm, NCCL) ---------------------------------------------------------------
def _all_gather(comm: Communicator, buf: torch.Tensor, sent: torch.Tensor,
                bounds: list[tuple[int, int]], nslices: int) -> None:
    """Ring all-gather: the owner rounds its float32 chunk of ``buf`` into ``sent`` (the last
    rounding) slice by slice as it posts them; every chunk's slices are widened into ``buf`` as
    they land, the owner's own while its first sends are in flight (it keeps the bytes it sent)."""
    n, r = comm.size, comm.rank
    right, left = (r + 1) % n, (r - 1) % n
    a, b = bounds[r]
    for step in range(n - 1):
        send_c, recv_c = all_gather_chunks(r, n, step)
        sends, recvs = _slices(bounds[send_c], nslices), _slices(bounds[recv_c], nslices)
        works = []
        for (sa, sb), (ra, rb) in zip(sends, recvs):
            if step == 0:
                sent[sa:sb].copy_(buf[sa:sb])
            works.append(comm.sendrecv(sent[sa:sb], right, sent[ra:rb], left))
        if step == 0:
            buf[a:b].copy_(sent[a:b])
        for (_, recv_work), (ra, rb) in zip(works, recvs):
            comm.wait(recv_work, peer=left, step=n - 1 + step)
            buf[ra:rb].copy_(sent[ra:rb])
        for send_work, _ in works:
            comm.wait(send_work, peer=right, step=n - 1 + step)


def _slices(bounds: tuple[int, int], nslices: int) -> list[tuple[int, int]]:
    start, stop = bounds
    return [(start + a, start + b) for a, b in chunk_bounds(stop - start, nslices)]


def _reduce_scatter(comm: Communicator, buf: torch.Tensor, sent: torch.Tensor,
                    bounds: list[tuple[int, int]], op: ReduceOp, nslices: int) -> None:
    """After n-1 steps chunk ``comm.rank`` of ``buf`` holds the float32 reduction over ranks
    (SUM for AVG); what arrived of other chunks is left in ``sent``."""
    n, r = comm.size, comm.rank
    for step in range(n - 1):
        send_c, recv_c = reduce_scatter_chunks(r, n, step)
        (sa, sb), (ra, rb) = bounds[send_c], bounds[recv_c]
        _hop(comm, buf[sa:sb], sent[sa:sb], buf[ra:rb], sent[ra:rb], nslices, op, step)


def _hop(comm: Communicator, partial: torch.Tensor, out: torch.Tensor, acc: torch.Tensor,
         landing: torch.Tensor, nslices: int, op: ReduceOp, step: int) -> None:
    """Send ``partial`` rounded into ``out`` to the right, slice by slice as each is rounded,
    while acc = acc (op) widened arrivals from the left land in ``landing`` (the wire dtype)."""
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    sends, recvs = chunk_bounds(partial.numel(), nslices), chunk_bounds(acc.numel(), nslices)
    # widened into float32 first: an add of mixed dtypes in place ran 3x slower than both passes
    wide = comm.scratch(torch.float32, recvs[0][1], acc.device)
    works = []
    for (sa, sb), (ra, rb) in zip(sends, recvs):
        out[sa:sb].copy_(partial[sa:sb])                 # this hop's one rounding
        works.append(comm.sendrecv(out[sa:sb], right, landing[ra:rb], left))
    for (send_work, recv_work), (ra, rb) in zip(works, recvs):
        comm.wait(recv_work, peer=left, step=step)
        w = wide[: rb - ra]
        w.copy_(landing[ra:rb])                          # exact
        reduce_into(acc[ra:rb], w, op)                   # added in float32
    for send_work, _ in works:
        comm.wait(send_work, peer=right, step=step)


# ---- pipelined (gloo, MPI, threads) -----------------------------------------------------------
class _WireRing(pipeline._Pipeline):
    """pipeline.py's schedule (a slice received at step t goes on at step t+1 at once) with
    wire-dtype bytes in ``sent`` (numel, wire dtype): each slice is rounded into it just before
    its send, and every arrival lands in it. Reduce-scatter arrivals are widened (into the
    float32 landing row 0: exact) and added; all-gather arrivals are widened into ``buf`` and
    forwarded from where they landed.

    Every receive is posted at the start: over gloo a message leaves only once its receive is
    posted on the far side, and a late "ready" queues behind the peer's bulk data on a busy
    link (2 emulated hosts at 2 Gbit/s: bf16 1.67x gloo fp32 with 4 receives ahead). That is
    safe because nothing lands on bytes still going out: a reduce-scatter slice lands before
    this rank rounds and sends it on, and what arrives for the all-gather was reduced,
    downstream, from this rank's own send of that slice (the ring's order)."""

    def __init__(self, comm, buf, bounds, cuts, op, steps, wire):
        super().__init__(comm, buf, bounds, cuts, op, steps, 1)
        self.window = len(self.order)
        self.sent = comm.scratch(wire, buf.numel(), buf.device)

    def post_recv(self, g: int) -> None:
        t, j = self.order[g]
        self.recvs[g] = self.comm.irecv(self.sent[self.span(t, j, False)], self.left)

    def post_send(self, t: int, j: int) -> None:
        at = self.span(t, j, True)
        if t < self.comm.size - 1:                # this hop's one rounding of the partial
            self.sent[at].copy_(self.buf[at])
        self.sends.append(self.comm.isend(self.sent[at], self.right))

    def arrived(self, g: int, t: int, j: int) -> None:
        """Reduce-scatter: widen and add (float32); at its last step the piece is this rank's
        own total: AVG divides it, and it is rounded once (the all-gather's bytes) and widened
        back, so the owner ends with the bytes every other rank receives. All-gather: widen."""
        n, at = self.comm.size, self.span(t, j, False)
        dst = self.buf[at]
        if t >= n - 1:
            dst.copy_(self.sent[at])
            return
        wide = self.landing[0, : dst.numel()]
        wide.copy_(self.sent[at])                                     # exact
        reduce_into(dst, wide, self.op)                               # added in float32
        if t == n - 2:
            finish_avg(dst, self.op, n)
            self.sent[at].copy_(dst)
            dst.copy_(self.sent[at])
