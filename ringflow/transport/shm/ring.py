"""The single-producer single-consumer byte ring between two ranks, inside the receiver's segment.

A ring is a byte stream: the sender alone advances ``tail``, the receiver alone
advances ``head``, both monotonic 64-bit byte counts on separate cache lines, so
no locks are needed. Every message starts with a 64-byte header (``HEADER``).

Memory ordering: a writer copies the bytes first and stores the counter after
the copy returned; a reader loads the counter first and copies after. On x86-64
(TSO) stores become visible in program order and loads are not reordered with
older loads, so a reader that sees the new counter sees the bytes (glibc's
memmove ends its non-temporal path with an sfence). Counters are aligned 8-byte
ctypes values, read and written with single moves. On weakly ordered CPUs (ARM)
this leans on the barriers of the GIL release around every ctypes call; only
x86-64 is tested.

    ring = Ring(seg, index=0, ring_bytes=8 << 20)
"""
from __future__ import annotations

import ctypes
import struct

import torch

from .segment import PAGE, Segment

HEADER = 64                       # every message starts with one 64-byte record
ALIGN = 64                        # messages occupy whole 64-byte lines, so headers never wrap
_MAGIC = 0x52464C57               # "RFLW": catches a stream that lost its framing
_HEADER_FMT = "<IiQQq4q"          # magic, dtype code, nbytes, numel, tag, stamp (4 words)
_NO_STAMP = (0, 0, 0, 0)          # a message sent outside a collective (a stamp's verb is never 0)


def footprint(nbytes: int) -> int:
    """Ring bytes a message of ``nbytes`` occupies (header plus payload, 64-byte aligned)."""
    return HEADER + -(-nbytes // ALIGN) * ALIGN


class Ring:
    """The SPSC byte ring ``index`` of ``seg``; positions are monotonic byte counts."""

    def __init__(self, seg: Segment, index: int, ring_bytes: int):
        off = PAGE + index * (PAGE + ring_bytes)
        self.mm, self.size = seg.mm, ring_bytes
        self.tail = ctypes.c_uint64.from_buffer(seg.mm, off)        # written by the sender only
        self.head = ctypes.c_uint64.from_buffer(seg.mm, off + 64)   # written by the receiver only
        self.want = ctypes.c_uint64.from_buffer(seg.mm, off + 128)  # sender: "blocked on space"
        self.data_off = off + PAGE
        self.data = seg.base + self.data_off
        self.bytes = torch.frombuffer(seg.mm, dtype=torch.uint8, count=ring_bytes,
                                      offset=self.data_off)      # for reductions from the ring

    def copy_in(self, pos: int, src: int, n: int) -> None:
        """Copy ``n`` bytes from address ``src`` to stream position ``pos`` (wrapping)."""
        at = pos % self.size
        first = min(n, self.size - at)
        ctypes.memmove(self.data + at, src, first)    # ctypes releases the GIL while copying
        if first < n:
            ctypes.memmove(self.data, src + first, n - first)

    def copy_out(self, pos: int, dst: int, n: int) -> None:
        """Copy ``n`` bytes at stream position ``pos`` to address ``dst`` (wrapping)."""
        at = pos % self.size
        first = min(n, self.size - at)
        ctypes.memmove(dst, self.data + at, first)
        if first < n:
            ctypes.memmove(dst + first, self.data, n - first)

    def views(self, pos: int, n: int):
        """(uint8 view, offset in the piece) of ``n`` bytes at ``pos``: one, two if wrapping."""
        at = pos % self.size
        first = min(n, self.size - at)
        yield self.bytes[at:at + first], 0
        if first < n:
            yield self.bytes[:n - first], first

    def put_header(self, pos: int, tag: int, code: int, nbytes: int, numel: int,
                   stamp: tuple | None = None) -> None:
        struct.pack_into(_HEADER_FMT, self.mm, self.data_off + pos % self.size,
                         _MAGIC, code, nbytes, numel, tag, *(stamp or _NO_STAMP))

    def get_header(self, pos: int) -> tuple:
        """(tag, dtype code, nbytes, numel, stamp or None) of the message starting at ``pos``."""
        magic, code, nbytes, numel, tag, *stamp = struct.unpack_from(
            _HEADER_FMT, self.mm, self.data_off + pos % self.size)
        if magic != _MAGIC:
            raise RuntimeError(f"shared-memory ring lost its framing at byte {pos} (found "
                               f"{magic:#x}, expected {_MAGIC:#x}); a peer wrote out of turn")
        stamp = tuple(stamp)
        return tag, code, nbytes, numel, None if stamp == _NO_STAMP else stamp

    def release(self) -> None:
        self.tail = self.head = self.want = self.mm = self.bytes = None
