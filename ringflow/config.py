"""The training configuration: one typed dataclass, its presets, the CLI generated from it.

Precedence, lowest first: the dataclass defaults (a known-good recipe: a small class-conditional
DiT with rectified flow on digits), ``--preset NAME``, ``--config file.json|yaml``, then flags.
``validate`` rejects bad combinations before any process group starts.

    cfg = config.parse(["--preset", "digits-dit", "--steps", "100", "--out", "runs/x"])
    config.validate(cfg, world_size=2)            # raises ConfigError with the fix
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path


class ConfigError(ValueError):
    """A configuration that cannot run; the message says what to change."""


def _f(default, help: str, choices=None):
    """A dataclass field carrying its CLI help (and choices) in metadata."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; defaults are the digits DiT recipe (2 CPU ranks, minutes)."""
    # ---- what to train
    model: str = _f("dit", "network name in ringflow.models.NETWORKS")
    model_kwargs: dict = _f({}, "network arguments (JSON), replacing the preset's; {} = the "
                            "network's defaults (DiT: size T, patch 2)")
    objective: str = _f("rectified_flow", "objective name in ringflow.models.OBJECTIVES")
    objective_kwargs: dict = _f({}, "objective arguments (JSON), e.g. {\"schedule\": \"cosine\"}")
    data: str = _f("digits", "dataset name (digits, moons, ...) or a path to .npy / image folder")
    class_cond: bool = _f(True, "condition on class labels when the dataset has them")
    label_dropout: float = _f(0.1, "probability a label is dropped in training (for CFG)")
    # ---- optimisation
    steps: int = _f(3000, "optimizer steps in total (resume continues up to this number)")
    batch_size: int = _f(128, "global batch per optimizer step, over all ranks and micro-batches")
    grad_accum: int = _f(1, "micro-batches per optimizer step on each rank")
    lr: float = _f(1e-3, "AdamW peak learning rate (constant after warm-up)")
    warmup_steps: int = _f(100, "linear learning-rate warm-up from 0, in steps")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    beta2: float = _f(0.99, "AdamW second-moment decay")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0: no clipping)")
    ema_decay: float = _f(0.999, "EMA decay of the weights used for sampling")
    ema_warmup: bool = _f(True, "EMA decay min(decay, (1+n)/(10+n)) early in training")
    precision: str = _f("auto", "auto: bf16 autocast on GPUs that support it, else fp32",
                        ["auto", "fp32", "bf16"])
    seed: int = _f(0, "seed of weights, data order and each rank's noise")
    threads: int = _f(0, "torch CPU threads per rank (0: cores / ranks on the node)")
    # ---- distribution
    parallel: str = _f("ddp", "how gradients meet: ringflow DataParallel, ZeRO-1/2, or torch "
                       "DDP with ringflow's ring as its comm hook",
                       ["ddp", "zero1", "zero2", "torch-ddp-hook"])
    algorithm: str = _f("auto", "collective algorithm (auto picks per size)",
                        ["auto", "ring", "naive", "tree", "hierarchical"])
    transport: str = _f("auto", "point-to-point transport (auto: torch under torchrun, mpi "
                        "under mpirun)", ["auto", "torch", "mpi", "shm"])
    compress: str = _f("none", "gradient compression on the wire", ["none", "bf16"])
    bucket_cap_mb: float = _f(25.0, "gradient bucket size in MiB")
    timeout: float = _f(300.0, "seconds a rank waits for a peer before failing")
    # ---- rank-0 duties and checkpoints
    out: str = _f("runs/default", "run folder: config, metrics.jsonl, samples, checkpoints "
                  "(on a filesystem every node sees)")
    log_every: int = _f(10, "steps between (all-reduced) metric lines")
    sample_every: int = _f(500, "steps between sample grids (0: only at the end)")
    num_samples: int = _f(100, "images in a sample grid (sharded over ranks)")
    sample_steps: int = _f(50, "sampler steps")
    cfg_scale: float = _f(2.0, "classifier-free guidance scale for samples (1: none)")
    ckpt_every: int = _f(500, "steps between checkpoints (one is always written at the end)")
    keep_last: int = _f(3, "checkpoints kept")
    resume: str = _f("auto", "auto: continue from --out's newest checkpoint if any; 'must': "
                     "fail without one; 'never': start fresh; or a checkpoint folder")
    progress: bool = _f(True, "rank 0 shows a progress bar")


