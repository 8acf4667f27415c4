"""Make ranks agree: coalesced broadcasts of tensors and of picklable objects.

    broadcast_coalesced(list(model.parameters()), src=0, comm=comm)   # one broadcast per dtype
    cfg = broadcast_object(cfg if comm.rank == 0 else None, src=0, comm=comm)
"""
from __future__ import annotations

import io
from typing import Any, Sequence

import torch

from .. import collectives as rc
from .flat import FlatBuffer, group_by_dtype


def broadcast_coalesced(tensors: Sequence[torch.Tensor], src: int, comm: rc.Communicator) -> None:
    """Overwrite ``tensors`` in place with rank ``src``'s values: one broadcast per dtype."""
    if comm.size == 1 or not tensors:
        return
    tensors = [t.detach() for t in tensors]
    for idx in group_by_dtype(tensors).values():
        group = [tensors[i] for i in idx]
        flat = FlatBuffer.like(group)
        flat.copy_from(group)
        rc.broadcast(flat.data, src=src, group=comm)
        with torch.no_grad():
            flat.copy_to(group)


def broadcast_object(obj: Any, src: int, comm: rc.Communicator) -> Any:
    """Rank ``src``'s ``obj`` on every rank (torch.save format; tensors land on the CPU)."""
    if comm.size == 1:
        return obj
    dev = comm.device                                      # the transport's (NCCL: a GPU)
    if comm.rank == src:
        stream = io.BytesIO()
        torch.save(obj, stream)
        payload = torch.frombuffer(bytearray(stream.getvalue()), dtype=torch.uint8).to(dev)
        length = torch.tensor([payload.numel()], dtype=torch.int64, device=dev)
    else:
        length = torch.zeros(1, dtype=torch.int64, device=dev)
    rc.broadcast(length, src=src, group=comm)
    if comm.rank != src:
        payload = torch.empty(int(length.item()), dtype=torch.uint8, device=dev)
    rc.broadcast(payload, src=src, group=comm)
    if comm.rank == src:
        return obj
    raw = payload.cpu().numpy().tobytes()
    return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
