"""Reduction operators and the dtype rules of every collective.

``reduce_into(dst, src, op)`` folds ``src`` into ``dst`` in place; that single
function is the only arithmetic a ring does, so all ops and dtypes go through it.
"""
from __future__ import annotations

import enum

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16,
                    torch.int8, torch.int32, torch.int64, torch.uint8)
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class ReduceOp(enum.Enum):
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"
    PRODUCT = "product"
    BAND = "band"           # bitwise and / or / xor: integer dtypes only
    BOR = "bor"
    BXOR = "bxor"


# The elementwise function of each op other than SUM/AVG (dst = fn(first, second)); the bitwise
# ones are exact, so every algorithm and every order gives the same bytes.
_BINARY = {ReduceOp.MAX: torch.maximum, ReduceOp.MIN: torch.minimum, ReduceOp.PRODUCT: torch.mul,
           ReduceOp.BAND: torch.bitwise_and, ReduceOp.BOR: torch.bitwise_or,
           ReduceOp.BXOR: torch.bitwise_xor}
BITWISE = (ReduceOp.BAND, ReduceOp.BOR, ReduceOp.BXOR)
INTEGER_DTYPES = (torch.int8, torch.int32, torch.int64, torch.uint8)


def as_reduce_op(op) -> ReduceOp:
    """Accept a ringflow ReduceOp, a torch.distributed.ReduceOp or its name."""
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str):
        try:
            return ReduceOp[op.upper()]
        except KeyError:
            raise ValueError(f"unknown reduce op {op!r}; expected one of "
                             f"{[o.name.lower() for o in ReduceOp]}") from None
    name = getattr(op, "name", None) or str(op).rsplit(".", 1)[-1]  # torch.distributed.ReduceOp
    name = {"PREMUL_SUM": "unsupported"}.get(name, name)
    try:
        return ReduceOp[name.upper()]
    except KeyError:
        raise ValueError(f"reduce op {op!r} is not supported; use one of "
                         f"{[o.name for o in ReduceOp]}") from None


def check_dtype(tensor: torch.Tensor, op: ReduceOp | None = None) -> None:
    """Refuse dtypes and op/dtype pairs the collectives do not implement."""
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype {tensor.dtype} is not supported; supported: "
                        f"{[str(d).replace('torch.', '') for d in SUPPORTED_DTYPES]}")
    if op is ReduceOp.AVG and tensor.dtype not in FLOAT_DTYPES:
        raise TypeError(f"ReduceOp.AVG needs a floating dtype (got {tensor.dtype}): an integer "
                        "average would silently truncate; use SUM and divide yourself")
    if op in BITWISE and tensor.dtype not in INTEGER_DTYPES:
        raise TypeError(f"ReduceOp.{op.name} needs an integer dtype (got {tensor.dtype}); "
                        f"supported: {[str(d).replace('torch.', '') for d in INTEGER_DTYPES]}")


def reduce_into(dst: torch.Tensor, src: torch.Tensor, op: ReduceOp) -> None:
    """dst = dst (op) src, elementwise, in place. AVG reduces as SUM (divided at the end)."""
    if op is ReduceOp.SUM or op is ReduceOp.AVG:
        dst.add_(src)
    else:
        _BINARY[op](dst, src, out=dst)


def reduce_out(dst: torch.Tensor, first: torch.Tensor, second: torch.Tensor, op: ReduceOp) -> None:
    """dst = first (op) second, elementwise; ``dst`` may alias either operand.

    Algorithms that combine two ranks' blocks pass the lower rank's block first,
    so both partners of an exchange compute the same bytes.
    """
    if op is ReduceOp.SUM or op is ReduceOp.AVG:
        torch.add(first, second, out=dst)
    else:
        _BINARY[op](first, second, out=dst)


def finish_avg(t: torch.Tensor, op: ReduceOp, size: int) -> None:
    """Turn a SUM into the AVG the caller asked for (no-op for other ops)."""
    if op is ReduceOp.AVG and size > 1 and t.numel():
        t.div_(size)
