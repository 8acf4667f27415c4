"""Run N ranks as threads of this process, each with its own Communicator (fast tests).

    from ringflow.collectives.threads import run_ranks
    sums = run_ranks(3, lambda comm: rc.all_reduce(torch.ones(4), group=comm))
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from ..transport.local import LocalTransport
from .communicator import Communicator


def run_ranks(size: int, fn: Callable[[Any], Any], timeout: float = 60.0, **comm_kwargs) -> list:
    """Run ``fn(comm)`` on ``size`` threads, one Communicator each; return the results.

    The first exception raised by any rank is re-raised here (after all threads end).
    """
    transports = LocalTransport.group(size)
    results: list = [None] * size
    errors: list = [None] * size

    def body(r: int) -> None:
        comm = Communicator(transports[r], timeout=timeout, **comm_kwargs)
        try:
            results[r] = fn(comm)
        except BaseException as e:  # noqa: BLE001 - reported to the caller below
            errors[r] = e
            transports[r].mark_failed(f"{type(e).__name__}: {e}")
        finally:
            comm.close()

    threads = [threading.Thread(target=body, args=(r,), name=f"local-rank{r}") for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 30)
        if t.is_alive():
            raise TimeoutError(f"{t.name} still running {timeout + 30:.0f}s after start")
    for e in errors:
        if e is not None:
            raise e
    return results
