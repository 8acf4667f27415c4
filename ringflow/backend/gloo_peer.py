"""Point-to-point over a gloo process group of the backend's own, for ranks on several nodes.

The torch transport talks through torch.distributed's default group, which under this backend is
ringflow itself; so the backend builds a separate ``ProcessGroupGloo`` from the store torch hands
it (under a prefix of its own) and posts sends and receives on it directly.

    tr = GlooPeerTransport(store, rank=0, size=4, timeout=300)
    sw, rw = tr.sendrecv(x, 1, y, 3); rw.wait(30); sw.wait(30)
"""
from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

from ..transport.base import Transport, Work, fold_tag, require_contiguous
from ..transport.torch_dist import STAMP_SLOTS, _TorchWork, _translate


class GlooPeerTransport(Transport):
    """Ranks of one backend group connected by gloo, point to point only (CPU tensors)."""

    name = "torch/gloo"
    device = torch.device("cpu")
    slice_bytes = None               # gloo over TCP: slicing adds only per-call cost

    def __init__(self, store: dist.Store, rank: int, size: int, timeout: float):
        self.rank, self.size, self.timeout = rank, size, timeout
        self.pg = dist.ProcessGroupGloo(dist.PrefixStore("ringflow/gloo_peer", store), rank, size,
                                        datetime.timedelta(seconds=timeout))

    def check_tensor(self, tensor: torch.Tensor) -> None:
        require_contiguous(tensor)
        if tensor.device.type != "cpu":
            raise ValueError(f"the backend's gloo transport moves cpu tensors, got one on "
                             f"{tensor.device}; use backend 'cpu:ringflow,cuda:nccl' for GPUs")

    def _post(self, send: bool, tensor: torch.Tensor, peer: int, tag: int, stamp) -> Work:
        self.check_tensor(tensor)
        if not 0 <= peer < self.size:
            raise ValueError(f"peer rank {peer} out of range for a group of {self.size}")
        what = f"send to rank {peer}" if send else f"receive from rank {peer}"
        tag = fold_tag(tag, stamp, STAMP_SLOTS)
        try:
            work = (self.pg.send if send else self.pg.recv)([tensor], peer, tag)
        except RuntimeError as e:
            raise _translate(e, peer, what, None) from e
        return _TorchWork(work, peer, what, poll=False)

    def isend(self, tensor: torch.Tensor, dst: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        return self._post(True, tensor, dst, tag, stamp)

    def irecv(self, tensor: torch.Tensor, src: int, tag: int = 0, stamp: tuple | None = None) -> Work:
        return self._post(False, tensor, src, tag, stamp)

    def irecv_any(self, tensor: torch.Tensor, tag: int = 0, stamp: tuple | None = None) -> Work:
        """gloo's own receive from any source; the sender is known once it completes."""
        self.check_tensor(tensor)
        try:
            work = self.pg.recv_anysource([tensor], fold_tag(tag, stamp, STAMP_SLOTS))
        except RuntimeError as e:
            raise _translate(e, -1, "receive from any rank", None) from e
        return _AnySourceWork(work, -1, "receive from any rank", poll=False)

    def close(self) -> None:
        self.pg = None


class _AnySourceWork(_TorchWork):
    """gloo's any-source receive: ``peer`` becomes the sender once it completed."""

    def wait(self, timeout: float | None = None) -> None:
        super().wait(timeout)
        self.peer = self.work._source_rank()
