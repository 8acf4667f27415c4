"""Gradient compression: float32 buckets travel in bf16/fp16 while the sum is taken in float32.

``compress="bf16"`` (or "fp16") makes the reducer all-reduce each float32 bucket with
``rc.all_reduce(bucket, op=AVG, wire_dtype=torch.bfloat16)``: a ring whose messages are the wire
dtype, each hop widening what arrives, adding in float32 and rounding once what it forwards
(collectives/wire.py: the error bound, ~n x 2^-8 of sum|g| for bf16 over n ranks). Every rank
widens the same bytes, so all end bitwise identical. Buckets of other dtypes (bf16, fp64
parameters) travel in their own dtype, uncompressed.

    wire = wire_dtype("bf16")          # torch.bfloat16; None for compress=None
"""
from __future__ import annotations

import torch

WIRE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def wire_dtype(compress: str | None) -> torch.dtype | None:
    """The dtype gradients travel in for ``compress`` (None: no compression)."""
    if compress is None:
        return None
    if compress not in WIRE_DTYPES:
        raise ValueError(f"compress={compress!r} is not supported; use None, 'bf16' or 'fp16'")
    return WIRE_DTYPES[compress]
