"""The two ends of one directed ring: an Outbox streams sends in, an Inbox matches them out.

Messages are a 64-byte header (tag, dtype, sizes) and the payload, padded to 64
bytes. Every position and piece is a multiple of 64 (ring sizes are multiples
of 4096, pieces a quarter ring), so a header never wraps and a piece never splits
an element. A message larger than the free space streams in pieces; each piece
is published (counter store, then a doorbell for a sleeping peer) as soon as it
is copied, so the peer copies piece k while we copy piece k+1.

An Inbox matches arriving messages to receives by tag in posting order (MPI's
non-overtaking rule). A message nobody has asked for stays in the ring, unless a
receive of another tag from the same peer is waiting behind it: then it is
drained into a buffer and handed over when its receive is posted. A receive from any
source (``post_any``) waits in the queue of every inbox at once; the first inbox to match
it takes it out of all the others, so exactly one message ever lands in it.

    box = Inbox(ring, sender_segment, piece); box.post(msg); box.pull()
"""
from __future__ import annotations

import collections
import ctypes
from typing import Callable

import torch

from ..base import StampMismatch, TransportError, Work
from .ring import HEADER, Ring, footprint
from .segment import Segment, fence

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16,
          torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128)
CODES = {d: i for i, d in enumerate(DTYPES)}


class Message(Work):
    """A send, a receive, or a drained early message: ``pos`` of ``foot`` ring bytes moved.

    A receive either copies into ``tensor`` or, when ``combine`` is set, computes
    ``combine(out, first, arrived)`` piece by piece straight from the ring.
    """

    def __init__(self, owner, kind: str, peer: int, tag: int, tensor: torch.Tensor | None,
                 nbytes: int, code: int, numel: int, stamp: tuple | None = None):
        self.owner, self.kind, self.peer, self.tag = owner, kind, peer, tag
        self.stamp = stamp                # the collective it belongs to (collectives/stamp.py)
        self.tensor = tensor              # kept alive (and unmodified by contract) while in flight
        self.addr = tensor.data_ptr() if tensor is not None else 0
        self.nbytes, self.code, self.numel = nbytes, code, numel
        self.foot, self.pos = footprint(nbytes), 0
        self.done, self.error = False, None
        self.claimer: Message | None = None          # the late receive of an early message
        self.combine: Callable | None = None
        self.first: torch.Tensor | None = None
        self.boxes: list[Inbox] | None = None        # any source: the inboxes it waits in

    def describe(self) -> str:
        dtype = DTYPES[self.code] if 0 <= self.code < len(DTYPES) else "bytes"
        return f"{self.numel} x {str(dtype).replace('torch.', '')} (tag {self.tag})"

    def wait(self, timeout: float | None = None) -> None:
        self.owner.wait_for(self, timeout)

    def is_completed(self) -> bool:
        return self.done or self.owner.poll(self)

    def finish(self) -> None:
        self.done, self.tensor, self.first = True, None, None


class Outbox:
    """Sends to one peer, streamed into its ring in posting order."""

    def __init__(self, ring: Ring, peer: Segment, piece: int):
        self.ring, self.peer, self.piece = ring, peer, piece
        self.queue: collections.deque[Message] = collections.deque()
        self.tail = 0                                 # my write position (the ring's tail)

    def push(self) -> bool:
        """Copy queued sends into the ring as far as it has room; True if anything moved."""
        ring, q, moved = self.ring, self.queue, False
        if ring.want.value:
            ring.want.value = 0                       # awake now; raised again if still blocked
        while q:
            msg, tail = q[0], self.tail
            free = ring.size - (tail - ring.head.value)
            if msg.pos == 0:
                if free < HEADER:
                    if self._blocked():
                        break
                    continue
                ring.put_header(tail, msg.tag, msg.code, msg.nbytes, msg.numel, msg.stamp)
                msg.pos, tail, free = HEADER, tail + HEADER, free - HEADER
            n = min(free, msg.foot - msg.pos, self.piece)
            if tail + n == self.tail:
                if self._blocked():
                    break                             # full: the rest goes once the peer drains
                continue
            data = max(0, min(n, HEADER + msg.nbytes - msg.pos))
            if data:
                ring.copy_in(tail, msg.addr + msg.pos - HEADER, data)
            msg.pos, self.tail = msg.pos + n, tail + n
            ring.tail.value = self.tail               # publish after the copy (ring: ordering)
            self.peer.notify()
            moved = True
            if msg.pos == msg.foot:
                q.popleft().finish()
        return moved

    def _blocked(self) -> bool:
        """Ask to be woken when the peer frees space; False if it already did (Dekker, segment)."""
        ring = self.ring
        ring.want.value = 1
        fence()
        return ring.size - (self.tail - ring.head.value) < HEADER


