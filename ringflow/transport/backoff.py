"""Waiting on a request that can only be polled (MPI requests, CUDA events), without burning a core.

A short spin keeps latency low when the peer is about to answer; after it the
poller sleeps, doubling from 10 µs to 1 ms, so that ranks outnumbering cores
leave the CPU to the peer they are waiting for.

    wait_until(request.Test, timeout=30, peer=1, what="receive from rank 1")
"""
from __future__ import annotations

import time
from typing import Callable

from .base import PeerTimeout

SPIN_SECONDS = 50e-6      # poll flat out this long first (a few MPI progress calls)
FIRST_SLEEP = 10e-6
MAX_SLEEP = 1e-3


def wait_until(done: Callable[[], bool], timeout: float | None, peer: int, what: str) -> None:
    """Poll ``done()`` until it is true; raise PeerTimeout(peer) after ``timeout`` seconds."""
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    spin_end = start + SPIN_SECONDS
    nap = FIRST_SLEEP
    while not done():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise PeerTimeout(f"{what} timed out after {timeout:.1f}s", peer)
        if now < spin_end:
            continue
        time.sleep(nap if deadline is None else max(0.0, min(nap, deadline - now)))
        nap = min(nap * 2, MAX_SLEEP)
