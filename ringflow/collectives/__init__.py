"""The collective verbs, shaped like torch.distributed's.

    from ringflow import collectives as rc
    rc.all_reduce(t, op=rc.ReduceOp.SUM)                 # in place, every rank gets the sum
    work = rc.all_reduce(t, async_op=True); work.wait()
    rc.reduce_scatter_tensor(out, inp); rc.all_gather_into_tensor(out, inp)

``group`` is a :class:`Communicator` (None: the world from ``ringflow.init()``).
Inputs are checked here, at the boundary, so a bad call fails on the calling
rank with a message instead of hanging its peers.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import exchange, select, staged, wire
from .communicator import Communicator
from .engine import CollectiveWork
from .errors import CollectiveError, CollectiveMismatch, CollectiveTimeout
from .group import resolve as _group
from .ops import ReduceOp, as_reduce_op, check_dtype

__all__ = ["all_reduce", "reduce_scatter_tensor", "all_gather_into_tensor", "broadcast", "reduce",
           "all_to_all_single", "barrier", "ReduceOp", "Communicator", "CollectiveWork",
           "CollectiveError", "CollectiveTimeout", "CollectiveMismatch"]


def _check(comm: Communicator, tensor: torch.Tensor, what: str,
           op: ReduceOp | None = None) -> torch.Tensor:
    """Refuse a bad tensor here, on the calling rank; return the tensor to move bytes through.

    That is ``tensor.detach()``: the same storage without autograd, so a tensor with
    ``requires_grad=True`` is reduced in place as torch.distributed does (a collective works on
    the data; the ring's in-place adds would otherwise be refused on a leaf by autograd)."""
    return _check_tensor(comm, _require_tensor(tensor, what), what, op)


def _require_tensor(tensor, what: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    return tensor


def _check_tensor(comm: Communicator, tensor: torch.Tensor, what: str,
                  op: ReduceOp | None = None) -> torch.Tensor:
    """_check for what is known to be a Tensor."""
    if not tensor.is_contiguous():
        if tensor.layout != torch.strided:          # checked only here: free on the way through
            raise TypeError(f"{what} is a {tensor.layout} tensor; ringflow's collectives move "
                            "dense (strided) tensors only: pass tensor.to_dense()")
        raise ValueError(f"{what} must be contiguous (shape {tuple(tensor.shape)}, strides "
                         f"{tuple(tensor.stride())}); pass tensor.contiguous() and copy back")
    if tensor.is_meta:
        raise ValueError(f"{what} is on the meta device and holds no data; materialise it first "
                         "(e.g. module.to_empty(device='cpu') and load or initialise the weights)")
    check_dtype(tensor, op)
    comm.transport.check_tensor(tensor)
    return tensor.detach() if tensor.requires_grad else tensor   # detach costs a small call's time


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as 1-D (itself when it is: a view costs more than a small MPI call)."""
    return tensor if tensor.ndim == 1 else tensor.view(-1)


def _check_pair(out: torch.Tensor, inp: torch.Tensor, out_numel: int, verb: str) -> None:
    if out.dtype != inp.dtype or out.device != inp.device:
        raise ValueError(f"{verb}: output ({out.dtype}, {out.device}) and input ({inp.dtype}, "
                         f"{inp.device}) must share dtype and device")
    if out.numel() != out_numel:
        raise ValueError(f"{verb}: output has {out.numel()} elements, expected {out_numel} "
                         f"(input numel {inp.numel()} and world size decide it)")


def _check_root(comm: Communicator, root: int, what: str) -> None:
    if not isinstance(root, int) or not 0 <= root < comm.size:
        raise ValueError(f"{what}={root!r} is out of range for a group of {comm.size} ranks "
                         f"(expected 0..{comm.size - 1})")


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False, algorithm="auto",
               wire_dtype=None):
    """Reduce ``tensor`` across ranks in place; every rank gets the same bytes.

    ``wire_dtype=torch.bfloat16`` (or float16) on a float32 tensor: bf16 bytes on the wire, the
    sum taken in float32, one rounding per hop (error bound in collectives/wire.py)."""
    comm, op = _group(group), as_reduce_op(op)
    if wire_dtype is not None:
        return _all_reduce_wire(comm, _check(comm, tensor, "tensor", op), op, async_op, algorithm,
                                wire_dtype)
    return all_reduce_resolved(comm, _require_tensor(tensor, "tensor"), op, async_op, algorithm)


def all_reduce_resolved(comm: Communicator, tensor: torch.Tensor, op: ReduceOp,
                        async_op: bool = False, algorithm: str = "auto"):
    """all_reduce for a caller that already holds the Communicator and a ringflow ReduceOp and
    knows ``tensor`` is a Tensor (the backend: torch's wrapper checked that, its op table made
    the op); the tensor's own checks (layout, dtype, device) still run here."""
    tensor, name, fn = _all_reduce_choice(comm, tensor, op, algorithm)
    flat = _flat(tensor)
    return comm.run("all_reduce", lambda: fn(comm, flat, op), tensor=tensor, op=op,
                    async_op=async_op, algorithm=name)


def all_reduce_plan(comm: Communicator, tensor: torch.Tensor, op: ReduceOp,
                    algorithm: str = "auto") -> tuple[str, Callable]:
    """(name, fn(comm, flat, op)) of the algorithm all_reduce runs on ``tensor``, after its checks
    (which raise the errors all_reduce raises). For a caller that remembers the answer per kind
    of tensor (the backend's plans.py): it depends on the numel, dtype, op, device and layout."""
    return _all_reduce_choice(comm, tensor, op, algorithm)[1:]


def _all_reduce_choice(comm: Communicator, tensor: torch.Tensor, op: ReduceOp, algorithm: str):
    """(the checked tensor, algorithm name, its function): all_reduce's checks and choice."""
    tensor = _check_tensor(comm, tensor, "tensor", op)
    name, fn = select.choose(comm, "all_reduce", tensor.numel() * tensor.element_size(), algorithm,
                             dtype=tensor.dtype)
    return tensor, name, fn


def _all_reduce_wire(comm, tensor, op, async_op, algorithm, wire_dtype):
    wire.check(tensor, wire_dtype)
    _, fn = select.choose_wire("all_reduce", algorithm, wire_dtype)
    flat = _flat(tensor)
    return comm.run(wire.verb(wire_dtype), lambda: fn(comm, flat, op), tensor=tensor, op=op,
                    async_op=async_op)


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False,
                          algorithm="auto"):
    """``output`` (m elements) = reduction over ranks of block ``rank`` of ``input`` (m*size)."""
    comm, op = _group(group), as_reduce_op(op)
    input = _check(comm, input, "input", op)
    output = _check(comm, output, "output", op)
    _check_pair(output, input, input.numel() // comm.size, "reduce_scatter_tensor")
    if input.numel() % comm.size:
        raise ValueError(f"reduce_scatter_tensor: input numel {input.numel()} is not divisible by "
                         f"the group size {comm.size}")
    name, fn = select.choose(comm, "reduce_scatter", input.numel() * input.element_size(),
                             algorithm, dtype=input.dtype)
    out, inp = _flat(output), _flat(input)
    return comm.run("reduce_scatter_tensor", lambda: fn(comm, out, inp, op), tensor=input, op=op,
                    async_op=async_op, algorithm=name)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False,
                           algorithm="auto"):
    """``output_tensor`` = every rank's ``input_tensor`` concatenated in rank order."""
    comm = _group(group)
    input_tensor = _check(comm, input_tensor, "input_tensor")
    output_tensor = _check(comm, output_tensor, "output_tensor")
    _check_pair(output_tensor, input_tensor, input_tensor.numel() * comm.size,
                "all_gather_into_tensor")
    name, fn = select.choose(comm, "all_gather",
                             output_tensor.numel() * output_tensor.element_size(), algorithm)
    out, inp = _flat(output_tensor), _flat(input_tensor)
    return comm.run("all_gather_into_tensor", lambda: fn(comm, out, inp), tensor=input_tensor,
                    async_op=async_op, algorithm=name)


def broadcast(tensor, src=0, group=None, async_op=False, algorithm="auto"):
    """Copy ``tensor`` of rank ``src`` into ``tensor`` on every rank."""
    comm = _group(group)
    tensor = _check(comm, tensor, "tensor")
    _check_root(comm, src, "src")
    name, fn = select.choose(comm, "broadcast", tensor.numel() * tensor.element_size(), algorithm)
    flat = _flat(tensor)
    return comm.run("broadcast", lambda: fn(comm, flat, src), tensor=tensor, root=src,
                    async_op=async_op, algorithm=name)


def reduce(tensor, dst=0, op=ReduceOp.SUM, group=None, async_op=False, algorithm="auto"):
    """Reduce ``tensor`` into rank ``dst``; other ranks' tensors are left unchanged."""
    comm, op = _group(group), as_reduce_op(op)
    tensor = _check(comm, tensor, "tensor", op)
    _check_root(comm, dst, "dst")
    name, fn = select.choose(comm, "reduce", tensor.numel() * tensor.element_size(), algorithm,
                             dtype=tensor.dtype)
    flat = _flat(tensor)
    return comm.run("reduce", lambda: fn(comm, flat, op, dst), tensor=tensor, op=op, root=dst,
                    async_op=async_op, algorithm=name)


def _split_bounds(tensor: torch.Tensor, splits, size: int, what: str) -> list[tuple[int, int]]:
    """Flat bounds of blocks along dim 0 (equal blocks when ``splits`` is None)."""
    rows = tensor.shape[0] if tensor.dim() else tensor.numel()
    if splits is None:
        if rows % size:
            raise ValueError(f"all_to_all_single: {what} has {rows} rows along dim 0, not divisible "
                             f"by the group size {size}; pass {what}_split_sizes")
        splits = [rows // size] * size
    splits = list(splits)
    if len(splits) != size or sum(splits) != rows or min(splits, default=0) < 0:
        raise ValueError(f"all_to_all_single: {what}_split_sizes {splits} must be {size} "
                         f"non-negative sizes summing to {rows}")
    row = tensor.numel() // rows if rows else 0
    bounds, start = [], 0
    for s in splits:
        bounds.append((start * row, (start + s) * row))
        start += s
    return bounds


def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None, group=None,
                      async_op=False):
    """Block j (along dim 0) of ``input`` goes to rank j; block i of ``output`` comes from rank i."""
    comm = _group(group)
    input = _check(comm, input, "input")
    output = _check(comm, output, "output")
    if output.dtype != input.dtype:
        raise ValueError(f"all_to_all_single: output dtype {output.dtype} != input dtype {input.dtype}")
    in_b = _split_bounds(input, input_split_sizes, comm.size, "input")
    out_b = _split_bounds(output, output_split_sizes, comm.size, "output")
    out, inp = _flat(output), _flat(input)
    return comm.run("all_to_all_single", lambda: exchange.all_to_all(comm, out, inp, out_b, in_b),
                    tensor=input, async_op=async_op)


def barrier(group=None, async_op=False):
    """Return once every rank of the group has entered the barrier (through shared memory
    where every rank is on one node, else a dissemination barrier of messages)."""
    comm = _group(group)
    fn = staged.barrier if staged.supports(comm) else exchange.barrier
    return comm.run("barrier", lambda: fn(comm), async_op=async_op)
