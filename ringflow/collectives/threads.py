"""Run N ranks as threads of this process, each with its own Communicator (fast tests).

    from ringflow.collectives.threads import run_ranks
    sums = run_ranks(3, lambda comm: rc.all_reduce(torch.ones(4), group=comm))

Fault tests need every rank's outcome, and a rank that dies without telling its peers
(as a killed process would): it raises ``Vanish``.

    outs = run_ranks(3, body, timeout=1.0, outcomes=True)
    assert all(o.error is not None for o in outs if not o.vanished)
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

from ..transport.local import LocalTransport
from .communicator import Communicator


class Vanish(BaseException):
    """Raised in a thread-rank to leave silently, like a killed process: peers are not told."""


@dataclasses.dataclass
class Outcome:
    """How one thread-rank ended: its value or its error, and when (seconds after the start)."""
    rank: int
    value: Any = None
    error: BaseException | None = None
    vanished: bool = False
    seconds: float = 0.0


def run_ranks(size: int, fn: Callable[[Any], Any], timeout: float = 60.0, outcomes: bool = False,
              **comm_kwargs) -> list:
    """Run ``fn(comm)`` on ``size`` threads, one Communicator each; return the results.

    The first exception raised by any rank is re-raised here (after all threads end).
    With ``outcomes=True`` nothing is re-raised: each rank's :class:`Outcome` is returned.
    """
    outs = _run(size, fn, timeout, comm_kwargs)
    if outcomes:
        return outs
    for o in outs:
        if o.error is not None:
            raise o.error
    return [o.value for o in outs]


def _run(size: int, fn: Callable[[Any], Any], timeout: float, comm_kwargs: dict) -> list[Outcome]:
    transports = LocalTransport.group(size)
    outs = [Outcome(r) for r in range(size)]
    start = time.monotonic()

    def body(r: int) -> None:
        comm = Communicator(transports[r], timeout=timeout, **comm_kwargs)
        try:
            outs[r].value = fn(comm)
        except Vanish:
            outs[r].vanished = True             # no mark_failed: peers find out by timing out
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            outs[r].error = e
            transports[r].mark_failed(f"{type(e).__name__}: {e}")   # a process would exit here
        finally:
            outs[r].seconds = time.monotonic() - start
            comm.close()

    # daemon: a rank that hangs must not keep the interpreter alive after the TimeoutError
    threads = [threading.Thread(target=body, args=(r,), name=f"local-rank{r}", daemon=True)
               for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
        if t.is_alive():
            raise TimeoutError(f"{t.name} still running {timeout + 30:.0f}s after start")
    return outs
