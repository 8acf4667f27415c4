"""Checks of a TrainConfig that run before any process group starts: each error says what to
change. Pairings (a flow objective needs its own flow network), numbers, the batch against the
world size, launcher and transport, the data's shape, and --resume against what --out holds.

    checks.validate(cfg, world_size=2, launcher="torchrun", data_shape=(1797, 1, 8, 8))
"""
from __future__ import annotations

from pathlib import Path

from .checkpoint import PREFIX
from .config import ConfigError, TrainConfig

FLOW_OBJECTIVES = ("nice", "realnvp")        # maximum likelihood: the network is the flow itself
UNLABELLED = FLOW_OBJECTIVES + ("vae",)      # objectives that take no label dropout
VECTOR_NETWORKS = ("mlp", "nice", "realnvp")  # networks that also take (N, D) vectors
NOISE_OBJECTIVES = ("rectified_flow", "ddpm")  # samplers that start from noise they are given


def validate(cfg: TrainConfig, world_size: int, launcher: str = "none",
             data_shape: tuple | None = None) -> None:
    """Raise ConfigError for a configuration that cannot run; called before any process group."""
    from ..models import NETWORKS, OBJECTIVES
    if cfg.model not in NETWORKS:
        raise ConfigError(f"--model {cfg.model!r} is unknown; choose one of {sorted(NETWORKS)}")
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"--objective {cfg.objective!r} is unknown; choose one of "
                          f"{sorted(OBJECTIVES)}")
    from ..data import DATASETS
    if cfg.data not in DATASETS and not Path(cfg.data).exists():
        raise ConfigError(f"--data {cfg.data!r} is neither a built-in dataset {list(DATASETS)} "
                          "nor an existing .npy file or image folder")
    _check_pairing(cfg)
    check_sample_noise(cfg.objective, cfg.sample_noise)
    _check_latent(cfg)
    _check_numbers(cfg)
    _check_model_sizes(cfg)
    _check_batch(cfg, world_size)
    _check_launch(cfg, world_size, launcher)
    if data_shape is not None:
        _check_data_shape(cfg, data_shape)


def check_out_folder(cfg: TrainConfig) -> None:
    """--resume against what --out holds (read-only; every rank sees the same folder)."""
    ckpts = Path(cfg.out) / "checkpoints"
    has = ckpts.is_dir() and any(p.name.startswith(PREFIX) for p in ckpts.iterdir())
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
    if (cfg.model == "vae") != (cfg.objective == "vae"):
        raise ConfigError(f"--model {cfg.model} with --objective {cfg.objective}: the "
                          "autoencoder trains with its own objective; use --model vae "
                          "--objective vae (or --preset mnist-vae), or a generative objective "
                          "for other networks")
    if cfg.model in FLOW_OBJECTIVES and cfg.objective != cfg.model:
        raise ConfigError(f"--model {cfg.model} is a normalizing flow; train it with --objective "
                          f"{cfg.model} (maximum likelihood), not {cfg.objective!r}")


def _check_latent(cfg: TrainConfig) -> None:
    if cfg.latent and cfg.standardize:
        raise ConfigError("--standardize z-scores vector data; --latent already scales its "
                          "latents to unit variance: drop one of them")
    if not cfg.latent:
        return
    if cfg.model == "vae" or cfg.model in FLOW_OBJECTIVES:
        raise ConfigError(f"--latent trains a diffusion or flow-matching network on latents; "
                          f"--model {cfg.model} cannot: use dit, mmdit or unet")
    if not Path(cfg.latent).exists():
        raise ConfigError(f"--latent {cfg.latent}: no such run folder or checkpoint; train an "
                          "autoencoder first (--preset mnist-vae --out RUN) and pass RUN")


def check_sample_noise(objective: str, noise: str) -> None:
    """--sample-noise sobol needs a sampler that starts from given noise (also for evaluate)."""
    if noise != "iid" and objective not in NOISE_OBJECTIVES:
        raise ConfigError(f"--sample-noise {noise} sets the starting noise of "
                          f"{list(NOISE_OBJECTIVES)}; --objective {objective} draws its own: "
                          "use --sample-noise iid")


