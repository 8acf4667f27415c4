"""Run ranks as threads and keep every rank's outcome (result or error, and when it ended).

``run_ranks`` re-raises the first error; fault tests need all of them, and a rank
that "dies" must leave without telling its peers (like a killed process).

    outs = run_world(3, body, timeout=1.0)      # body(comm) -> value
    assert all(o.error is not None for o in outs if not o.vanished)
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable

from ringflow.collectives.communicator import Communicator
from ringflow.transport.local import LocalTransport
from tests.workers.faults_inject import Vanish


@dataclasses.dataclass
class Outcome:
    rank: int
    value: Any = None
    error: BaseException | None = None
    vanished: bool = False
    seconds: float = 0.0


def run_world(size: int, body: Callable[[Communicator], Any], timeout: float,
              debug: bool = False, join: float = 30.0) -> list[Outcome]:
    """Run ``body(comm)`` on ``size`` thread-ranks; a rank raising Vanish leaves silently."""
    transports = LocalTransport.group(size)
    outs = [Outcome(r) for r in range(size)]
    start = time.monotonic()

    def run(r: int) -> None:
        comm = Communicator(transports[r], timeout=timeout, debug=debug)
        try:
            outs[r].value = body(comm)
        except Vanish:
            outs[r].vanished = True
        except BaseException as e:  # noqa: BLE001 - inspected by the test
            outs[r].error = e
            transports[r].mark_failed(f"{type(e).__name__}")   # a process would exit here
        finally:
            outs[r].seconds = time.monotonic() - start
            comm.close()

    threads = [threading.Thread(target=run, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join)
        assert not t.is_alive(), f"a rank hung for {join}s (timeout was {timeout}s)"
    return outs
