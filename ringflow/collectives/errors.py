"""Errors a collective raises; each names the collective, its sequence number and the peer."""
from __future__ import annotations

import sys


class CollectiveError(RuntimeError):
    """A collective failed on this rank (peer gone, timeout, mismatch, bad transport state)."""


class CollectiveTimeout(CollectiveError):
    """A collective waited on a peer for longer than the communicator's timeout."""

    def __init__(self, message: str, peer: int | None = None, step: int | None = None):
        super().__init__(message)
        self.peer, self.step = peer, step


class CollectiveMismatch(CollectiveError):
    """Ranks called different collectives (name, size, dtype, op or root) at the same point."""


_WHERE = {-1: "in the debug fingerprint exchange", -2: "while posting a message",
          -3: "inside the backend's own collective"}


def where(step: int) -> str:
    """Where in a collective a wait was: a ring step, or one of the waits outside the steps."""
    return _WHERE.get(step, f"at step {step}")


def peer_failure(rank: int, call: str, what: str, step: int, peer: int, world_peer: int,
                 transport: str) -> str:
    """The message of a wait or post that failed: which call, where, on whom, and what to do."""
    whom = (f"waiting for rank {peer} (world rank {world_peer}, " if peer >= 0 else
            "(the backend does not say which rank it waited for; ")
    return (f"rank {rank}: {call} {what} {where(step)} {whom}"
            f"transport {transport}). That rank died, stalled or "
            "called a different collective: read its log and the flight recorder below; if it "
            "is only slow, raise the timeout (RINGFLOW_TIMEOUT or ringflow.init(timeout=...))")


def refused(rank: int, call: str, broken: str) -> str:
    """The message of a collective refused because an earlier one failed on this transport."""
    return (f"rank {rank}: {call} not started: an earlier collective failed "
            f"({broken}) and may have left messages half-delivered, so this transport cannot "
            "be used again. Restart the job (torchrun --max-restarts resumes from the last "
            "checkpoint)")


def failure(comm, cls, what: str, peer: int, step: int, cause: Exception) -> CollectiveError:
    """The error for a wait or post of ``comm`` that failed (``peer``: group rank, -1 unknown):
    recorded in the flight recorder (printed), and the transport marked unusable, since
    half-delivered messages may be left in flight."""
    owner = comm._owner()
    rec = owner.current
    name = f"{rec.name} #{rec.seq}" if rec else "point-to-point"
    if owner is not comm:
        name += f" (in its sub-group of ranks {comm.ranks}, as rank {comm.rank})"
    world_peer = comm.ranks[peer] if peer >= 0 else -1
    msg = peer_failure(owner.rank, name, what, step, peer, world_peer, comm.transport.name)
    if rec is not None:
        rec.state = "timed out" if cls is CollectiveTimeout else "failed"
        rec.step, rec.peer = step, world_peer
    for c in {comm, owner}:
        c.engine.broken = c.engine.broken or f"{name} on rank {owner.rank}: {what} {where(step)}"
    owner.recorder.dump(sys.stderr, why=msg)
    err = cls(msg, peer=peer, step=step) if cls is CollectiveTimeout else cls(msg)
    err.__cause__ = cause
    return err