# Presets: known-good recipes. Each overrides only what differs from the defaults above.
PRESETS: dict[str, dict] = {
    "digits-dit": {},
    "digits-unet-ddpm": {"model": "unet", "objective": "ddpm", "lr": 5e-4,
                         "model_kwargs": {"base_channels": 32, "channel_mults": [1, 2]},
                         "objective_kwargs": {"schedule": "cosine"}},
    "moons-mlp": {"model": "mlp", "data": "moons", "model_kwargs": {"hidden": 128, "depth": 3},
                  "steps": 2000, "batch_size": 256, "sample_steps": 50, "num_samples": 512},
    "tiny": {"model_kwargs": {"patch_size": 4, "hidden_size": 32, "depth": 1, "num_heads": 2},
             "steps": 6, "batch_size": 16, "warmup_steps": 2, "log_every": 2, "sample_every": 0,
             "num_samples": 8, "sample_steps": 4, "ckpt_every": 3, "progress": False,
             "threads": 1},
}


def field_types() -> dict[str, type]:
    return typing.get_type_hints(TrainConfig)


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"depth\": 2}}': {e}")
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def build_parser(prog: str = "ringflow.train") -> argparse.ArgumentParser:
    """The CLI, one flag per field (--field-name), defaults left out so we see what was given."""
    p = argparse.ArgumentParser(prog=prog, argument_default=argparse.SUPPRESS,
                                description="Train a generative model across ranks with ringflow.")
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a named recipe")
    p.add_argument("--config", help="JSON or YAML file of fields (applied after the preset)")
    types = field_types()
    for f in dataclasses.fields(TrainConfig):
        kind, flag = types[f.name], "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"{f.metadata['help']} (default: {json.dumps(default)})"
        if kind is bool:
            p.add_argument(flag, type=_bool, nargs="?", const=True, help=help_, metavar="BOOL")
        elif kind is dict:
            p.add_argument(flag, type=_json_dict, help=help_, metavar="JSON")
        elif f.name == "resume":
            p.add_argument(flag, nargs="?", const="must", help=help_)
        else:
            p.add_argument(flag, type=kind, choices=f.metadata["choices"], help=help_)
    return p


def read_file(path: str) -> dict:
    """Fields from a .json or .yaml/.yml file."""
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    return data


