"""torch's send / recv / batch_isend_irecv on the backend: posted in order, waited by the caller.

The post runs on ringflow's engine thread, in issue order with the collectives; the wait does
not: a send that waits for its receiver there would hold up the receive queued behind it
(``batch_isend_irecv([isend, irecv])`` on every rank deadlocks over gloo that way). So the
engine only posts, and ``wait()`` on the caller's thread waits for the message.
User messages travel under their own tags (P2P_TAG and up), never a collective's.

    work = post(comm, "send", tensor, dst, tag=0); work.wait()
"""
from __future__ import annotations

import torch
from torch.futures import Future

from ..collectives.communicator import Communicator
from .work import BackendWork

P2P_TAG = 30001        # above every group tag (communicator.py: 0, or 1..30000)
P2P_TAGS = 1700        # a user's tag picks one of these lanes (all below the transport's span)


class PeerWork(BackendWork):
    """A send or receive: done once posted (engine) and then completed (caller's wait)."""

    def __init__(self, comm: Communicator, posted, holder: list, peer: int, result):
        super().__init__(Future(), result=result)
        self._comm, self._posted, self._holder, self._peer = comm, posted, holder, peer

    def wait(self, timeout=None) -> bool:
        if not self._future.done():
            try:
                self._posted.wait()                       # the engine's post, or its error
                self._comm.wait(self._holder[0], self._peer)
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


def post(comm: Communicator, kind: str, tensor: torch.Tensor, peer: int, tag: int,
         result) -> PeerWork:
    """Queue the post of a "send" or "recv" of ``tensor`` (contiguous, flat) with ``peer``."""
    if not 0 <= peer < comm.size or peer == comm.rank:
        raise ValueError(f"{kind}: peer {peer} must be another rank of this group of {comm.size}")
    if tag < 0:
        raise ValueError(f"{kind}: tag must be >= 0, got {tag}")
    lane, holder = P2P_TAG + tag % P2P_TAGS, []

    def job() -> None:
        saved, comm.tag = comm.tag, lane     # the engine runs one job at a time: no race
        try:
            holder.append((comm.isend if kind == "send" else comm.irecv)(tensor, peer))
        finally:
            comm.tag = saved
    return PeerWork(comm, comm.engine.submit(kind, job), holder, peer, result)
