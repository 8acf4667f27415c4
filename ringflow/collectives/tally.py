"""At shutdown, the ranks compare how many collectives each made, and say which calls differ.

A rank that made a collective its peers never made may still have ended cleanly (a broadcast's
root only sends), so the count is compared once more as the world shuts down. Each rank sends
every peer its count and the stamps of its last ``KEEP`` calls (collectives/stamp.py) on a tag of
their own; the waits are short and any failure is reported, never raised, so shutdown still
finishes.

    tally(comm, timeout=5)     # prints (stderr) what differs; returns it, or None
"""
from __future__ import annotations

import sys

import torch

from ..transport.base import TransportError
from .stamp import describe

TAG = 32001          # beside the debug board's 32000: above every communicator's tag
KEEP = 16            # stamps each rank sends (the calls nearest the end)


def _mine(comm) -> torch.Tensor:
    """[count, then KEEP stamps of 4 words, the last calls, zero-padded]."""
    row = torch.zeros(1 + 4 * KEEP, dtype=torch.int64)
    row[0] = comm.seq
    stamps = [r.stamp for r in list(comm.history)[-KEEP:] if r.stamp is not None]
    if stamps:
        row[1:1 + 4 * len(stamps)] = torch.tensor(stamps, dtype=torch.int64).view(-1)
    return row


def _exchange(comm, timeout: float) -> dict[int, list[int]]:
    tr, mine = comm.transport, _mine(comm)
    theirs = {p: torch.zeros_like(mine) for p in range(comm.size) if p != comm.rank}
    recvs = {p: tr.irecv(t, p, TAG) for p, t in theirs.items()}
    sends = [tr.isend(mine, p, TAG) for p in theirs]
    for work in [*recvs.values(), *sends]:
        work.wait(timeout)
    rows = {p: t.tolist() for p, t in theirs.items()}
    rows[comm.rank] = mine.tolist()
    return rows


def _calls(row: list[int]) -> dict[int, tuple]:
    """seq -> stamp of the calls a row holds."""
    stamps = [tuple(row[1 + 4 * i:5 + 4 * i]) for i in range(KEEP)]
    return {s[0]: s for s in stamps if any(s)}


def compare(rows: dict[int, list[int]]) -> str | None:
    """The report of what differs between the ranks' rows, or None."""
    counts = {r: row[0] for r, row in rows.items()}
    calls = {r: _calls(row) for r, row in rows.items()}
    common = set.intersection(*(set(c) for c in calls.values()))
    differ = sorted(s for s in common if len({calls[r][s] for r in calls}) > 1)
    if len(set(counts.values())) == 1 and not differ:
        return None
    lines = ["ringflow: the ranks did not make the same collectives: " +
             ", ".join(f"rank {r} made {n}" for r, n in sorted(counts.items()))]
    if differ:
        s = differ[0]
        lines.append(f"  first difference seen at call #{s}: " + "; ".join(
            f"rank {r} called {describe(calls[r][s])}" for r in sorted(calls)))
    fewest = min(counts.values())
    for r in sorted(counts):
        extra = [describe(calls[r][s]) for s in sorted(calls[r]) if s >= fewest]
        if counts[r] > fewest:
            lines.append(f"  rank {r}'s calls beyond the {fewest} every rank made: "
                         + (", ".join(extra) or "(older than its last calls kept)"))
    lines.append("  every rank must issue the same collectives in the same order; look for a "
                 "branch on rank or on data that skips or adds a call")
    return "\n".join(lines)


def tally(comm, timeout: float) -> str | None:
    """Compare the ranks' calls (the world communicator, at shutdown) and print what differs:
    once, on rank 0, for the report every rank reached alike; on its own rank, for a rank that
    could not compare. Returns what it printed, or None. Skipped where a collective already
    failed (that failure said what went wrong)."""
    if comm.size == 1 or comm.engine.broken:
        return None
    try:
        report = compare(_exchange(comm, timeout))
        if comm.rank != 0:
            return None
    except (TransportError, RuntimeError) as e:
        report = (f"ringflow: rank {comm.rank} could not compare its {comm.seq} collectives with "
                  f"its peers at shutdown ({type(e).__name__}: {e}); a peer may have exited early")
    if report:
        print(report, file=sys.stderr, flush=True)
    return report
