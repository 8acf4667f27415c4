"""The ring pipelined across its steps, in C channels: the ring as it should run over a network.

The plain ring (ring.py) finishes a step before it starts the next. Here every chunk is cut
into ``channels`` ranges, each range into ``slices`` pieces, and a piece moves on its own:
the piece received (and reduced) at step t is sent on at step t+1 as soon as it is ready,
while later pieces of step t are still arriving. Receives are posted ``window`` messages
ahead into a ring of landing slots. Channel c sends on its own tag (Communicator lane c), so
the C streams of a peer pair are matched independently, as NCCL's channels are.

    step:     0 (reduce-scatter)        1               ...   2n-3 (all-gather)
    piece 0:  send --recv+reduce-->  send --recv-->           ...
    piece 1:     send --recv+reduce-->  send --recv-->        ...

Every piece is reduced with the plain ring's operands in the plain ring's order (chunk c
summed starting at rank c+1, ``reduce_out(dst, mine, arrived)``), so the result is bitwise
the plain ring's whatever C and the slice size, and the all-gather copies bytes, so ranks end
bitwise identical. Nothing is allocated in the loop: the landing slots are the
communicator's scratch. Pieces are taken in one fixed order on every rank, so each channel's
messages are posted and matched in the same order on both ends.

    pipeline.all_reduce(comm, buf, ReduceOp.SUM, channels=2, slice_bytes=256 << 10)
"""
from __future__ import annotations

import torch

from .. import settings
from .chunking import all_gather_chunks, chunk_bounds, reduce_scatter_chunks
from .communicator import Communicator
from .ops import ReduceOp, finish_avg, reduce_out

WINDOW_PER_CHANNEL = 4      # receives posted ahead per channel (landing slots)
# A channel is opened per this many bytes of a chunk, up to the transport's ring_channels:
# over gloo on loopback 2-4 channels won at 16-64 MiB and lost at 1-4 MiB, where each extra
# message costs more than the overlap gains (benchmarks/collectives/pipeline_sweep.py).
CHANNEL_BYTES = 4 << 20


def pieces(length: int, channels: int, slices: int) -> list[tuple[int, int]]:
    """A chunk of ``length`` cut into channels x slices pieces, in the order they move:
    slice 0 of every channel, then slice 1 of every channel, ... (offsets in the chunk)."""
    ranges = chunk_bounds(length, channels)
    cut = [chunk_bounds(b - a, slices) for a, b in ranges]
    return [(ranges[c][0] + cut[c][s][0], ranges[c][0] + cut[c][s][1])
            for s in range(slices) for c in range(channels)]


def configured_slice_bytes(comm: Communicator) -> int:
    """Pipeline slice size: $RINGFLOW_SLICE_BYTES (0: whole chunks), else the transport's own."""
    size = settings.get("RINGFLOW_SLICE_BYTES")
    return size if size is not None else (comm.slice_bytes or 0)


