"""Pure index math of the ring: how a buffer splits into chunks and slices.

A buffer of ``numel`` elements is cut into ``parts`` chunks whose sizes differ
by at most one (the first ``numel % parts`` chunks get the extra element), so any
numel works, including 0 and numel < parts.
"""
from __future__ import annotations


def chunk_bounds(numel: int, parts: int) -> list[tuple[int, int]]:
    """[(start, stop)] of ``parts`` near-equal chunks covering range(numel)."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    base, extra = divmod(numel, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def piece_bounds(numel: int, per: int) -> list[tuple[int, int]]:
    """[(start, stop)] of consecutive pieces of ``per`` elements (the last may be shorter)
    covering range(numel); one empty piece when numel is 0."""
    if per < 1:
        raise ValueError(f"per must be >= 1, got {per}")
    return [(a, min(a + per, numel)) for a in range(0, numel, per)] or [(0, 0)]


def reduce_scatter_chunks(rank: int, size: int, step: int) -> tuple[int, int]:
    """(chunk sent, chunk received) by ``rank`` at ring reduce-scatter ``step``.

    Rank r sends to r+1 and receives from r-1. The schedule is shifted so that
    after size-1 steps rank r holds the full reduction of chunk r (the layout
    torch's reduce_scatter_tensor promises).
    """
    return (rank - step - 1) % size, (rank - step - 2) % size


def all_gather_chunks(rank: int, size: int, step: int) -> tuple[int, int]:
    """(chunk sent, chunk received) by ``rank`` at ring all-gather ``step``; rank r starts owning chunk r."""
    return (rank - step) % size, (rank - step - 1) % size
