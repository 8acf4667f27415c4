"""torch's send / recv / batch_isend_irecv on the backend: posted in order, waited by the caller.

The post runs on ringflow's engine thread, in issue order with the collectives; the wait does
not: a send that waits for its receiver there would hold up the receive queued behind it
(``batch_isend_irecv([isend, irecv])`` on every rank deadlocks over gloo that way). So the
engine only posts, and ``wait()`` on the caller's thread waits for the message.
User messages travel under their own tags (P2P_TAG and up, a lane per group and user tag),
never a collective's. A receive from any source is the transport's own (``irecv_any``): it
takes its place among the receives posted to every peer, and the first message of its lane
from any of them is its, so no message is taken twice or left behind. For that every message
is on the wire, an empty one as a one-byte token (ringflow's verbs skip empty messages).

    work = post(comm, "send", tensor, dst, tag=0); work.wait()
    work = post(comm, "recv", tensor, ANY, tag=0); work.wait(); work._source_rank()
"""
from __future__ import annotations

import torch
from torch.futures import Future

from ..collectives.communicator import Communicator
from .work import BackendWork

P2P_TAG = 30001        # above every group tag (communicator.py: 0, or 1..30000)
P2P_TAGS = 1700        # a (group, user tag) pair picks one of these lanes (all below the span)
ANY = -1               # ``peer`` of a receive from any source


class PeerWork(BackendWork):
    """A send or receive: done once posted (engine) and then completed (caller's wait)."""

    def __init__(self, comm: Communicator, posted, holder: list, peer: int, result):
        super().__init__(Future(), result=result)
        self._comm, self._posted, self._holder, self._peer = comm, posted, holder, peer

    def wait(self, timeout=None) -> bool:
        if not self._future.done():
            try:
                self._posted.wait()                       # the engine's post, or its error
                work = self._holder[0]
                self._comm.wait(work, self._peer)
                if self._peer == ANY:                     # the transport names the sender
                    self._source = self._comm.member(work.peer)
                self._future.set_result(self._result)
            except Exception as e:                        # noqa: BLE001 - kept for the future
                self._future.set_exception(e)
        return super().wait()

    def get_future(self) -> Future:
        self.wait()       # nobody else drives a message to completion: the future waits first
        return self._future

    def is_completed(self) -> bool:
        return self._future.done() or (self._posted.is_completed() and bool(self._holder)
                                        and self._holder[0].is_completed())

    def source_rank(self) -> int:
        if self._peer == ANY:
            self.wait()   # torch waits first; asked before that, the answer needs the message
        return super().source_rank()


def post(comm: Communicator, kind: str, tensor: torch.Tensor, peer: int, tag: int,
         result) -> PeerWork:
    """Queue the post of a "send" or "recv" of ``tensor`` (contiguous, flat) with ``peer``
    (ANY: a receive from whichever rank sends first)."""
    if peer == ANY and kind == "recv":
        if comm.size == 1:
            raise ValueError("recv from any source: this group has no other rank")
    elif not 0 <= peer < comm.size or peer == comm.rank:
        raise ValueError(f"{kind}: peer {peer} must be another rank of this group of {comm.size}")
    if tag < 0:
        raise ValueError(f"{kind}: tag must be >= 0, got {tag}")
    holder: list = []
    wire = tensor if tensor.numel() else torch.zeros(1, dtype=torch.uint8)   # the empty token

    def job() -> None:
        # the engine runs one job at a time, so the group's tag is its own here (read on the
        # caller's thread, it could be another post's lane)
        saved = comm.tag
        comm.tag = P2P_TAG + (saved + tag) % P2P_TAGS
        try:
            if kind == "send":
                holder.append(comm.isend(wire, peer))
            else:
                holder.append(comm.irecv(wire, peer) if peer != ANY else comm.irecv_any(wire))
        finally:
            comm.tag = saved
    return PeerWork(comm, comm.engine.submit(kind, job), holder, peer, result)
