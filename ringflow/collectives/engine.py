"""Runs collectives one at a time per transport, inline or on a background thread.

``async_op=True`` queues the collective on the transport's single worker thread
and returns a Work; a synchronous call runs inline unless async work is still
queued, in which case it queues behind it. Either way collectives start in the
order the user issued them, which every rank must share.
"""
from __future__ import annotations

import queue
import threading
import weakref
from typing import Callable

_inside = threading.local()   # set while this thread executes a collective (nested calls run inline)


class CollectiveWork:
    """Handle of an async collective, torch.distributed style: ``wait()``, ``is_completed()``."""

    def __init__(self, name: str):
        self.name = name
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._callbacks: list[Callable[["CollectiveWork"], None]] = []
        self._lock = threading.Lock()

    def _finish(self, error: BaseException | None) -> None:
        with self._lock:
            self._error = error
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self)

    def add_done_callback(self, cb: Callable[["CollectiveWork"], None]) -> None:
        """Call ``cb(work)`` once finished (immediately if it already is)."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(cb)
                return
        cb(self)

    def is_completed(self) -> bool:
        return self._done.is_set()

    def exception(self) -> BaseException | None:
        return self._error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the collective ends; re-raise its error on this thread."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.name} did not finish within {timeout}s")
        if self._error is not None:
            raise self._error
        return True


class Engine:
    """The ordered executor of one transport."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._exec = threading.Lock()
        self._thread: threading.Thread | None = None
        self.broken: str | None = None     # set by a failed collective: later ones are refused

    def run(self, name: str, job: Callable[[], None]) -> None:
        """Run ``job`` now, after any queued async work."""
        if getattr(_inside, "active", False):
            job()
            return
        # read without the lock: only the issuing thread raises it (submit), so a 0 read here
        # stays 0 until this thread submits; the lock cost as much as a small MPI call
        if self._pending:
            self.submit(name, job).wait()
            return
        with self._exec:
            self._execute(job)

    def submit(self, name: str, job: Callable[[], None]) -> CollectiveWork:
        """Queue ``job`` on the worker thread; returns its Work."""
        work = CollectiveWork(name)
        with self._cond:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ringflow-comm", daemon=True)
                self._thread.start()
        self._queue.put((job, work))
        return work

    def _execute(self, job: Callable[[], None]) -> None:
        _inside.active = True
        try:
            job()
        finally:
            _inside.active = False

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, work = item
            error = None
            try:
                with self._exec:
                    self._execute(job)
            except BaseException as e:  # noqa: BLE001 - handed to the waiter
                error = e
            with self._cond:
                self._pending -= 1
            work._finish(error)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None


# One engine per transport, dropped with it (keyed weakly: a new transport never inherits the
# engine, or the failure mark, of a dead one that happened to share its id).
_ENGINES: "weakref.WeakKeyDictionary[object, Engine]" = weakref.WeakKeyDictionary()


def engine_for(transport) -> Engine:
    """The engine of ``transport``, shared by every communicator over it."""
    return _ENGINES.setdefault(transport, Engine())


def close_engine(transport) -> None:
    """Stop the background thread of ``transport``'s engine (a later engine_for makes a new one)."""
    engine = _ENGINES.pop(transport, None)
    if engine is not None:
        engine.close()