def _check_numbers(cfg: TrainConfig) -> None:
    rules = [("steps", cfg.steps >= 1, "at least 1"), ("lr", cfg.lr > 0, "positive"),
             ("batch_size", cfg.batch_size >= 1, "at least 1 (the global batch)"),
             ("threads", cfg.threads >= 0, "0 (cores / ranks on the node) or more"),
             ("grad_accum", cfg.grad_accum >= 1, "at least 1"),
             ("warmup_steps", cfg.warmup_steps >= 0, "0 or more"),
             ("grad_clip", cfg.grad_clip >= 0, "0 (off) or positive"),
             ("max_nonfinite_steps", cfg.max_nonfinite_steps >= 1, "at least 1"),
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


# Network arguments that count something (widths, layers, heads, patches): a zero or negative
# one fails deep inside torch (or, like depth 0, silently builds a network with no blocks).
SIZE_KWARGS = ("hidden", "hidden_size", "depth", "num_heads", "num_layers", "patch_size",
               "base_channels", "channel_mults", "num_res_blocks", "context_dim",
               "context_tokens", "mlp_ratio")


def _check_model_sizes(cfg: TrainConfig) -> None:
    for name in SIZE_KWARGS:
        value = cfg.model_kwargs.get(name)
        values = value if isinstance(value, list) else [value]
        if value is None or all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                for v in values):
            continue
        want = "a list of positive numbers" if isinstance(value, list) else "a positive number"
        raise ConfigError(f"--model-kwargs: {name} must be {want}, got {value!r} (in "
                          f"{cfg.model_kwargs})")


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
    from ..collectives.select import ALGORITHMS, forced
    if cfg.algorithm != "auto":
        try:
            hits = [c for c in ALGORITHMS if forced(c, cfg.algorithm)]
        except ValueError as e:
            raise ConfigError(f"--algorithm: {e}") from None
        if not hits:
            names = sorted({name for table in ALGORITHMS.values() for name in table})
            raise ConfigError(f"--algorithm {cfg.algorithm!r} names no algorithm; use auto, one "
                              f"of {names}, or per collective: all_reduce=ring,broadcast=tree")
    if cfg.transport == "mpi" and world_size > 1 and launcher not in ("mpirun", "pmi"):
        raise ConfigError(f"--transport mpi needs an MPI launcher (mpirun -np N python -m "
                          f"ringflow.train ...); this process was started by {launcher}. "
                          "Use --transport torch under torchrun")
    if cfg.compress != "none" and cfg.parallel != "ddp":
        raise ConfigError(f"--compress {cfg.compress} is implemented by ringflow's DataParallel "
                          f"(--parallel ddp), not by --parallel {cfg.parallel}")


def _check_data_shape(cfg: TrainConfig, shape: tuple) -> None:
    if cfg.standardize and len(shape) != 2:
        raise ConfigError(f"--standardize z-scores vector data (N, D); --data {cfg.data} holds "
                          f"{tuple(shape[1:])} images, already in [-1, 1]: drop --standardize")
    if len(shape) == 2 and cfg.model not in VECTOR_NETWORKS:
        raise ConfigError(f"--data {cfg.data} holds {shape[1]}-D points, but --model {cfg.model} "
                          f"takes images; use --model mlp (or nice / realnvp)")
    if len(shape) == 4 and cfg.model == "mlp":
        raise ConfigError(f"--data {cfg.data} holds images {tuple(shape[1:])}; --model mlp takes "
                          "points: use --model dit, unet or mmdit")
    if shape[0] < cfg.batch_size:
        raise ConfigError(f"--data {cfg.data} has {shape[0]} examples, fewer than one global "
                          f"batch (--batch-size {cfg.batch_size}); lower the batch size")