class Inbox:
    """Messages from one peer and the receives posted for them."""

    def __init__(self, ring: Ring, peer: Segment, piece: int, rank: int, src: int):
        self.ring, self.peer, self.piece, self.rank, self.src = ring, peer, piece, rank, src
        self.posted: dict[int, collections.deque[Message]] = {}
        self.early: dict[int, collections.deque[Message]] = {}
        self.current: Message | None = None            # the message streaming in now
        self.waiting = 0                                # posted receives not yet matched
        self.head = 0                                   # my read position (the ring's head)

    def busy(self) -> bool:
        return self.waiting > 0 or self.current is not None

    def post(self, msg: Message) -> None:
        """Queue a receive, or hand it a message that was drained before it was posted."""
        early = self.early.get(msg.tag)
        if early:
            self._claim(early.popleft(), msg)
            return
        self.posted.setdefault(msg.tag, collections.deque()).append(msg)
        self.waiting += 1
        self.pull()

    def pull(self) -> bool:
        """Move arrived bytes into the receives they belong to; True if anything moved."""
        ring, moved = self.ring, False
        while True:
            head, msg = self.head, self.current
            avail = ring.tail.value - head
            if msg is None:
                if avail < HEADER:
                    break
                msg = self._match(*ring.get_header(head))
                if msg is None:
                    break                               # nobody asked for it yet: leave it
                self.current, msg.pos, head, avail = msg, HEADER, head + HEADER, avail - HEADER
            n = min(avail, msg.foot - msg.pos, self.piece)
            if head + n == self.head:
                break                                   # the rest has not arrived yet
            data = max(0, min(n, HEADER + msg.nbytes - msg.pos))
            if data:
                self._deliver(msg, head, msg.pos - HEADER, data)
            msg.pos, self.head = msg.pos + n, head + n
            ring.head.value = self.head                 # the sender may reuse the space now
            self.peer.notify(ring.want)
            moved = True
            if msg.pos == msg.foot:
                self.current = None
                self._complete(msg)
        return moved

    def _deliver(self, msg: Message, pos: int, offset: int, n: int) -> None:
        """Payload bytes [offset, offset+n) sit at ring position ``pos``: copy or combine them."""
        if msg.combine is None:
            if msg.addr:
                self.ring.copy_out(pos, msg.addr + offset, n)
            return
        dtype = msg.tensor.dtype
        size = msg.tensor.element_size()
        for part, at in self.ring.views(pos, n):        # one view, two if the piece wraps
            e0, e1 = (offset + at) // size, (offset + at + part.numel()) // size
            msg.combine(msg.tensor[e0:e1], msg.first[e0:e1], part.view(dtype))

    def _match(self, tag: int, code: int, nbytes: int, numel: int,
               stamp: tuple | None) -> Message | None:
        """The receive for the arriving message, a drain buffer, or None to leave it queued."""
        queue = self.posted.get(tag)
        if queue:
            msg = queue.popleft()
            self.waiting -= 1
            if msg.boxes is not None:
                self._take_any(msg)
            if ((stamp == msg.stamp or stamp is None or msg.stamp is None) and msg.nbytes == nbytes
                    and (msg.code == code or -1 in (code, msg.code))):
                return msg                              # the common case: no object made
            came = Message(msg.owner, "recv", self.src, tag, None, nbytes, code, numel, stamp)
            msg.error, came.claimer = self._refusal(came, msg), msg
            return came                                 # swallow its bytes, fail the receive
        if not self.waiting:
            return None
        buf = torch.empty(nbytes, dtype=torch.uint8)    # a later message is awaited: drain this
        early = Message(None, "recv", self.src, tag, buf, nbytes, code, numel, stamp)
        self.early.setdefault(tag, collections.deque()).append(early)
        return early

    def _take_any(self, msg: Message) -> None:
        """An any-source receive matched here: it is ours, and leaves every other queue."""
        for box in msg.boxes:
            if box is not self:
                box.posted[msg.tag].remove(msg)
                box.waiting -= 1
        msg.boxes, msg.peer = None, self.src

    def _claim(self, early: Message, msg: Message) -> None:
        msg.error = self._refusal(early, msg)
        if msg.error is not None:
            msg.finish()
            return
        early.claimer = msg
        if early.done:
            self._complete(early)

    def _complete(self, msg: Message) -> None:
        late, buf = msg.claimer, msg.tensor
        if late is None and msg.owner is None:
            msg.done = True                             # early: keeps its buffer for its receive
            return
        msg.finish()
        if late is None:
            return
        if late.error is None and buf is not None:
            if late.combine is None:
                ctypes.memmove(late.addr, buf.data_ptr(), msg.nbytes)
            else:
                late.combine(late.tensor, late.first, buf.view(late.tensor.dtype))
        late.finish()

    def _refusal(self, came: Message, want: Message) -> TransportError | None:
        """Why ``want`` may not take ``came`` (another collective's, another size), or None."""
        if want.stamp is not None and came.stamp is not None and came.stamp != want.stamp:
            return StampMismatch(f"rank {self.rank}: message from rank {self.src} belongs to "
                                 "another collective", self.src, came.stamp, want.stamp)
        if came.nbytes == want.nbytes and (came.code == want.code or -1 in (came.code, want.code)):
            return None
        return TransportError(
            f"rank {self.rank}: message from rank {self.src} has {came.describe()}, but the "
            f"receive posted for it expects {want.describe()}; both sides must agree")


def post_any(inboxes: list[Inbox], msg: Message) -> None:
    """Queue a receive from any source: a message already drained from some peer is its
    now; else it waits behind the receives posted before it, in every inbox at once."""
    for box in inboxes:
        if box.early.get(msg.tag):
            msg.peer = box.src
            box.post(msg)
            return
    msg.boxes = list(inboxes)
    for box in inboxes:
        box.posted.setdefault(msg.tag, collections.deque()).append(msg)
        box.waiting += 1
    for box in inboxes:
        box.pull()
