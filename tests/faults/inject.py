"""Fault injection at an exact point of a collective: (sequence number, ring step) on one rank.

The hook wraps ``Communicator.wait`` (the one place every algorithm blocks), so the same
injection works for ring, tree, two-level and naive algorithms and for every transport;
``killin`` (a watcher thread) covers the backends' own collectives, which never wait there.

    inject(comm, Fault("kill", seq=3, step=1))     # SIGKILL this process at all_reduce #3, step 1
    inject(comm, Fault("stall", seq=3, step=0, seconds=10))
    inject(comm, Fault("killin", seq=3, seconds=0.001))   # any algorithm: a watcher thread kills
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import weakref

from ringflow.collectives.threads import Vanish


@dataclasses.dataclass
class Fault:
    kind: str            # kill | killin | vanish | stall | slow
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


_ARMED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # communicator -> Fault


def _install() -> None:
    """Wrap Communicator.wait once per process; sub-groups an algorithm drives (two-level) count
    as their parent, so a fault at (seq, step) fires whichever group is waiting."""
    from ringflow.collectives.communicator import Communicator
    if getattr(Communicator.wait, "faults_wrapped", False):
        return
    real = Communicator.wait

    def wait(self, work, peer, step=0):
        owner = self._owner()
        fault = _ARMED.get(owner)
        if fault is not None and fault.due(owner, step):
            fault.fire()
        return real(self, work, peer, step)

    wait.faults_wrapped = True
    Communicator.wait = wait


def inject(comm, fault: Fault | None):
    """Make ``comm`` suffer ``fault`` when it reaches it; returns ``comm`` (None: no fault)."""
    if fault is None:
        return comm
    if fault.kind == "killin":       # algorithms that never call comm.wait (the backend's own)
        threading.Thread(target=_kill_inside, args=(comm, fault), daemon=True).start()
        return comm
    _install()
    _ARMED[comm] = fault
    return comm


def _kill_inside(comm, fault: Fault) -> None:
    """SIGKILL this process ``fault.seconds`` after collective ``fault.seq`` is issued."""
    while comm.seq <= fault.seq:      # collective #seq has been issued (a fast one may be over)
        time.sleep(0.0005)
    time.sleep(fault.seconds)
    os.kill(os.getpid(), signal.SIGKILL)


def parse(spec: str) -> Fault | None:
    """``kind:seq:step[:seconds]`` (from a worker's command line); "none" for no fault."""
    if spec in ("", "none"):
        return None
    kind, seq, step, *rest = spec.split(":")
    return Fault(kind, int(seq), int(step), float(rest[0]) if rest else 0.0)
