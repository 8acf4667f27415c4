"""The list forms of torch's collectives, built from ringflow's flat verbs and its point-to-point.

torch hands a process group lists of tensors (one per rank) for all_gather, reduce_scatter,
all_to_all, gather and scatter; ringflow's verbs take flat buffers. These jobs run on ringflow's
engine thread inside one recorded collective: pack, run the flat verb, unpack.

    job = all_gather_list(comm, outputs, inp)      # comm.run("allgather", job, async_op=True)

Sparse COO all_reduce is here too (gloo has it): every rank's indices and values gathered, and
their sum coalesced.
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import collectives as rc
from ..collectives.communicator import Communicator
from ..collectives.ops import SUPPORTED_DTYPES, ReduceOp


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself if ringflow moves its dtype, else its bytes (bool, complex: nothing to
    reduce, so a copy of the bytes is the result)."""
    if t.dtype in SUPPORTED_DTYPES:
        return t
    if not t.is_contiguous():
        raise ValueError(f"tensor of shape {tuple(t.shape)} must be contiguous; pass "
                         "tensor.contiguous()")
    return t.reshape(-1).view(torch.uint8)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return as_bytes(t).reshape(-1)


def check_list(tensors, n: int, verb: str, what: str) -> None:
    if len(tensors) != n:
        raise ValueError(f"{verb}: {what} has {len(tensors)} tensors, expected one per rank "
                         f"({n})")


def all_gather_list(comm: Communicator, outputs: list[torch.Tensor],
                    inp: torch.Tensor) -> Callable[[], None]:
    """outputs[i] = rank i's ``inp``."""
    flat = _flat(inp)
    buf = torch.empty(flat.numel() * comm.size, dtype=flat.dtype, device=flat.device)

    def job() -> None:
        rc.all_gather_into_tensor(buf, flat, group=comm)
        for i, out in enumerate(outputs):
            _flat(out).copy_(buf[i * flat.numel():(i + 1) * flat.numel()])
    return job


def reduce_scatter_list(comm: Communicator, out: torch.Tensor, inputs: list[torch.Tensor],
                        op) -> Callable[[], None]:
    """``out`` = the reduction over ranks of their inputs[rank]."""
    def job() -> None:
        packed = torch.cat([t.reshape(-1) for t in inputs])
        rc.reduce_scatter_tensor(out, packed, op=op, group=comm)
    return job


def all_to_all_list(comm: Communicator, outputs: list[torch.Tensor],
                    inputs: list[torch.Tensor]) -> Callable[[], None]:
    """outputs[i] = rank i's inputs[rank]; the blocks may differ in size."""
    ins = [_flat(t) for t in inputs]
    outs = [_flat(t) for t in outputs]

    def job() -> None:
        packed = torch.cat(ins)
        buf = torch.empty(sum(o.numel() for o in outs), dtype=packed.dtype, device=packed.device)
        rc.all_to_all_single(buf, packed, [o.numel() for o in outs], [i.numel() for i in ins],
                             group=comm)
        start = 0
        for o in outs:
            o.copy_(buf[start:start + o.numel()])
            start += o.numel()
    return job


def gather_list(comm: Communicator, outputs: list[torch.Tensor], inp: torch.Tensor,
                root: int) -> Callable[[], None]:
    """Rank ``root`` gets outputs[i] = rank i's ``inp``; each other rank sends to it."""
    flat = _flat(inp)

    def job() -> None:
        if comm.rank != root:
            comm.wait(comm.isend(flat, root), peer=root)
            return
        works = [(comm.irecv(_flat(o), i), i) for i, o in enumerate(outputs) if i != root]
        _flat(outputs[root]).copy_(flat)
        for w, i in works:
            comm.wait(w, peer=i)
    return job


def scatter_list(comm: Communicator, out: torch.Tensor, inputs: list[torch.Tensor],
                 root: int) -> Callable[[], None]:
    """Rank i gets ``out`` = rank ``root``'s inputs[i]."""
    flat = _flat(out)

    def job() -> None:
        if comm.rank != root:
            comm.wait(comm.irecv(flat, root), peer=root)
            return
        works = [(comm.isend(_flat(t), i), i) for i, t in enumerate(inputs) if i != root]
        flat.copy_(_flat(inputs[root]))
        for w, i in works:
            comm.wait(w, peer=i)
    return job


def sparse_all_reduce(comm: Communicator, t: torch.Tensor, op) -> Callable[[], None]:
    """``t`` (sparse COO) becomes the sum over ranks: every rank's (indices, values), padded to
    the largest count and gathered, concatenated in rank order and coalesced, the same on every
    rank (coalescing sums duplicates in a fixed order)."""
    if op is not ReduceOp.SUM:
        raise ValueError(f"all_reduce of a sparse tensor sums only (as gloo's does), got {op.name}")

    def job() -> None:
        c = t.coalesce()
        idx, val = c.indices(), c.values()                  # (sparse dims, nnz), (nnz, *dense)
        counts = torch.empty(comm.size, dtype=torch.int64)
        rc.all_gather_into_tensor(counts, torch.tensor([idx.shape[1]]), group=comm)
        top, n = int(counts.max()), idx.shape[1]
        pad_i = idx.new_zeros(idx.shape[0], top)
        pad_i[:, :n] = idx
        pad_v = val.new_zeros(top, *val.shape[1:])
        pad_v[:n] = val
        all_i = idx.new_empty(comm.size, *pad_i.shape)
        all_v = val.new_empty(comm.size, *pad_v.shape)
        rc.all_gather_into_tensor(all_i, pad_i, group=comm)
        rc.all_gather_into_tensor(all_v, pad_v, group=comm)
        ks = counts.tolist()
        total = torch.sparse_coo_tensor(torch.cat([all_i[r][:, :k] for r, k in enumerate(ks)], 1),
                                        torch.cat([all_v[r][:k] for r, k in enumerate(ks)]),
                                        t.shape)
        t.copy_(total.coalesce())
    return job