def apply(cfg: TrainConfig, updates: dict, source: str) -> TrainConfig:
    """cfg with ``updates`` applied; unknown or mistyped fields name the source."""
    types, known = field_types(), {f.name for f in dataclasses.fields(TrainConfig)}
    clean = {}
    for key, value in updates.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{source}: unknown field {key!r}; known fields: {sorted(known)}")
        kind = types[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
        clean[name] = value
    return dataclasses.replace(cfg, **clean)


def parse(argv: list[str] | None = None) -> TrainConfig:
    """Defaults <- preset <- config file <- flags."""
    args = vars(build_parser().parse_args(argv))
    file_fields = read_file(args.pop("config")) if "config" in args else {}
    preset = args.pop("preset", None) or file_fields.pop("preset", None)
    cfg = TrainConfig()
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        cfg = apply(cfg, PRESETS[preset], f"preset {preset}")
    cfg = apply(cfg, file_fields, "config file")
    return apply(cfg, args, "command line")


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def save(cfg: TrainConfig, path) -> None:
    """The resolved config as JSON (``--config`` reads it back)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(to_dict(cfg), indent=1) + "\n")


def from_dict(data: dict) -> TrainConfig:
    return apply(TrainConfig(), data, "saved config")


FLOW_OBJECTIVES = ("nice", "realnvp")        # maximum likelihood: the network is the flow itself
VECTOR_NETWORKS = ("mlp", "nice", "realnvp")  # networks that also take (N, D) vectors


def validate(cfg: TrainConfig, world_size: int, launcher: str = "none",
             data_shape: tuple | None = None) -> None:
    """Raise ConfigError for a configuration that cannot run; called before any process group."""
    from .models import NETWORKS, OBJECTIVES
    if cfg.model not in NETWORKS:
        raise ConfigError(f"--model {cfg.model!r} is unknown; choose one of {sorted(NETWORKS)}")
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"--objective {cfg.objective!r} is unknown; choose one of "
                          f"{sorted(OBJECTIVES)}")
    from .data import DATASETS
    if cfg.data not in DATASETS and not Path(cfg.data).exists():
        raise ConfigError(f"--data {cfg.data!r} is neither a built-in dataset {list(DATASETS)} "
                          "nor an existing .npy file or image folder")
    _check_pairing(cfg)
    _check_numbers(cfg)
    _check_batch(cfg, world_size)
    _check_launch(cfg, world_size, launcher)
    if data_shape is not None:
        _check_data_shape(cfg, data_shape)


def check_out_folder(cfg: TrainConfig) -> None:
    """--resume against what --out holds (read-only; every rank sees the same folder)."""
    ckpts = Path(cfg.out) / "checkpoints"
    has = ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir())
    if cfg.resume == "never" and has:
        raise ConfigError(f"--out {cfg.out} already holds checkpoints and --resume is 'never'; "
                          "choose a new --out, delete the folder, or resume (--resume auto)")
    if cfg.resume == "must" and not has:
        raise ConfigError(f"--resume: --out {cfg.out} holds no checkpoints to resume from")
    if cfg.resume not in ("auto", "must", "never") and not Path(cfg.resume).exists():
        raise ConfigError(f"--resume {cfg.resume}: no such checkpoint folder")


def _check_pairing(cfg: TrainConfig) -> None:
    if cfg.objective in FLOW_OBJECTIVES and cfg.model != cfg.objective:
        raise ConfigError(f"--objective {cfg.objective} is a normalizing flow's exact likelihood:"
                          f" it trains the flow network of the same name (--model "
                          f"{cfg.objective}), not {cfg.model!r}. For --model {cfg.model} use "
                          "--objective rectified_flow or ddpm")
    if cfg.model in FLOW_OBJECTIVES and cfg.objective != cfg.model:
        raise ConfigError(f"--model {cfg.model} is a normalizing flow; train it with --objective "
                          f"{cfg.model} (maximum likelihood), not {cfg.objective!r}")


def _check_numbers(cfg: TrainConfig) -> None:
    rules = [("steps", cfg.steps >= 1, "at least 1"), ("lr", cfg.lr > 0, "positive"),
             ("grad_accum", cfg.grad_accum >= 1, "at least 1"),
             ("warmup_steps", cfg.warmup_steps >= 0, "0 or more"),
             ("grad_clip", cfg.grad_clip >= 0, "0 (off) or positive"),
             ("ema_decay", 0 <= cfg.ema_decay < 1, "in [0, 1)"),
             ("label_dropout", 0 <= cfg.label_dropout < 1, "in [0, 1)"),
             ("log_every", cfg.log_every >= 1, "at least 1"),
             ("ckpt_every", cfg.ckpt_every >= 1, "at least 1"),
             ("keep_last", cfg.keep_last >= 1, "at least 1"),
             ("sample_every", cfg.sample_every >= 0, "0 (only at the end) or more"),
             ("num_samples", cfg.num_samples >= 1, "at least 1"),
             ("sample_steps", cfg.sample_steps >= 1, "at least 1"),
             ("timeout", cfg.timeout > 0, "positive seconds"),
             ("bucket_cap_mb", cfg.bucket_cap_mb > 0, "positive")]
    for name, ok, want in rules:
        if not ok:
            raise ConfigError(f"--{name.replace('_', '-')} must be {want}, got "
                              f"{getattr(cfg, name)!r}")


def _check_batch(cfg: TrainConfig, world_size: int) -> None:
    if cfg.batch_size % world_size:
        lo = cfg.batch_size // world_size * world_size
        raise ConfigError(f"--batch-size {cfg.batch_size} is the global batch and must divide "
                          f"evenly over {world_size} ranks ({cfg.batch_size} % {world_size} = "
                          f"{cfg.batch_size % world_size}); use {lo or world_size} or "
                          f"{lo + world_size}")
    per_rank = cfg.batch_size // world_size
    if per_rank % cfg.grad_accum:
        raise ConfigError(f"each rank's batch ({cfg.batch_size} / {world_size} ranks = "
                          f"{per_rank}) must divide into --grad-accum {cfg.grad_accum} "
                          "micro-batches; change --batch-size or --grad-accum")


def _check_launch(cfg: TrainConfig, world_size: int, launcher: str) -> None:
    if cfg.transport == "mpi" and world_size > 1 and launcher not in ("mpirun", "pmi"):
        raise ConfigError(f"--transport mpi needs an MPI launcher (mpirun -np N python -m "
                          f"ringflow.train ...); this process was started by {launcher}. "
                          "Use --transport torch under torchrun")
    if cfg.compress != "none" and cfg.parallel != "ddp":
        raise ConfigError(f"--compress {cfg.compress} is implemented by ringflow's DataParallel "
                          f"(--parallel ddp), not by --parallel {cfg.parallel}")


def _check_data_shape(cfg: TrainConfig, shape: tuple) -> None:
    if len(shape) == 2 and cfg.model not in VECTOR_NETWORKS:
        raise ConfigError(f"--data {cfg.data} holds {shape[1]}-D points, but --model {cfg.model} "
                          f"takes images; use --model mlp (or nice / realnvp)")
    if len(shape) == 4 and cfg.model == "mlp":
        raise ConfigError(f"--data {cfg.data} holds images {tuple(shape[1:])}; --model mlp takes "
                          "points: use --model dit, unet or mmdit")
    if shape[0] < cfg.batch_size:
        raise ConfigError(f"--data {cfg.data} has {shape[0]} examples, fewer than one global "
                          f"batch (--batch-size {cfg.batch_size}); lower the batch size")
