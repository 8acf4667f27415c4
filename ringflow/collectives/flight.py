"""The flight recorder: each rank's recent collectives, dumped when something goes wrong.

Every collective a Communicator runs is recorded (sequence number, name, size,
dtype, op, root, state, and the ring step and peer it last waited on). When a
collective times out or fails, the rank prints its recent calls to stderr and,
with ``RINGFLOW_FLIGHT_DIR=dir``, writes them to ``dir/flight-rank<R>.json``.
Comparing the dumps of all ranks shows which rank diverged first:

    python -m ringflow.collectives.flight /tmp/flight     # merged table + first divergence
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .. import settings
from .ops import ReduceOp


@dataclasses.dataclass
class CallRecord:
    """One entry of the flight recorder: what this rank was doing, and how it ended."""
    seq: int
    name: str
    numel: int
    dtype: str
    op: str
    root: int
    state: str = "queued"
    step: int = -1
    peer: int = -1
    started: float = 0.0
    stamp: tuple | None = None     # what its messages carry (stamp.py)

    def call(self) -> str:
        return f"{self.name}(numel={self.numel}, {self.dtype}, op={self.op}, root={self.root})"

    def where(self) -> str:
        """The wait this call is in (or ended in): ring step and the peer it waited for."""
        if self.peer < 0 or self.state == "done":
            return ""
        step = {-1: "fingerprint exchange", -2: "posting"}.get(self.step, f"step {self.step}")
        return f" at {step} waiting for rank {self.peer}"

    def line(self) -> str:
        return f"#{self.seq} {self.call()} {self.state}{self.where()}"


_DTYPE_NAMES: dict = {}
_OP_NAMES = {op: op.name.lower() for op in ReduceOp}


def _dtype_name(dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


def call_record(seq: int, name: str, tensor, op, root: int) -> CallRecord:
    """The record of collective ``seq`` on ``tensor`` (None: no data, as for barrier)."""
    return CallRecord(seq, name, tensor.numel() if tensor is not None else 0,
                      _dtype_name(tensor.dtype) if tensor is not None else "-",
                      _OP_NAMES.get(op) or getattr(op, "name", "-").lower(), root)


class FlightRecorder:
    """A bounded log of one communicator's collectives (oldest first)."""

    def __init__(self, rank: int, size: int, world_rank: int, capacity: int = 64):
        self.rank, self.size, self.world_rank = rank, size, world_rank
        self.records: collections.deque[CallRecord] = collections.deque(maxlen=capacity)

    def add(self, rec: CallRecord) -> None:
        self.records.append(rec)

    def text(self) -> str:
        head = f"ringflow rank {self.rank}/{self.size} recent collectives (oldest first):"
        return "\n".join([head] + ["  " + r.line() for r in self.records])

    def dump(self, file=None, why: str = "") -> str:
        """Print the log to ``file`` and, with RINGFLOW_FLIGHT_DIR set, write it as JSON there."""
        text = self.text()
        if file is not None:
            print(text, file=file, flush=True)
        folder = settings.get("RINGFLOW_FLIGHT_DIR")
        if folder:
            path = Path(folder) / f"flight-rank{self.world_rank}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"rank": self.world_rank, "why": why, "time": time.time(),
                                        "calls": [dataclasses.asdict(r) for r in self.records]}))
        return text


def first_divergence(calls_by_rank: dict[int, list[dict]]) -> str:
    """Name the first sequence number at which ranks disagree (different call, or missing/stuck)."""
    by_seq: dict[int, dict[int, str]] = {}
    for rank, calls in calls_by_rank.items():
        for c in calls:
            by_seq.setdefault(c["seq"], {})[rank] = CallRecord(**c).call() + " " + c["state"]
    ranks = sorted(calls_by_rank)
    for seq in sorted(by_seq):
        seen = by_seq[seq]
        states = {r: seen.get(r, "not reached") for r in ranks}
        if len(set(states.values())) > 1 or any("done" not in s for s in states.values()):
            groups: dict[str, list[int]] = {}
            for r, s in states.items():
                groups.setdefault(s, []).append(r)
            return f"first divergence at #{seq}: " + "; ".join(
                f"ranks {rs}: {s}" for s, rs in groups.items())
    return "no divergence: every rank completed the same calls"


def install_signal_dump(recorders, signum: int = signal.SIGTERM) -> bool:
    """On ``signum`` (a launcher stopping the job), print what this rank was doing, then die by it.

    Installed only from the main thread and only over the default handler; returns whether it was.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signum) is not signal.SIG_DFL:
        return False

    def handler(sig, _frame):
        for rec in recorders():
            running = [r for r in rec.records if r.state in ("running", "queued")]
            what = running[0].line() if running else "no collective running"
            print(f"ringflow rank {rec.rank}: stopped by signal {sig} (the launcher ends the job, "
                  f"usually because another rank failed; see its log) during {what}",
                  file=sys.stderr, flush=True)
            rec.dump(sys.stderr, why=f"signal {sig}")
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)

    signal.signal(signum, handler)
    return True


def main(argv: list[str] | None = None) -> int:
    folder = Path((argv or sys.argv[1:] or ["."])[0])
    dumps = {}
    for path in sorted(folder.glob("flight-rank*.json")):
        data = json.loads(path.read_text())
        dumps[data["rank"]] = data["calls"]
        print(f"rank {data['rank']} ({data['why']}):")
        for c in data["calls"]:
            print("  " + CallRecord(**c).line())
    if not dumps:
        print(f"no flight-rank*.json in {folder} (set RINGFLOW_FLIGHT_DIR when running)")
        return 1
    print(first_divergence(dumps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
