"""The Work that torch.distributed gets back from the ringflow process group.

torch turns a future into a Work with ``_create_work_from_future``, but that Work swallows errors:
its ``wait()`` returns True after a failed collective. This one keeps ringflow's error and raises
it from ``wait()`` and through ``get_future()``, so a timeout naming the peer or a
CollectiveMismatch reaches the user with ringflow's message.

    work = BackendWork.of(comm.run("all_reduce", job, async_op=True), result=[tensor])
    work.get_future().wait()        # -> [tensor], or ringflow's error
    BackendWork.done([tensor])      # a call that ran inline: nothing to wait for
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.futures import Future


class BackendWork(dist.distributed_c10d.Work):
    """A collective queued on ringflow's engine; done when the engine's CollectiveWork is."""

    def __init__(self, future: Future | None, source: int = -1, result=None):
        super().__init__()
        self._future = future        # None: done, yielding ``result`` (made into a future if asked)
        self._result = result
        self._source = source        # recv from any source: the rank the message came from

    @classmethod
    def of(cls, work, result, source: int = -1) -> "BackendWork":
        """Wrap ringflow's CollectiveWork (None: already done); the future yields ``result``
        (DDP's reducer reads the reduced bucket from it: a list of tensors)."""
        if work is None:
            return cls(None, source, result)
        future = Future()

        def settle(done) -> None:
            error = done.exception()
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        work.add_done_callback(settle)
        return cls(future, source)

    @classmethod
    def done(cls, result) -> "BackendWork":
        """A call that already ran (inline, on the caller's thread). Cheap on purpose: torch's
        blocking verbs make one per call and only wait() on it, so no Future is built unless
        get_future() asks (that costs microseconds a call, a tenth of a small all_reduce)."""
        return cls(None, -1, result)

    def wait(self, timeout=None) -> bool:
        """Block until the collective ends; raise ringflow's error if it failed."""
        if self._future is not None:
            self._future.wait()      # re-raises what set_exception stored
        return True

    def get_future(self) -> Future:
        if self._future is None:
            self._future = Future()
            self._future.set_result(self._result)
        return self._future

    def is_completed(self) -> bool:
        return self._future is None or self._future.done()

    def is_success(self) -> bool:
        return self.is_completed() and self.exception() is None

    def exception(self):
        if self._future is None or not self._future.done():
            return None
        try:
            self._future.value()
        except Exception as e:      # noqa: BLE001 - reported, not handled
            return e
        return None

    def result(self) -> list[torch.Tensor]:
        self.wait()
        return self.get_future().value()

    def source_rank(self) -> int:
        if self._source < 0:
            raise RuntimeError("source_rank() is only known for a recv from any source")
        return self._source

    def _source_rank(self) -> int:
        """The name torch's dist.recv calls (the C++ Work's would not see ``_source``)."""
        return self.source_rank()

    def synchronize(self) -> None:
        self.wait()
