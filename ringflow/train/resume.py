"""What a training checkpoint holds, and putting it back so training continues bit for bit.

Files per checkpoint (see ``checkpoint`` for the atomic write and verified read):
model/EMA weights and state.json from rank 0; the optimizer once (``optim.pt``, replicated
strategies; fsdp's gathered by every rank and keyed by parameter name) or one shard per
rank (``optim.rank{r}.pt``, ZeRO); each rank's RNG states.
The weights are restored before the network is wrapped, the rest after the optimizer exists.
ZeRO shards written by n ranks are resharded onto m (training continues; bit for bit only on
the same number of ranks, whose noise streams are restored).

    found = find_checkpoint(cfg, comm)          # Path | None, the same on every rank
    restore_model(found, net); ...wrap...; restore_rest(found, run)
    ckpt.save(root, run.step, comm, checkpoint_files(run))
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch

from .. import collectives as rc
from ..parallel import zero_state
from ..parallel.sampler import SEED_STRIDE
from . import checkpoint as ckpt
from . import config
from .build import SHARDED
from .sharded import fsdp_files


def optim_name(cfg, rank: int) -> str:
    return f"optim.rank{rank}.pt" if cfg.parallel in SHARDED else "optim.pt"


def checkpoint_files(run) -> dict:
    """{file name: value} this rank writes for the current step."""
    cfg, rank = run.cfg, run.comm.rank
    files = {f"rng.rank{rank}.pt": rng_state(run)}
    if cfg.parallel == "fsdp":              # gathered by every rank, written by rank 0
        files.update(fsdp_files(run))
        return {**files, "state.json": run_state(run)} if rank == 0 else files
    if cfg.parallel in SHARDED:            # this rank's shard: no communication to save it
        files[optim_name(cfg, rank)] = run.opt.sharded_state_dict()
    elif rank == 0:                         # replicated: every rank holds the same state
        files[optim_name(cfg, rank)] = run.opt.state_dict()
    if rank == 0:
        files["model.safetensors"] = run.net.state_dict()
        files["ema.safetensors"] = run.ema.state_dict()
        files["state.json"] = run_state(run)
    return files


def run_state(run) -> dict:
    return {"step": run.step, "sampler": run.batches.state_dict(),
            "ema_updates": run.ema.updates, "world_size": run.comm.size,
            "parallel": run.cfg.parallel, "config": config.to_dict(run.cfg),
            "resumed_at": run.resumed_at}


def rng_state(run) -> dict:
    state = {"noise": run.gen.get_state(), "torch": torch.get_rng_state()}
    if run.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(run.device)
    return state


def find_checkpoint(cfg, comm) -> Path | None:
    """Collective: the checkpoint to resume from per --resume (None: start fresh). Rank 0 says
    why each newer checkpoint was passed over, and plainly when none is left to load."""
    if cfg.resume == "never":
        return None
    rejected = []                                     # rank 0's reasons, one per checkpoint
    if cfg.resume in ("auto", "must"):
        where = Path(cfg.out) / "checkpoints"
        found = ckpt.find_latest(where, comm, rejected)
    else:
        where = Path(cfg.resume)
        found = _explicit(where, comm, rejected)
    why = "".join(f"\n  rejected {r}" for r in rejected)
    if found is None and cfg.resume != "auto":
        raise ckpt.CheckpointError(f"--resume {cfg.resume}: no valid checkpoint in {where}{why}")
    if comm.rank == 0 and rejected:
        said = (f"newer checkpoints in {where} are invalid, resuming from {found.name}" if found
                else f"no valid checkpoint in {where}, starting from step 0")
        print(f"ringflow.train: {said}{why}", file=sys.stderr, flush=True)
    return found


def _explicit(path: Path, comm, rejected: list) -> Path | None:
    """A step folder (verified on rank 0), or a run / checkpoints folder (its newest)."""
    if not path.name.startswith(ckpt.PREFIX):
        root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        return ckpt.find_latest(root, comm, rejected)
    ok = 1
    if comm.rank == 0:
        try:
            ckpt.verify(path)
        except ckpt.CheckpointError as e:
            rejected.append(str(e))
            ok = 0
    ok = torch.tensor([ok], dtype=torch.int64, device=comm.device)
    rc.broadcast(ok, src=0, group=comm)
    return path if ok.item() else None


# Settings that decide what the weights mean; any other setting may change on resume.
MODEL_FIELDS = ("model", "model_kwargs", "objective", "objective_kwargs", "data", "class_cond",
                "standardize")
# fields newer than some checkpoints, and what a checkpoint without them was trained with
OLDER_DEFAULTS = {"standardize": False}


def check_config(folder: Path, cfg) -> None:
    """Refuse a checkpoint trained with another model config, listing every field that differs."""
    saved, now = ckpt.read(folder, "state.json").get("config", {}), config.to_dict(cfg)
    saved = {**OLDER_DEFAULTS, **saved} if saved else saved
    diff = [f"{k}: checkpoint has {saved.get(k)!r}, this run has {now.get(k)!r}"
            for k in MODEL_FIELDS if k in saved and saved[k] != now.get(k)]
    if diff:
        raise ckpt.CheckpointError(
            f"{folder} was trained with a different model config:\n  " + "\n  ".join(diff) +
            "\nresume with the checkpoint's settings (its run folder has config.json), "
            "or start a new --out")


def restore_model(folder: Path, net: torch.nn.Module) -> None:
    net.load_state_dict(ckpt.read(folder, "model.safetensors"))


def restore_rest(folder: Path, run) -> None:
    """EMA, optimizer, sampler position, RNG states and the step counter."""
    cfg, comm = run.cfg, run.comm
    state = ckpt.read(folder, "state.json")
    if state.get("parallel") in SHARDED and cfg.parallel not in SHARDED or \
            cfg.parallel in SHARDED and state.get("parallel") not in SHARDED or \
            (state.get("parallel") == "fsdp") != (cfg.parallel == "fsdp"):
        raise ckpt.CheckpointError(f"{folder} was written with --parallel {state.get('parallel')}; "
                                   f"resume with the same kind of optimizer (not {cfg.parallel})")
    run.ema.load_state_dict(ckpt.read(folder, "ema.safetensors"), state["ema_updates"])
    restore_optimizer(folder, run, state["world_size"])
    run.batches.load_state_dict(state["sampler"])
    run.step = int(state["step"])
    run.resumed_at = [*state.get("resumed_at", []), run.step]    # marked on loss.png
    _restore_rng(folder, run, state["world_size"])
    if comm.rank == 0:
        truncate_metrics(Path(cfg.out) / "metrics.jsonl", run.step)


def restore_optimizer(folder: Path, run, saved_world: int) -> None:
    """The optimizer state; ZeRO shards written by another number of ranks are resharded."""
    cfg, comm = run.cfg, run.comm
    if cfg.parallel == "fsdp":              # by parameter name: any world size
        run.model.load_optim_state_dict(run.opt, ckpt.read(folder, "optim.pt"))
        return
    if cfg.parallel not in SHARDED or saved_world == comm.size:
        run.opt.load_state_dict(ckpt.read(folder, optim_name(cfg, comm.rank)))
        return
    # every rank reads all the old shards (the whole state once, as a consolidated save would
    # hold) and keeps its own slice of the new layout: no communication
    shards = [ckpt.read(folder, optim_name(cfg, r)) for r in range(saved_world)]
    try:
        run.opt.load_state_dict(zero_state.merge_shards(run.opt, shards))
    except ValueError as e:
        raise ckpt.CheckpointError(f"{folder}: its ZeRO shards do not fit this run: {e}") from None
    if comm.rank == 0:
        print(f"ringflow.train: resharded the --parallel {cfg.parallel} optimizer state of "
              f"{saved_world} rank(s) in {folder.name} onto {comm.size}", file=sys.stderr,
              flush=True)


def _restore_rng(folder: Path, run, saved_world: int) -> None:
    name = f"rng.rank{run.comm.rank}.pt"
    if saved_world != run.comm.size or not (folder / name).is_file():
        # a new world size has new ranks: fresh streams, mixed with the step so none repeats
        warnings.warn(f"{folder} was written by {saved_world} ranks, this run has "
                      f"{run.comm.size}: noise streams restart (training continues, not bitwise)",
                      stacklevel=2)
        run.gen.manual_seed(run.cfg.seed * SEED_STRIDE + 1 + run.comm.rank + 7919 * run.step)
        return
    state = ckpt.read(folder, name)
    run.gen.set_state(state["noise"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and run.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], run.device)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines past ``step``: steps redone after a crash are not logged twice."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))
