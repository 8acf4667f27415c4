"""Gradient compression: buckets travel in bf16/fp16 while the sum is taken in fp32.

The bucket (fp32) is rounded once to the wire dtype, all-reduced with the collectives'
``algorithm="fp32acc"`` (each rank adds the n half-precision copies of its chunk in fp32, in
rank order, and rounds once; a ring all-gather copies the bytes), and widened back. Every rank
widens the same bytes, so all end bitwise identical.

    half = HalfAllReduce(comm, numel, torch.bfloat16)
    work = half.launch(flat_fp32)      # async on the communication thread; work.wait()
"""
from __future__ import annotations

import torch

from .. import collectives as rc

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
        self.comm, self.numel = comm, numel
        self.half = torch.empty(numel, dtype=wire, device=device)

    def _run(self, buf: torch.Tensor) -> None:
        self.half.copy_(buf)                                # the one rounding on the way out
        rc.all_reduce(self.half, op=rc.ReduceOp.AVG, group=self.comm, algorithm="fp32acc")
        buf.copy_(self.half)

    def launch(self, buf: torch.Tensor):
        """Queue the average of ``buf`` (fp32, ``numel`` elements) on the communication thread."""
        if buf.numel() != self.numel or buf.dtype != torch.float32:
            raise ValueError(f"HalfAllReduce was built for {self.numel} fp32 elements, got "
                             f"{buf.numel()} x {buf.dtype}")
        # The nested all_reduce runs inline on the communication thread, in issue order.
        return self.comm.run("all_reduce_compressed", lambda: self._run(buf), tensor=buf,
                             op=rc.ReduceOp.AVG, async_op=True)
