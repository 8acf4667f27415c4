"""All-reduce whose messages travel in half precision while the sum is taken in fp32.

A ring would add in the wire dtype at every hop (n-1 roundings). Here each rank instead
receives every rank's copy of its own chunk (an all-to-all, the same bytes per rank as a ring
reduce-scatter), adds the n copies in fp32 in rank order, rounds once, and all-gathers the
half-precision result. Every rank converts the same half bytes back, so all end identical.

    reducer = HalfAllReduce(comm, numel, torch.bfloat16)
    work = reducer.launch(flat_fp32)      # async; work.wait()
"""
from __future__ import annotations

import torch

from .. import collectives as rc
from .flat import padded

WIRE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def wire_dtype(compress: str | None) -> torch.dtype | None:
    """The dtype gradients travel in for ``compress`` (None: no compression)."""
    if compress is None:
        return None
    if compress not in WIRE_DTYPES:
        raise ValueError(f"compress={compress!r} is not supported; use None, 'bf16' or 'fp16'")
    return WIRE_DTYPES[compress]


class HalfAllReduce:
    """Average a flat fp32 buffer over ranks with ``wire`` on the wire and fp32 accumulation."""

    def __init__(self, comm: rc.Communicator, numel: int, wire: torch.dtype, device=None):
        self.comm, self.numel, self.wire = comm, numel, wire
        n = comm.size
        self.chunk = padded(numel, n) // n                  # m: each rank owns m elements
        self.send = torch.zeros(n * self.chunk, dtype=wire, device=device)   # (n*m,)
        self.recv = torch.empty(n * self.chunk, dtype=wire, device=device)   # block i from rank i
        self.mine = torch.empty(self.chunk, dtype=wire, device=device)

    def _run(self, buf: torch.Tensor) -> None:
        n, m = self.comm.size, self.chunk
        self.send[:self.numel].copy_(buf)                   # round to half once, on the way out
        rc.all_to_all_single(self.recv, self.send, group=self.comm)
        acc = self.recv.view(n, m).to(torch.float32).sum(0)   # fp32 sum of the n copies
        self.mine.copy_(acc.div_(n))
        rc.all_gather_into_tensor(self.send, self.mine, group=self.comm)
        buf.copy_(self.send[:self.numel])

    def launch(self, buf: torch.Tensor):
        """Queue the average of ``buf`` (fp32, ``numel`` elements) on the communication thread."""
        if buf.numel() != self.numel or buf.dtype != torch.float32:
            raise ValueError(f"HalfAllReduce was built for {self.numel} fp32 elements, got "
                             f"{buf.numel()} x {buf.dtype}")
        # The nested verbs run inline on the communication thread, in this order on every rank.
        return self.comm.run("all_reduce_compressed", lambda: self._run(buf), tensor=buf,
                             op=rc.ReduceOp.AVG, async_op=True)
