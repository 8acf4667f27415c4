"""A timeline of each rank's collectives: ``RINGFLOW_TRACE=dir`` writes a Chrome/Perfetto trace.

Each rank writes ``dir/trace-rank<R>.json`` (Chrome's "traceEvents" JSON, which
chrome://tracing and ui.perfetto.dev open) when its world communicator closes
(``ringflow.shutdown()``) and again at exit. It holds collective spans (name, #seq, bytes,
algorithm), ring steps and their slices (sends and receives posted, reductions), every wait
(the peer, how long), and DataParallel's buckets (ready, launched, done) over backward.

    RINGFLOW_TRACE=/tmp/tl torchrun --nproc_per_node=2 -m ringflow.train --steps 20 ...
    python -m ringflow.collectives.trace /tmp/tl     # -> /tmp/tl/trace.json, one row per rank

Clock: a rank's timestamps are ``time.perf_counter_ns()`` since its tracer started, and the
file records ``time.time_ns()`` at that start. The merge shifts each rank by its start's wall
clock minus the earliest rank's, so ranks line up as well as their wall clocks agree: on one
host, exactly; across hosts, to their NTP error (typically well under a millisecond).

Off (the default) a communicator holds ``NULL``, whose only attribute is ``on = False``: every
call site tests ``tracer.on`` before it builds an event, so the hot path pays one attribute
check per span and allocates nothing.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
import weakref
from pathlib import Path

from .. import settings

MAX_EVENTS = 1_000_000        # per rank (~150 MB of JSON): past it events are counted, not kept
MERGED = "trace.json"


class NullTracer:
    """The tracer when RINGFLOW_TRACE is unset. It has no span methods on purpose: a call site
    that forgot to test ``on`` fails in every test instead of costing time in production."""

    def __init__(self):
        self.on = False      # an instance attribute: Python 3.11 reads it faster than a class's

    def flush(self) -> None:
        pass


NULL = NullTracer()


class Tracer:
    """One rank's events, kept in memory and written as a whole by ``flush``; thread-safe (the
    communication thread and the caller's thread both record; tid is the OS thread id)."""

    def __init__(self, folder: str | os.PathLike, rank: int, size: int):
        self.on = True
        self.path = Path(folder) / f"trace-rank{rank}.json"
        self.rank, self.size = rank, size
        self.wall0, self.t0 = _anchor()
        self.events: list[dict] = []
        self.threads: dict[int, str] = {}
        self.dropped = 0
        self._lock = threading.Lock()
        _LIVE.add(self)

    def now(self) -> int:
        """A timestamp for ``complete`` (nanoseconds, this process's perf counter)."""
        return time.perf_counter_ns()

    def complete(self, name: str, start_ns: int, args: dict | None = None,
                 cat: str = "collective") -> None:
        """A span from ``start_ns`` (``now()``) to now on this thread."""
        end = time.perf_counter_ns()
        self._add({"name": name, "cat": cat, "ph": "X", "ts": self._us(start_ns),
                   "dur": (end - start_ns) / 1e3, "args": args or {}})

    def instant(self, name: str, args: dict | None = None, cat: str = "collective") -> None:
        """A point in time on this thread."""
        self._add({"name": name, "cat": cat, "ph": "i", "s": "t",
                   "ts": self._us(time.perf_counter_ns()), "args": args or {}})

    def async_span(self, phase: str, name: str, ident: int, cat: str,
                   args: dict | None = None) -> None:
        """Begin (``phase="b"``) or end (``"e"``) a span that may start and end on different
        threads (a bucket: ready on autograd's thread, done on the communication thread)."""
        self._add({"name": name, "cat": cat, "ph": phase, "id": ident,
                   "ts": self._us(time.perf_counter_ns()), "args": args or {}})

    def _us(self, ns: int) -> float:
        return (ns - self.t0) / 1e3          # microseconds since this tracer started

    def _add(self, event: dict) -> None:
        tid = threading.get_native_id()
        event["pid"], event["tid"] = self.rank, tid
        with self._lock:
            if tid not in self.threads:
                self.threads[tid] = threading.current_thread().name
            if len(self.events) < MAX_EVENTS:
                self.events.append(event)
            else:
                self.dropped += 1

    def document(self) -> dict:
        """This rank's trace as Chrome's JSON object (metadata rows first)."""
        with self._lock:
            events, threads, dropped = list(self.events), dict(self.threads), self.dropped
        meta = [_meta("process_name", self.rank, 0, {"name": f"rank {self.rank}"}),
                _meta("process_sort_index", self.rank, 0, {"sort_index": self.rank})]
        meta += [_meta("thread_name", self.rank, tid, {"name": name})
                 for tid, name in threads.items()]
        return {"traceEvents": meta + events, "displayTimeUnit": "ms",
                "otherData": {"rank": self.rank, "size": self.size, "wall_start_ns": self.wall0,
                              "clock": "us since wall_start_ns (perf_counter)",
                              "dropped_events": dropped}}

    def flush(self) -> None:
        """Write everything recorded so far (atomically: a reader never sees half a file)."""
        doc = self.document()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.path)
        if self.dropped:
            print(f"ringflow trace: rank {self.rank} kept the first {MAX_EVENTS} events and "
                  f"dropped {self.dropped}; trace a shorter run", file=sys.stderr, flush=True)


