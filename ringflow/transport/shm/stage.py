"""The shm transport's staging area: one buffer per rank that every rank of the node reads.

A message costs ringflow tens of microseconds of Python (a header, a Message object, ring
bookkeeping); a small collective over the ring pays that on every step. Staged
collectives (``collectives/staged.py``) skip messages: each rank copies its data into
its own stage, publishes a counter, and reads its peers' stages in place once their
counters show. One round of a collective is then a copy in, a wait and the reduction.

Layout: each segment ends with two halves of ``half`` bytes; round s uses half s % 2.
Three words per rank in its control page (``OFFSET``): ``posted`` (s + 1 once the
rank's round-s data is in place), ``read`` (s + 1 once it has read every peer's round
s), the byte count of each half (so a peer that staged a different size is an error,
not a silent misread) and the stamp of the collective each half belongs to (four words per
half: a peer that staged another collective's round is named, never read; collectives/stamp.py). Before writing half s % 2 a rank waits until every peer's
``read`` >= s - 1, i.e. they are done with round s - 2, the last user of that half.
Ordering is x86-64's, as for the rings (ring): bytes first, counter after.

    st = transport.stage                       # None when the transport has none
    s = st.next_round()
    comm.wait(st.writable(peer, s), peer)      # for every peer
    st.put(s, bytes_tensor)
    comm.wait(st.posted(peer, s, nbytes), peer)
    views = [st.view(r, s, torch.float32, numel) for r in range(st.size)]
    st.done(s)
"""
from __future__ import annotations

from typing import Callable

import torch

from ... import settings
from ..base import StampMismatch, TransportError, Work

def stage_half(stage_bytes: int | None = None) -> int:
    """Bytes per staging half: ``stage_bytes``, else $RINGFLOW_SHM_STAGE_BYTES, default 2 MiB
    (0: no staging area). Every transport that stages reads it here."""
    half = settings.get("RINGFLOW_SHM_STAGE_BYTES") if stage_bytes is None else stage_bytes
    if half < 0 or half % 64:
        raise ValueError(f"stage_bytes must be a multiple of 64 and >= 0, got {half}")
    return half


OFFSET = 2048          # in the control page, after the fingerprint board (board: 1024..1152)
POSTED, READ, NBYTES = 0, 1, 2      # word indices; NBYTES + half index holds a half's size
STAMP = 4                           # STAMP + 4 * half index: that half's stamp (4 words)
WORDS = STAMP + 8


