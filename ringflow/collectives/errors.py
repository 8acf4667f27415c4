"""Errors a collective raises; each names the collective, its sequence number and the peer."""
from __future__ import annotations


class CollectiveError(RuntimeError):
    """A collective failed on this rank (peer gone, timeout, mismatch, bad transport state)."""


class CollectiveTimeout(CollectiveError):
    """A collective waited on a peer for longer than the communicator's timeout."""

    def __init__(self, message: str, peer: int | None = None, step: int | None = None):
        super().__init__(message)
        self.peer, self.step = peer, step


class CollectiveMismatch(CollectiveError):
    """Ranks called different collectives (name, size, dtype, op or root) at the same point."""
