"""The training configuration: one typed dataclass, its presets, the CLI generated from it.

Precedence, lowest first: the dataclass defaults (a known-good recipe: a small class-conditional
DiT with rectified flow on digits), ``--preset NAME``, ``--config file.json|yaml``, then flags.
``checks.validate`` rejects bad combinations before any process group starts.

    cfg = config.parse(["--preset", "digits-dit", "--steps", "100", "--out", "runs/x"])
    config.save(cfg, "runs/x/config.json")        # --config reads it back
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
    """Everything a training run needs; defaults: the digits DiT recipe (2 CPU ranks, minutes)."""
    # ---- what to train
    model: str = _f("dit", "network name (ringflow.models.NETWORKS)")
    model_kwargs: dict = _f({}, "network arguments (JSON), replacing the preset's; {} = the "
                            "network's defaults (DiT: size T, patch 2)")
    objective: str = _f("rectified_flow", "objective name (ringflow.models.OBJECTIVES)")
    objective_kwargs: dict = _f({}, "objective arguments (JSON), e.g. {\"schedule\": \"cosine\"}")
    data: str = _f("digits", "a built-in dataset or a path to an .npy array / image folder")
    latent: str = _f("", "a --model vae run folder (or checkpoint): train on its latents of "
                     "--data, scaled to unit variance; samples are decoded ('': pixels)")
    standardize: bool = _f(False, "train on vector data (N, D) z-scored per coordinate; "
                           "samples are scaled back (the noise is N(0, I) whatever the data's "
                           "scale)")
    class_cond: bool = _f(True, "condition on class labels when the dataset has them")
    label_dropout: float = _f(0.1, "probability a label is dropped in training (for CFG)")
    # ---- optimisation
    steps: int = _f(3000, "optimizer steps in total (resume continues up to this number)")
    batch_size: int = _f(128, "global batch per optimizer step, over all ranks and micro-batches")
    grad_accum: int = _f(1, "micro-batches per optimizer step on each rank")
    lr: float = _f(1e-3, "AdamW peak learning rate (reached after warm-up)")
    warmup_steps: int = _f(100, "linear learning-rate warm-up from 0, in steps")
    lr_schedule: str = _f("constant", "after warm-up: constant, or cosine decay to 0 at --steps "
                          "(settles the weights the EMA averages)", ["constant", "cosine"])
    weight_decay: float = _f(0.0, "AdamW weight decay")
    beta2: float = _f(0.99, "AdamW second-moment decay")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0: no clipping)")
    max_nonfinite_steps: int = _f(10, "stop the run when the loss or gradient is not finite "
                                  "this many steps in a row (an isolated one skips its update)")
    ema_decay: float = _f(0.999, "EMA decay of the weights used for sampling")
    ema_warmup: bool = _f(True, "EMA decay min(decay, (1+n)/(10+n)) early in training")
    precision: str = _f("auto", "auto: bf16 autocast on GPUs that support it, else fp32",
                        ["auto", "fp32", "bf16"])
    seed: int = _f(0, "seed of weights, data order and each rank's noise")
    threads: int = _f(0, "torch CPU threads per rank (0: cores / ranks on the node)")
    # ---- distribution
    parallel: str = _f("ddp", "how gradients meet: ringflow DataParallel, ZeRO-1/2, fully "
                       "sharded (fsdp), or torch DDP with ringflow's ring as its comm hook",
                       ["ddp", "zero1", "zero2", "fsdp", "torch-ddp-hook"])
    algorithm: str = _f("auto", "collective algorithm: auto (per collective and size), a name "
                        "forced wherever it applies (ring, ...), or all_reduce=ring,broadcast=tree")
    transport: str = _f("auto", "point-to-point transport (auto: $RINGFLOW_TRANSPORT if set, "
                        "else shared memory for CPU ranks of one node under torchrun, torch "
                        "(gloo/NCCL) across nodes or on GPUs, mpi under mpirun)",
                        ["auto", "torch", "mpi", "shm"])
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
    sample_noise: str = _f("iid", "the sampler's starting noise: iid draws, or sobol (scrambled "
                           "Sobol points through the Gaussian inverse CDF: evenly spread, "
                           "quasi-Monte Carlo; rectified_flow and ddpm)", ["iid", "sobol"])
    ckpt_every: int = _f(500, "steps between checkpoints (one is always written at the end)")
    keep_last: int = _f(3, "checkpoints kept")
    resume: str = _f("auto", "auto: continue from --out's newest checkpoint if any; 'must': "
                     "fail without one; 'never': start fresh; or a checkpoint folder")
    progress: bool = _f(True, "rank 0 shows a progress bar on a terminal; elsewhere (or when "
                        "false) it prints a line about every 20th of the run")


# Presets: known-good recipes. Each overrides only what differs from the defaults above.
PRESETS: dict[str, dict] = {
    "digits-dit": {},
    "digits-unet-ddpm": {"model": "unet", "objective": "ddpm", "lr": 5e-4,
                         "model_kwargs": {"base_channels": 32, "channel_mults": [1, 2]},
                         "objective_kwargs": {"schedule": "cosine"}},
    # unconditional (the labels only say which moon; CFG at 2 pulls samples off the arcs),
    # z-scored (y spans half of x), and the cosine decay lets the EMA settle:
    # benchmarks/quality/quality.py cli-moons and moons_recipe.py
    "moons-mlp": {"model": "mlp", "data": "moons", "model_kwargs": {"hidden": 256, "depth": 3},
                  "class_cond": False, "standardize": True, "lr": 2e-3, "lr_schedule": "cosine",
                  "steps": 3000, "batch_size": 256, "sample_steps": 50, "num_samples": 512},
    "mnist-vae": {"model": "vae", "objective": "vae", "data": "mnist", "class_cond": False,
                  "model_kwargs": {"latent_channels": 4, "factor": 4}, "steps": 1500,
                  "batch_size": 64, "lr": 2e-3, "lr_schedule": "cosine", "sample_every": 0,
                  "num_samples": 64, "out": "runs/mnist-vae"},
    # on the latents of the mnist-vae preset's run: 7x7 latents in 1x1 patches (49 tokens);
    # benchmarks/quality/latent.py compares them with pixels and with each other. CFG 4: 96 %
    # of samples classified as asked (95 % is the bar; CFG 2 gave 90.5 %, at a lower FD)
    "mnist-latent-dit": {"data": "mnist", "latent": "runs/mnist-vae", "steps": 800,
                         "model_kwargs": {"patch_size": 1, "hidden_size": 64, "depth": 4,
                                          "num_heads": 4},
                         "lr_schedule": "cosine", "sample_every": 0, "cfg_scale": 4.0,
                         "out": "runs/mnist-latent-dit"},
    "mnist-latent-mmdit": {"model": "mmdit", "data": "mnist", "latent": "runs/mnist-vae",
                           "steps": 800, "model_kwargs": {"patch_size": 1, "hidden_size": 64,
                                                          "depth": 4, "num_heads": 4,
                                                          "text": True},
                           "lr_schedule": "cosine", "sample_every": 0, "cfg_scale": 4.0,
                           "out": "runs/mnist-latent-mmdit"},
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


def registry_names() -> dict[str, str]:
    """What --model, --objective and --data accept, read from the registries (for --help)."""
    from ..data import DATASETS
    from ..models import NETWORKS, OBJECTIVES
    return {"model": "one of: " + ", ".join(sorted(NETWORKS)),
            "objective": "one of: " + ", ".join(sorted(OBJECTIVES)),
            "data": "built-in: " + ", ".join(DATASETS)}


def build_parser(prog: str = "ringflow.train") -> argparse.ArgumentParser:
    """The CLI, one flag per field (--field-name), defaults left out so we see what was given."""
    p = argparse.ArgumentParser(prog=prog, argument_default=argparse.SUPPRESS,
                                description="Train a generative model across ranks with ringflow.")
    p.add_argument("--preset", choices=sorted(PRESETS), help="start from a named recipe")
    p.add_argument("--config", help="JSON or YAML file of fields (applied after the preset)")
    types, names = field_types(), registry_names()
    for f in dataclasses.fields(TrainConfig):
        kind, flag = types[f.name], "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        known = f"; {names[f.name]}" if f.name in names else ""
        help_ = f"{f.metadata['help']}{known} (default: {json.dumps(default)})"
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
    """Fields from a .json or .yaml/.yml file; an unreadable or unparsable file is a ConfigError."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read it ({e.strerror}); expected a JSON or "
                          "YAML file of fields, e.g. the config.json of an earlier run") from None
    if path.endswith((".yaml", ".yml")):
        import yaml
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--config {path}: not valid YAML ({e})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config {path}: not valid JSON ({e}); name the file .yaml "
                              "or .yml for YAML") from None
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
