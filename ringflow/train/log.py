"""Rank-0 duties in one place: the progress bar, printed lines and metrics.jsonl.

Rank 0 gets a real ``RunLog``; every other rank gets one whose methods do nothing, so the
training loop calls them unconditionally and only rank 0 speaks (other ranks' errors still
reach stderr through the exceptions themselves). Metrics are averaged over ranks first by
``reduce_metrics``, a collective every rank calls at the same step.

    log = RunLog(out_dir, comm, total=cfg.steps, start=step, log_every=cfg.log_every)
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


def print_every(total: int, log_every: int) -> int:
    """Steps between printed lines when there is no bar: a multiple of log_every giving about
    20 lines a run (3000 steps, --log-every 10: every 150)."""
    return log_every * max(1, total // log_every // 20)


def line(step: int, total: int, values: dict) -> str:
    """'step 150/3000: loss 0.4321, 791 img/s, lr 0.001' (and the skipped steps, if any)."""
    loss = f"{values['loss']:.4g}" if "loss" in values else "n/a (every step skipped)"
    text = f"step {step}/{total}: loss {loss}, {values.get('img_per_s', 0):.0f} img/s"
    if "lr" in values:
        text += f", lr {values['lr']:.3g}"
    if values.get("skipped_steps"):
        text += f", {values['skipped_steps']:.0f} non-finite step(s) skipped"
    return text


class RunLog:
    """Progress bar (on a terminal), console lines and metrics.jsonl; silent on ranks but 0.

    Where stderr is not a terminal (a log file, a pipe, a batch job) a bar would be one line
    growing by carriage returns, so every ``print_every`` steps and at the end a line says
    the step, loss, throughput and learning rate instead.
    """

    def __init__(self, out: Path, comm, total: int, start: int = 0, progress: bool = True,
                 log_every: int = 1):
        self.active, self.total = comm.rank == 0, total
        self.bar, self.file, self.every = None, None, print_every(total, log_every)
        if not self.active:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / "metrics.jsonl", "a")
        if progress and sys.stderr.isatty():
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
        if self.bar is not None:
            short = {k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "img_per_s", "lr")}
            self.bar.set_postfix(short, refresh=False)
        elif step % self.every == 0 or step == self.total:
            self.info(line(step, self.total, values))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()
