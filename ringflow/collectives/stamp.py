"""A collective's identity on every message it sends, so a rank never takes another call's bytes.

Every rank numbers its collectives (per communicator), and every message a collective sends
carries a stamp: four int64 words holding its sequence number, element count, verb, dtype, op and
root. The receiver compares the stamp that came with the one of the call it is running:

- transports with a message header (threads, shared memory) carry the stamp whole: a receive whose
  message bears another stamp fails with both calls named (``StampMismatch``);
- tag-matched transports (gloo, MPI) fold a hash of it into the tag, so messages of different calls
  never match: the waiting rank times out (gloo), or sees the other call's message waiting from the
  same peer and says so (MPI's probe);
- staged collectives post the stamp beside each round's data, and readers compare it.

It is always on: one comparison of four integers per message. The debug fingerprint check
(RINGFLOW_DEBUG, debug.py) compares every field across all ranks before any data moves; the stamp
only guarantees that a rank never consumes another call's bytes.

    stamp = stamp_of(rec)           # (seq, numel, verb << 32 | dtype, op << 32 | root)
    describe(stamp)                 # "broadcast #3 (64 x float32, root 0)"
    differences(theirs, mine)       # "dtype float64 on the peer, float32 here"
"""
from __future__ import annotations

from .debug import code_of, name_of

_LOW = 0xFFFFFFFF
# all_to_all's blocks may differ in size across ranks, so its count is not part of its identity
_ANY_COUNT = ("all_to_all_single",)


_WORDS: dict[tuple, tuple[int, int]] = {}     # (verb, dtype, op) -> the coded words' high parts


def stamp_of(rec) -> tuple[int, int, int, int]:
    """The stamp of call record ``rec`` (flight.CallRecord)."""
    key = (rec.name, rec.dtype, rec.op)
    words = _WORDS.get(key)          # coding the names costs more than a small MPI call
    if words is None:
        words = _WORDS[key] = (code_of(rec.name) << 32 | code_of(rec.dtype), code_of(rec.op) << 32)
    numel = 0 if rec.name in _ANY_COUNT else rec.numel
    return (rec.seq, numel, words[0], words[1] | (rec.root & _LOW))


def _fields(stamp) -> dict:
    """A stamp's fields by name, decoded: {"verb": "all_reduce", "seq": 4, "dtype": ...}."""
    seq, numel, verb_dtype, op_root = stamp
    root = op_root & _LOW
    return {"verb": name_of(verb_dtype >> 32), "seq": seq, "count": numel,
            "dtype": name_of(verb_dtype & _LOW), "op": name_of(op_root >> 32),
            "root": root - (1 << 32) if root >= 1 << 31 else root}


def describe(stamp) -> str:
    """What a stamp says, in words: "all_reduce #4 (64 x float32, op sum)"."""
    f = _fields(stamp)
    verb, numel, dtype, op, root = f["verb"], f["count"], f["dtype"], f["op"], f["root"]
    parts = [f"{numel} x {dtype}" if numel or verb not in _ANY_COUNT else dtype]
    if op != "-":
        parts.append(f"op {op}")
    if root >= 0:
        parts.append(f"root {root}")
    return f"{verb} #{f['seq']} ({', '.join(parts)})"


def differences(theirs, mine) -> str:
    """Where two stamps differ, in words: "dtype float64 on the peer, float32 here"."""
    a, b = _fields(theirs), _fields(mine)
    return "; ".join(f"{k} {a[k]} on the peer, {b[k]} here" for k in a if a[k] != b[k])


def mismatch_text(e) -> str:
    """What a receive that took another call's message (transport StampMismatch) says."""
    if e.came is None:
        theirs = "a message of another collective (its tag differs; the transport carries no more of it)"
    else:
        theirs = f"a message of its {describe(e.came)} ({differences(e.came, e.wanted)})"
    return (f"received from its peer {theirs}, while this rank runs {describe(e.wanted)}: the "
            "ranks' collectives do not match")