class Stage:
    """Every rank's staging halves, mapped once; rounds are numbered the same on every rank
    because collectives run in the same order everywhere."""

    def __init__(self, segments: dict, rank: int, offset: int, half: int, wait_until: Callable):
        self.rank, self.size, self.half = rank, len(segments), half
        self.segments = segments                      # rank -> Segment (this rank's too)
        self.words = {r: memoryview(seg.mm)[OFFSET:OFFSET + 8 * WORDS].cast("q")
                      for r, seg in segments.items()}
        self.areas = {r: torch.frombuffer(seg.mm, dtype=torch.uint8, count=2 * half, offset=offset)
                      for r, seg in segments.items()}
        self.wait_until = wait_until                  # the transport's: spin, sleep, liveness
        self.round = 0
        self._views: dict[tuple, torch.Tensor] = {}   # (rank, half, dtype, numel) -> view

    def next_round(self) -> int:
        s, self.round = self.round, self.round + 1
        return s

    def area(self, rank: int, s: int) -> torch.Tensor:
        """Half s % 2 of ``rank``'s stage, as bytes."""
        return self.areas[rank][(s % 2) * self.half:(s % 2 + 1) * self.half]

    def view(self, rank: int, s: int, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """The first ``numel`` elements of ``rank``'s half s % 2. Cached: a training loop
        repeats the same few sizes, and a small collective's cost is counted in tensor ops."""
        key = (rank, s % 2, dtype, numel)
        view = self._views.get(key)
        if view is None:
            if len(self._views) > 256:
                self._views.clear()
            view = self._views[key] = self.area(rank, s).view(dtype)[:numel]
        return view

    def is_writable(self, peer: int, s: int) -> bool:
        """Whether ``peer`` has read round s - 2, the last to use half s % 2."""
        return self.words[peer][READ] >= s - 1

    def writable(self, peer: int, s: int) -> Work:
        """Completes once ``is_writable(peer, s)``."""
        return _Until(self, peer, lambda: self.is_writable(peer, s),
                      f"rank {peer} to finish reading staged round {s - 2}")

    def put(self, s: int, data: torch.Tensor, stamp: tuple | None = None) -> None:
        """Copy ``data`` (any shape, strided too) into half s % 2, row-major, and publish it
        with the stamp of the collective it belongs to."""
        nbytes = data.numel() * data.element_size()
        if nbytes > self.half:
            raise ValueError(f"a staged round holds at most {self.half} bytes, got {nbytes}")
        dst = self.view(self.rank, s, data.dtype, data.numel())
        (dst if data.dim() == 1 else dst.view(data.shape)).copy_(data)
        mine = self.words[self.rank]
        mine[NBYTES + s % 2] = nbytes
        at = STAMP + 4 * (s % 2)
        mine[at], mine[at + 1], mine[at + 2], mine[at + 3] = stamp or (0, 0, 0, 0)
        mine[POSTED] = s + 1                          # last: a reader that sees it sees the bytes
        self._notify()

    def _same_call(self, words, s: int, stamp: tuple | None) -> bool:
        at = STAMP + 4 * (s % 2)
        return stamp is None or (words[at] == stamp[0] and words[at + 1] == stamp[1]
                                 and words[at + 2] == stamp[2] and words[at + 3] == stamp[3])

    def has_posted(self, peer: int, s: int, nbytes: int, stamp: tuple | None = None) -> bool:
        """Whether ``peer`` has published round s with ``nbytes`` for collective ``stamp``
        (False on another size or stamp too: ``posted``'s Work then raises the mismatch)."""
        words = self.words[peer]
        return (words[POSTED] >= s + 1 and words[NBYTES + s % 2] == nbytes
                and self._same_call(words, s, stamp))

    def posted(self, peer: int, s: int, nbytes: int, stamp: tuple | None = None) -> Work:
        """Completes once ``peer`` has published round s; fails if it staged another size or
        another collective's round."""
        words = self.words[peer]

        def ready() -> bool:
            if words[POSTED] < s + 1:
                return False
            theirs = words[NBYTES + s % 2]
            same = self._same_call(words, s, stamp)
            if theirs == nbytes and same:
                return True
            sizes = (f"rank {peer} staged {theirs} bytes for round {s} and rank {self.rank} "
                     f"{nbytes}" if theirs != nbytes else f"rank {peer} staged round {s}")
            if not same:         # the stamps name both calls: verb, count, dtype (not only bytes)
                at = STAMP + 4 * (s % 2)
                raise StampMismatch(f"{sizes} for another collective", peer,
                                    tuple(words[at:at + 4]), stamp)
            raise TransportError(f"{sizes}: the ranks called collectives of different sizes")
        return _Until(self, peer, ready, f"rank {peer} to stage its round {s}")

    def done(self, s: int) -> None:
        """This rank has read every peer's round s: they may reuse that half."""
        self.words[self.rank][READ] = s + 1
        self._notify()

    def _notify(self) -> None:
        for r, seg in self.segments.items():
            if r != self.rank:
                seg.notify()                          # wakes a peer only if it sleeps

    def close(self) -> None:
        for view in self.words.values():
            view.release()                            # or the mapping could not close
        self.words, self.areas, self._views = {}, {}, {}


class _Until(Work):
    def __init__(self, stage: Stage, peer: int, ready: Callable[[], bool], what: str):
        self.stage, self.peer, self.ready, self.what = stage, peer, ready, what
        self.done = False

    def is_completed(self) -> bool:
        if not self.done:
            self.done = self.ready()
        return self.done

    def wait(self, timeout: float | None = None) -> None:
        if not self.is_completed():
            self.stage.wait_until(self.is_completed, self.peer, f"wait for {self.what}", timeout)
