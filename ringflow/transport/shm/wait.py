"""The one wait of ringflow's transports: spin a little, then sleep, until a condition holds.

Every waiter (an MPI request or a CUDA event that can only be polled, a shared-memory
ring, a peer's stage or fingerprint) first spins, so that a message that lands within a
few hundred microseconds is seen at once (a sleep costs 60 us or more of timer slack,
which alone doubled small all-reduces over MPI). After the spin it sleeps, so that ranks
outnumbering cores leave the CPU to the peer they are waiting for: on this rank's
doorbell where peers ring one after they publish (``Bell``, shared memory; see segment),
else in naps doubling from 10 us to 1 ms (``Backoff``). (The local transport's threads
wait on a condition variable instead: their sends notify it.)

How long to spin is $RINGFLOW_SPIN_US, else a default each transport picks for its
situation (``spin_seconds``).

    wait_until(request.Test, timeout=30, peer=1, what="receive from rank 1", spin=2e-3)
    wait_until(ready, 30, peer, what, spin, sleep=Bell(own_segment), check=peer_alive)
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

from ... import settings
from ..base import PeerTimeout
from .segment import fence

SPIN_SECONDS = 50e-6      # poll flat out this long first when ranks outnumber cores
FIRST_SLEEP = 10e-6
MAX_SLEEP = 1e-3
BELL_NAP = 0.02           # bound on one doorbell sleep (liveness checks, lost wake-ups)
CHECK_EVERY = 0.1         # how often a sleeping waiter asks whether its peer still lives


def affinity() -> list[int]:
    """The CPUs this process may run on (what a launcher's binding left it)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cores() -> int:
    """How many CPUs this process may run on."""
    return len(affinity())


def spin_seconds(default_us: float) -> float:
    """How long a waiter spins, in seconds: $RINGFLOW_SPIN_US, else ``default_us`` (the
    transport's own: ``node_spin_us`` for MPI and beside MPI, node.BESIDE_SPIN_US beside gloo, see
    ShmTransport for shm)."""
    us = settings.get("RINGFLOW_SPIN_US")
    return (default_us if us is None else us) * 1e-6


def node_spin_us(local_ranks: int, node_cpus: int | None = None) -> float:
    """2 ms while the node's ranks have a core each, else 50 us. ``node_cpus``: the CPUs the
    node's ranks may use together (mpirun binds each rank to one core, so this process's own
    affinity undercounts them)."""
    return 2000.0 if local_ranks <= (node_cpus or cores()) else SPIN_SECONDS * 1e6


def wait_until(done: Callable[[], bool], timeout: float | None, peer: int, what,
               spin: float = SPIN_SECONDS, *, sleep=None, check: Callable[[], None] | None = None,
               check_every: float = CHECK_EVERY, spin_yield: bool = True) -> None:
    """Poll ``done()`` until it is true; raise PeerTimeout(peer) after ``timeout`` seconds.

    Spins ``spin`` seconds (yielding the core on every pass when ``spin_yield``), then sleeps
    between looks (``sleep``: a Bell or, by default, a Backoff). After the spin, ``check()``
    (which raises once the peer is gone) runs every ``check_every`` seconds. ``what`` (a
    string, or a callable making one) names the wait in the error.
    """
    if done():
        return
    sleep = Backoff() if sleep is None else sleep
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    next_check = start + check_every
    while not sleep.look(done):
        now = time.monotonic()
        if now - start < spin:
            if spin_yield:
                os.sched_yield()      # a peer sharing this core runs first; else returns at once
            continue
        if deadline is not None and now >= deadline:
            raise PeerTimeout(f"{_text(what)} timed out after {timeout:.1f}s", peer)
        if check is not None and now >= next_check:
            check()
            next_check = now + check_every
        sleep.sleep(done, None if deadline is None else deadline - now)


class Backoff:
    """Naps doubling from 10 us to 1 ms: for a request that can only be polled."""

    def __init__(self):
        self.nap = FIRST_SLEEP

    def look(self, done: Callable[[], bool]) -> bool:
        return done()

    def sleep(self, done: Callable[[], bool], left: float | None) -> None:
        time.sleep(self.nap if left is None else max(0.0, min(self.nap, left)))
        self.nap = min(self.nap * 2, MAX_SLEEP)


class Bell:
    """Sleeps on ``segment``'s doorbell, which peers ring after they publish; one per wait
    (it holds the doorbell value its last look read).

    ``progress`` (called under ``lock``, True when it moved bytes) runs on every look and once
    more before sleeping: a look that moved something looks again at once (the shm
    transport's rings). ``lock`` also guards the count of this process's sleeping threads.
    """

    def __init__(self, segment, lock=None, progress: Callable[[], bool] | None = None):
        self.segment, self.progress = segment, progress
        self.lock = threading.Lock() if lock is None else lock
        self.seen = 0

    def look(self, done: Callable[[], bool]) -> bool:
        while not done():
            self.seen = self.segment.bell.value()   # read before looking, so no wake-up is lost
            if self.progress is None:
                return done()
            with self.lock:
                if not self.progress():
                    return done()
        return True

    def sleep(self, done: Callable[[], bool], left: float | None) -> None:
        """Announce the sleep, look once more (Dekker; see segment), then wait on the doorbell."""
        own = self.segment
        with self.lock:
            own.sleepers.value += 1
        try:                          # a look that raises (a closed transport) still counts down
            fence()
            with self.lock:
                ready = (self.progress is not None and self.progress()) or done()
            if not ready:
                own.bell.wait(self.seen, max(1e-4, BELL_NAP if left is None else
                                             min(BELL_NAP, left)))
        finally:
            with self.lock:
                own.sleepers.value -= 1


def _text(what) -> str:
    return what() if callable(what) else what
