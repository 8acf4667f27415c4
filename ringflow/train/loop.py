"""``python -m ringflow.train``: a list of build_* calls and a loop of a page.

    torchrun --nproc_per_node=2 -m ringflow.train --preset digits-dit --out runs/digits-dit
    mpirun -np 2 python -m ringflow.train --out runs/digits-dit      # same run, MPI transport
    python -m ringflow.train --steps 200 --out runs/one-rank          # a world of one

Everything is checked before the process group starts (config, data, network). Each step
every rank draws its own slice of the global batch (``sampler``) and its own noise (a
generator seeded per rank); gradients meet through ``--parallel`` (``build``). Rank 0 alone
writes (``log``); sampling (``generate``) and checkpoints (``resume``) involve every rank. See
``config`` for flags.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch

from .. import runtime
from ..launch import read_launch_env
from ..parallel.sampler import SEED_STRIDE, ShardedBatches
from . import checkpoint as ckpt
from . import checks, config, latent, plots
from .build import (LossModule, build_autocast, build_data, build_network, build_objective,
                    build_parallel, start)
from .ema import EMA
from .sharded import ShardedEMA
from .standardize import Standardized
from .generate import grid_labels, sample_sharded
from .log import RunLog, reduce_metrics
from .resume import (check_config, checkpoint_files, find_checkpoint, restore_model,
                     restore_rest, truncate_metrics)


@dataclasses.dataclass
class Run:
    """Everything the loop touches; built once by ``build_run``."""
    cfg: config.TrainConfig
    comm: object
    device: torch.device
    x: torch.Tensor                 # the whole dataset (N, ...) on the device
    y: torch.Tensor | None          # labels (N,) or None (unconditional)
    num_classes: int
    net: torch.nn.Module            # the bare network (saved, sampled through EMA)
    objective: object
    model: torch.nn.Module          # LossModule wrapped by the parallel strategy
    opt: object
    clip: object                    # clip(max_norm) -> global grad norm (tensor)
    ema: EMA
    batches: ShardedBatches
    gen: torch.Generator            # this rank's noise
    log: RunLog
    step: int = 0
    nonfinite: int = 0              # steps in a row whose gradient was not finite
    last_finite: tuple | None = None   # (step, this rank's loss tensor) of the last good step
    resumed_at: list = dataclasses.field(default_factory=list)   # steps resumed from (loss.png)
    space: object = None    # --latent (LatentSpace) or --standardize: x is encoded; samples decoded


class Diverged(FloatingPointError):
    """--max-nonfinite-steps steps in a row had a non-finite loss or gradient: the run stops."""


def build_run(cfg, comm, device, data, net, objective, space=None) -> Run:
    x, y, num_classes = data
    found = find_checkpoint(cfg, comm)
    if found is not None:
        check_config(found, cfg)                      # another model's weights: refuse
        restore_model(found, net)                     # before wrapping: every rank loads it
    net.to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed * SEED_STRIDE + 1 + comm.rank)
    ema = EMA(net, cfg.ema_decay, cfg.ema_warmup)     # before wrapping (fsdp frees the net)
    model, opt, clip = build_parallel(cfg, LossModule(net, objective, gen), comm, device)
    if cfg.parallel == "fsdp":
        ema = ShardedEMA(ema, model)
    run = Run(cfg, comm, device, x.to(device), None if y is None else y.to(device), num_classes,
              net, objective, model, opt, clip, ema,
              ShardedBatches(len(x), cfg.batch_size, comm.rank, comm.size, cfg.seed), gen,
              log=None, space=space)
    if found is not None:
        restore_rest(found, run)
    elif comm.rank == 0:   # a restart before the first checkpoint starts over: so does the log
        truncate_metrics(Path(cfg.out) / "metrics.jsonl", 0)
    run.log = RunLog(Path(cfg.out), comm, cfg.steps, run.step, cfg.progress, cfg.log_every)
    if found is not None:
        run.log.info(f"resumed from {found} at step {run.step}")
    return run


def learning_rate(cfg, step: int) -> float:
    """Linear warm-up to --lr over --warmup-steps, then constant (DiT's recipe) or, with
    --lr-schedule cosine, times 0.5 (1 + cos(pi step / steps)) (Loshchilov & Hutter 2017)."""
    warm = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    if cfg.lr_schedule == "constant":
        return warm
    return warm * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))


def train_step(run: Run, autocast) -> torch.Tensor:
    """One optimizer step over grad_accum micro-batches -> (loss, grad norm, 1), or zeros when
    the gradient is not finite and the update was skipped."""
    cfg, idx = run.cfg, run.batches.next()
    for group in run.opt.param_groups:
        group["lr"] = learning_rate(cfg, run.step)
    run.opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=run.device)
    chunks = idx.chunk(cfg.grad_accum)
    for i, micro in enumerate(chunks):
        last = i == len(chunks) - 1
        with (contextlib.nullcontext() if last else run.model.no_sync()), autocast():
            loss = run.model(run.x[micro], None if run.y is None else run.y[micro])
        (loss / cfg.grad_accum).backward()
        total += loss.detach().float() / cfg.grad_accum
    norm = run.clip(cfg.grad_clip).detach().float().reshape(())
    run.step += 1
    # The norm is computed from synchronised gradients, so every rank skips the same step
    # (and every rank counts the same streak, so all of them stop together).
    if not torch.isfinite(norm):
        check_streak(run, total)
        return torch.zeros(3, device=run.device)
    run.nonfinite, run.last_finite = 0, (run.step, total)
    run.opt.step()
    run.ema.update(run.net)
    return torch.stack([total, norm, torch.ones((), device=run.device)])


def check_streak(run: Run, loss: torch.Tensor) -> None:
    """Count a skipped step; raise Diverged at --max-nonfinite-steps of them in a row."""
    run.nonfinite += 1
    k = run.cfg.max_nonfinite_steps
    if run.nonfinite < k:
        return
    rank, what = run.comm.rank, "loss" if not torch.isfinite(loss) else "gradient"
    last = (f"the last finite loss was {float(run.last_finite[1]):.4g} at step "
            f"{run.last_finite[0]}" if run.last_finite else "no step of this run was finite")
    raise Diverged(f"stopped at step {run.step}: the {what} was not finite for {k} steps in a "
                   f"row (steps {run.step - k + 1}-{run.step}; loss {float(loss):.4g} on rank "
                   f"{rank}); {last} (rank {rank}). No update was applied in those steps. "
                   "Lower --lr, raise --warmup-steps or check the data; --max-nonfinite-steps "
                   f"(now {k}) is how many in a row are tolerated")


def sample_grid(run: Run, autocast, name: str) -> None:
    """Every rank samples its share of a grid with the EMA weights; rank 0 saves the PNG."""
    cfg = run.cfg
    x = sample_sharded(run.objective, run.ema.model, cfg.num_samples, tuple(run.x.shape[1:]),
                       run.comm, steps=cfg.sample_steps, cfg_scale=cfg.cfg_scale,
                       num_classes=run.num_classes, seed=cfg.seed, device=run.device,
                       autocast=autocast(), noise=cfg.sample_noise)
    if run.comm.rank == 0:
        x = run.space.decode(x) if run.space is not None else x
        labels = grid_labels(cfg.num_samples, run.num_classes) if x.dim() == 4 else None
        reference = None
        if x.dim() == 2:                                      # points: the data beside them
            reference = run.space.decode(run.x) if run.space is not None else run.x
        plots.save_samples(x, Path(cfg.out) / "samples" / f"{name}.png", labels=labels,
                           reference=reference)


def save_checkpoint(run: Run) -> None:
    ckpt.save(Path(run.cfg.out) / "checkpoints", run.step, run.comm, checkpoint_files(run),
              keep_last=run.cfg.keep_last)


def loop(run: Run, autocast) -> None:
    cfg, sums, t0 = run.cfg, torch.zeros(3, device=run.device), time.perf_counter()
    window = 0
    while run.step < cfg.steps:
        sums += train_step(run, autocast)
        window += 1
        run.log.advance()
        if run.step % cfg.log_every == 0 or run.step == cfg.steps:
            elapsed, (loss, norm, applied) = time.perf_counter() - t0, sums.tolist()
            # applied is the same on every rank (skips follow the synchronised norm); a window
            # of skipped steps only has no loss to log
            means = {"loss": loss / applied, "grad_norm": norm / applied} if applied else {}
            m = reduce_metrics(run.comm, {**means,
                                          "img_per_s": cfg.batch_size * window / elapsed})
            run.log.metrics(run.step, {**m, "skipped_steps": window - applied,
                                       "lr": learning_rate(cfg, run.step - 1)})
            sums.zero_()
            window, t0 = 0, time.perf_counter()
        if cfg.sample_every and run.step % cfg.sample_every == 0 and run.step < cfg.steps:
            sample_grid(run, autocast, f"step-{run.step:06d}")
        if run.step % cfg.ckpt_every == 0 and run.step < cfg.steps:
            save_checkpoint(run)


def finish(run: Run, autocast) -> None:
    """Final checkpoint, final grid and (rank 0) the loss curve and where to find them."""
    out = Path(run.cfg.out)
    if not (out / "checkpoints" / f"{ckpt.PREFIX}{run.step:08d}").exists():
        save_checkpoint(run)
    sample_grid(run, autocast, "final")
    if run.comm.rank == 0:
        cfg = run.cfg
        title = f"{cfg.model} + {cfg.objective} on {cfg.data}, {run.comm.size} rank(s)"
        plots.save_loss_curve(out / "metrics.jsonl", out / "loss.png", title, run.resumed_at)
    run.log.close()
    run.log.info(f"done: {run.step} steps; samples {out / 'samples' / 'final.png'}, "
                 f"loss curve {out / 'loss.png'}")


def prepare(argv) -> tuple:
    """Everything that can fail for a user's reason, before any process group exists."""
    cfg = config.parse(argv)
    launch = read_launch_env()
    checks.check_out_folder(cfg)
    data = build_data(cfg)
    shape = tuple(data[0].shape)
    checks.validate(cfg, launch.size, launch.launcher, shape)
    space = latent.load_space(cfg.latent) if cfg.latent else None
    if cfg.standardize:                              # z-scores: cheap, every rank alike
        space = Standardized.of(data[0])
        data = (space.encode(data[0]), *data[1:])
    example = data[0][:1] if space is None else torch.empty((1, *space.shape))
    net = build_network(cfg, example, data[2])
    return cfg, launch, data, net, build_objective(cfg), space


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, launch, data, net, objective, space = prepare(argv)
    except config.ConfigError as e:
        if read_launch_env().rank == 0:      # every rank finds the same error
            print(f"ringflow.train: error: {e}", file=sys.stderr)
        return 2
    comm, device = start(cfg, launch)
    try:
        autocast = build_autocast(cfg, device)
        if isinstance(space, latent.LatentSpace):    # every rank encodes a share, once
            data = (latent.encode_dataset(space, data[0], comm), *data[1:])
        run = build_run(cfg, comm, device, data, net, objective, space=space)
        if comm.rank == 0:
            config.save(cfg, Path(cfg.out) / "config.json")
            if isinstance(space, latent.LatentSpace):
                latent.save_record(space, Path(cfg.out))
            print(f"ringflow.train: {comm.size} rank(s) on {device}, transport "
                  f"{comm.transport.name}, --parallel {cfg.parallel}", file=sys.stderr, flush=True)
        loop(run, autocast)
        finish(run, autocast)
    except ckpt.CheckpointError as e:               # every rank read the same files
        if comm.rank == 0:
            print(f"ringflow.train: error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:                           # every rank counted the same streak
        if comm.rank == 0:
            print(f"ringflow.train: error: {e}", file=sys.stderr)
        return 1
    finally:
        runtime.shutdown()
    return 0

