"""Rank-0 duties in one place: the progress bar, printed lines and metrics.jsonl.

Rank 0 gets a real ``RunLog``; every other rank gets one whose methods do nothing, so the
training loop calls them unconditionally and only rank 0 speaks (other ranks' errors still
reach stderr through the exceptions themselves). Metrics are averaged over ranks first by
``reduce_metrics``, a collective every rank calls at the same step.

    log = RunLog(out_dir, comm, total=cfg.steps, start=step)
    log.metrics(step, reduce_metrics(comm, {"loss": loss_sum / n}))
    log.close()
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from .. import collectives as rc


def reduce_metrics(comm, values: dict[str, float]) -> dict[str, float]:
    """Collective: the mean of each value over ranks (keys in sorted order on every rank)."""
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=comm.device)
    rc.all_reduce(t, op=rc.ReduceOp.AVG, group=comm)
    return dict(zip(keys, t.tolist()))


class RunLog:
    """Progress bar, console lines and metrics.jsonl; silent on ranks other than 0."""

    def __init__(self, out: Path, comm, total: int, start: int = 0, progress: bool = True):
        self.active = comm.rank == 0
        self.bar, self.file = None, None
        if not self.active:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / "metrics.jsonl", "a")
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                            file=sys.stderr, smoothing=0.1)

    def info(self, text: str) -> None:
        if not self.active:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        """One line of metrics.jsonl; loss and throughput also on the bar (or printed)."""
        if not self.active:
            return
        row = {"step": step, "time": round(time.time(), 3), **values}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        short = {k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "img_per_s", "lr")}
        if self.bar is not None:
            self.bar.set_postfix(short, refresh=False)
        else:
            self.info(f"step {step}: " + ", ".join(f"{k}={v}" for k, v in short.items()))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()