def slice_count(chunk_bytes: int, channels: int, slice_bytes: int) -> int:
    """Slices per channel so that a piece is at most ``slice_bytes`` (0: one slice)."""
    if not slice_bytes or chunk_bytes == 0:
        return 1
    per_channel = -(-chunk_bytes // channels)
    return max(1, -(-per_channel // slice_bytes))


def all_reduce(comm: Communicator, buf: torch.Tensor, op: ReduceOp, channels: int | None = None,
               slice_bytes: int | None = None) -> None:
    """Pipelined ring all-reduce of flat ``buf`` in place. Defaults: the transport's slice size
    (RINGFLOW_SLICE_BYTES overrides it) and one channel per CHANNEL_BYTES of a chunk (the
    transport's ``channel_bytes`` where it has one), up to the transport's ``ring_channels``."""
    run(comm, buf, chunk_bounds(buf.numel(), comm.size), op, range(2 * comm.size - 2),
        channels, slice_bytes)


def reduce_scatter_(comm: Communicator, buf: torch.Tensor, bounds: list[tuple[int, int]],
                    op: ReduceOp) -> None:
    """ring.reduce_scatter_, pipelined: chunk ``rank`` ends holding the reduction (SUM for AVG)."""
    run(comm, buf, bounds, ReduceOp.SUM if op is ReduceOp.AVG else op, range(comm.size - 1))


def all_gather_(comm: Communicator, buf: torch.Tensor, bounds: list[tuple[int, int]]) -> None:
    """ring.all_gather_, pipelined: chunk ``rank`` of every rank ends everywhere."""
    run(comm, buf, bounds, ReduceOp.SUM, range(comm.size - 1, 2 * comm.size - 2))


def run(comm: Communicator, buf: torch.Tensor, bounds: list[tuple[int, int]], op: ReduceOp,
        steps: range, channels: int | None = None, slice_bytes: int | None = None) -> None:
    """Run ring ``steps`` (0..n-2 reduce-scatter, n-1..2n-3 all-gather) of ``buf`` pipelined.

    AVG divides each of this rank's own pieces once they are fully reduced, before they are
    sent on (the plain ring divides the whole chunk at that point: the same bytes)."""
    n = comm.size
    if n == 1 or not steps:
        return
    biggest = max(b - a for a, b in bounds)
    if channels is None:
        per = comm.channel_bytes or CHANNEL_BYTES
        channels = max(1, min(comm.ring_channels, biggest * buf.element_size() // per))
    slice_bytes = configured_slice_bytes(comm) if slice_bytes is None else slice_bytes
    if channels < 1 or slice_bytes < 0:
        raise ValueError(f"the pipelined ring needs channels >= 1 and slice_bytes >= 0, got "
                         f"channels={channels}, slice_bytes={slice_bytes}")
    slices = slice_count(biggest * buf.element_size(), channels, slice_bytes)
    cuts = {b - a: pieces(b - a, channels, slices) for a, b in bounds}   # 2 lengths at most
    _Pipeline(comm, buf, bounds, cuts, op, steps, channels).go()


class _Pipeline:
    """One pipelined run: its schedule, landing slots and outstanding messages."""

    def __init__(self, comm, buf, bounds, cuts, op, steps, channels):
        self.comm, self.buf, self.bounds, self.cuts, self.op = comm, buf, bounds, cuts, op
        self.steps, self.channels = steps, channels
        n, r = comm.size, comm.rank
        self.right, self.left = (r + 1) % n, (r - 1) % n
        per_step = len(next(iter(cuts.values())))       # channels x slices
        self.order = [(t, j) for t in steps for j in range(per_step)]
        piece = max(b - a for cut in cuts.values() for a, b in cut)
        self.window = min(len(self.order), WINDOW_PER_CHANNEL * channels)
        self.landing = comm.scratch(buf.dtype, self.window * max(piece, 1), buf.device) \
            .view(self.window, max(piece, 1))
        self.recvs: list = [None] * len(self.order)
        self.sends: list = []
        self.tracing = comm.tracer.on

    def span(self, t: int, j: int, sending: bool) -> slice:
        """Elements of piece j of the chunk this rank sends (or receives) at ring step t."""
        a, b = self.bounds[self.chunks(t)[0 if sending else 1]]
        pa, pb = self.cuts[b - a][j]
        return slice(a + pa, a + pb)

    def region(self, t: int, j: int, sending: bool) -> torch.Tensor:
        """Piece j of the chunk this rank sends (or receives) at ring step t."""
        return self.buf[self.span(t, j, sending)]

    def post_recv(self, g: int) -> None:
        t, j = self.order[g]
        into = self.region(t, j, False)
        if t < self.comm.size - 1:                 # reduce-scatter: land, then reduce
            into = self.landing[g % self.window, : into.numel()]
        self.recvs[g] = self.comm.irecv(into, self.left, lane=j % self.channels)

    def post_send(self, t: int, j: int) -> None:
        piece = self.region(t, j, True)
        self.sends.append(self.comm.isend(piece, self.right, lane=j % self.channels))
        if self.tracing:
            self.comm.tracer.instant(f"post slice {j}", {
                "step": t, "send_bytes": piece.numel() * piece.element_size(),
                "to": self.comm.ranks[self.right], "lane": j % self.channels})

    def go(self) -> None:
        comm, per_step = self.comm, len(self.order) // len(self.steps)
        t0 = comm.tracer.now() if self.tracing else 0
        for g in range(self.window):
            self.post_recv(g)
        for t, j in self.order[:per_step]:
            self.post_send(t, j)
        for g, (t, j) in enumerate(self.order):
            comm.wait(self.recvs[g], peer=self.left, step=t)
            self.recvs[g] = None
            self.arrived(g, t, j)
            if g + self.window < len(self.order):
                self.post_recv(g + self.window)    # its slot was freed just now
            if t + 1 <= self.steps[-1]:
                self.post_send(t + 1, j)
            if t0 and j == per_step - 1:           # steps end in order: their spans nest
                a, b = self.bounds[self.chunks(t)[0]]
                trace_step(comm, t, t0, per_step, (b - a) * self.buf.element_size())
                t0 = comm.tracer.now()
        for w in self.sends:
            comm.wait(w, peer=self.right, step=self.steps[0])

    def chunks(self, t: int) -> tuple[int, int]:
        """(chunk sent, chunk received) at ring step t."""
        n, r = self.comm.size, self.comm.rank
        return reduce_scatter_chunks(r, n, t) if t < n - 1 else all_gather_chunks(r, n, t - n + 1)

    def arrived(self, g: int, t: int, j: int) -> None:
        """Reduce a landed reduce-scatter piece (the plain ring's operand order); the last
        reduce-scatter step's piece is this rank's own, final: AVG divides it there."""
        n = self.comm.size
        if t >= n - 1:
            return
        dst = self.region(t, j, False)
        t0 = self.comm.tracer.now() if self.tracing else 0
        reduce_out(dst, dst, self.landing[g % self.window, : dst.numel()], self.op)
        if t == n - 2:
            finish_avg(dst, self.op, n)
        if t0:
            self.comm.tracer.complete(f"reduce slice {j}", t0,
                                      {"bytes": dst.numel() * dst.element_size()})


# ---- the timeline (RINGFLOW_TRACE): called only when comm.tracer.on ------------------------
def trace_step(comm: Communicator, step: int, t0: int, nslices: int, nbytes: int) -> None:
    """Ring step ``step`` (0..2n-3, counted on from the reduce-scatter) ran from ``t0``."""
    n, r = comm.size, comm.rank
    phase, k = ("reduce-scatter", step) if step < n - 1 else ("all-gather", step - n + 1)
    send_c, recv_c = (reduce_scatter_chunks if step < n - 1 else all_gather_chunks)(r, n, k)
    comm.tracer.complete(f"{phase} step {k}", t0, {
        "send_chunk": send_c, "recv_chunk": recv_c, "bytes": nbytes, "slices": nslices,
        "to": comm.ranks[(r + 1) % n], "from": comm.ranks[(r - 1) % n]})