def _anchor(tries: int = 5) -> tuple[int, int]:
    """(time.time_ns(), perf_counter_ns()) read as nearly together as this process can: the
    wall clock between two perf reads, keeping the tightest of a few tries (a busy machine may
    preempt between two reads, and that gap would misalign this rank in the merge)."""
    best = None
    for _ in range(tries):
        before, wall, after = time.perf_counter_ns(), time.time_ns(), time.perf_counter_ns()
        if best is None or after - before < best[0]:
            best = (after - before, wall, (before + after) // 2)
    return best[1], best[2]


def _meta(name: str, pid: int, tid: int, args: dict) -> dict:
    return {"name": name, "ph": "M", "pid": pid, "tid": tid, "args": args}


# Live tracers, flushed at exit (a script that never calls shutdown still leaves its trace);
# weak, so a test's finished ranks do not write into a folder that is gone.
_LIVE: "weakref.WeakSet[Tracer]" = weakref.WeakSet()
# One tracer per transport (one file per world rank), as the engine is per transport.
_TRACERS: "weakref.WeakKeyDictionary[object, Tracer]" = weakref.WeakKeyDictionary()


def timed_collective(comm, execute, rec, tensor, algorithm: str):
    """``execute`` (Communicator.run's) recording the collective's span when it runs, and how long
    it waited in the engine's queue since now, the call."""
    tracer, called = comm.tracer, comm.tracer.now()
    nbytes = tensor.numel() * tensor.element_size() if tensor is not None else 0

    def timed() -> None:
        t0 = tracer.now()
        try:
            execute()
        finally:
            args = {"seq": rec.seq, "bytes": nbytes, "numel": rec.numel, "dtype": rec.dtype,
                    "op": rec.op, "algorithm": algorithm, "state": rec.state,
                    "queued_us": (t0 - called) / 1e3}
            if rec.root >= 0:
                args["root"] = rec.root
            if not comm.is_world:
                args["group"] = comm.ranks
            tracer.complete(f"{rec.name} #{rec.seq}", t0, args)
    return timed


def tracer_for(transport) -> Tracer | NullTracer:
    """The tracer of ``transport``'s rank: ``NULL`` unless RINGFLOW_TRACE names a folder."""
    folder = settings.get("RINGFLOW_TRACE")
    if not folder:
        return NULL
    tracer = _TRACERS.get(transport)
    if tracer is None:
        tracer = _TRACERS[transport] = Tracer(folder, transport.rank, transport.size)
    return tracer


@atexit.register
def _flush_all() -> None:
    for tracer in list(_LIVE):
        try:
            tracer.flush()
        except OSError as e:        # a folder removed under us must not fail the exit
            print(f"ringflow trace: could not write {tracer.path}: {e}", file=sys.stderr)


# ---- merging ranks ------------------------------------------------------------------------
def merge(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Merge ``folder/trace-rank*.json`` into one trace (``folder/trace.json`` by default): one
    process row per rank, each shifted by its wall-clock start minus the earliest rank's."""
    folder = Path(folder)
    docs = [json.loads(p.read_text()) for p in sorted(folder.glob("trace-rank*.json"))]
    if not docs:
        raise FileNotFoundError(f"no trace-rank*.json in {folder}: run with RINGFLOW_TRACE="
                                f"{folder} and let the ranks reach ringflow.shutdown() or exit")
    ranks = [d["otherData"]["rank"] for d in docs]
    if len(set(ranks)) != len(ranks):
        raise ValueError(f"ranks {sorted(ranks)} appear twice in {folder}; one run per folder")
    start = min(d["otherData"]["wall_start_ns"] for d in docs)
    events = []
    for d in docs:
        shift = (d["otherData"]["wall_start_ns"] - start) / 1e3
        for e in d["traceEvents"]:
            if "ts" in e:
                e["ts"] += shift
            events.append(e)
    path = Path(out) if out is not None else folder / MERGED
    path.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms", "otherData": {
        "ranks": sorted(ranks), "wall_start_ns": start,
        "clock": "ranks aligned by their time.time_ns() at tracer start"}}))
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2) or args[0].startswith("-"):
        print("usage: python -m ringflow.collectives.trace DIR [OUT.json]  (DIR: what "
              "RINGFLOW_TRACE named)", file=sys.stderr)
        return 2
    try:
        path = merge(*args)
    except (FileNotFoundError, ValueError) as e:
        print(f"ringflow trace: {e}", file=sys.stderr)
        return 1
    print(f"{path}: open it in https://ui.perfetto.dev or chrome://tracing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
