"""Waiting on a request that can only be polled (MPI requests, CUDA events), without burning a core.

The poller first spins, yielding the CPU on every pass: while every rank of the node
has a core of its own (``spin_seconds``) that lasts 2 ms, so a message that lands
within a few hundred microseconds is seen at once (a sleep costs 60 us or more of
timer slack, which alone doubled small all-reduces over MPI). After the spin it
sleeps, doubling from 10 us to 1 ms, so that ranks outnumbering cores leave the CPU
to the peer they are waiting for.

    wait_until(request.Test, timeout=30, peer=1, what="receive from rank 1", spin=2e-3)
"""
from __future__ import annotations

import os
import time
from typing import Callable

from ..base import PeerTimeout

SPIN_SECONDS = 50e-6      # poll flat out this long first when ranks outnumber cores
FIRST_SLEEP = 10e-6
MAX_SLEEP = 1e-3


def affinity() -> list[int]:
    """The CPUs this process may run on (what a launcher's binding left it)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cores() -> int:
    """How many CPUs this process may run on."""
    return len(affinity())


def spin_seconds(local_ranks: int, node_cpus: int | None = None) -> float:
    """How long a waiter spins: $RINGFLOW_SPIN_US, else 2 ms while the node's ranks have a core
    each, else 50 us. ``node_cpus``: the CPUs the node's ranks may use together (mpirun binds
    each rank to one core, so this process's own affinity undercounts them)."""
    default = 2000.0 if local_ranks <= (node_cpus or cores()) else SPIN_SECONDS * 1e6
    return float(os.environ.get("RINGFLOW_SPIN_US", default)) * 1e-6


def wait_until(done: Callable[[], bool], timeout: float | None, peer: int, what: str,
               spin: float = SPIN_SECONDS) -> None:
    """Poll ``done()`` until it is true; raise PeerTimeout(peer) after ``timeout`` seconds."""
    if done():
        return
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    spin_end = start + spin
    nap = FIRST_SLEEP
    while not done():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise PeerTimeout(f"{what} timed out after {timeout:.1f}s", peer)
        if now < spin_end:
            os.sched_yield()          # a peer sharing this core runs first; else returns at once
            continue
        time.sleep(nap if deadline is None else max(0.0, min(nap, deadline - now)))
        nap = min(nap * 2, MAX_SLEEP)
