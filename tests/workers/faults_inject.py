"""Fault injection at an exact point of a collective: (sequence number, ring step) on one rank.

The hook wraps ``comm.wait`` (the one place every algorithm blocks), so the same
injection works for ring, tree and naive algorithms and for every transport.

    inject(comm, Fault("kill", seq=3, step=1))     # SIGKILL this process at all_reduce #3, step 1
    inject(comm, Fault("stall", seq=3, step=0, seconds=10))
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time


class Vanish(BaseException):
    """Raised in a thread-rank to make it leave silently, like a killed process (local transport)."""


@dataclasses.dataclass
class Fault:
    kind: str            # kill | vanish | stall | slow
    seq: int = 0         # which collective (the communicator's sequence number)
    step: int = 0        # first wait at this ring step or later (-1: the fingerprint exchange)
    seconds: float = 0.0  # stall / slow: how long to sleep
    fired: bool = False

    def due(self, comm, step: int) -> bool:
        rec = comm.current
        if rec is None or rec.seq != self.seq or step < self.step:
            return False
        return self.kind == "slow" or not self.fired

    def fire(self) -> None:
        self.fired = True
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif self.kind == "vanish":
            raise Vanish()
        elif self.kind in ("stall", "slow"):
            time.sleep(self.seconds)
        else:
            raise ValueError(f"unknown fault kind {self.kind!r}; use kill, vanish, stall or slow")


def inject(comm, fault: Fault | None):
    """Make ``comm`` suffer ``fault`` when it reaches it; returns ``comm`` (None: no fault)."""
    if fault is None:
        return comm
    real = comm.wait

    def wait(work, peer, step=0):
        if fault.due(comm, step):
            fault.fire()
        return real(work, peer, step)

    comm.wait = wait
    return comm


def parse(spec: str) -> Fault | None:
    """``kind:seq:step[:seconds]`` (from a worker's command line); "none" for no fault."""
    if spec in ("", "none"):
        return None
    kind, seq, step, *rest = spec.split(":")
    return Fault(kind, int(seq), int(step), float(rest[0]) if rest else 0.0)
