"""The build_* steps of a training run: data, network, objective, autocast, and ``--parallel``
(how one rank's network and optimizer become a data-parallel pair); ``start`` makes the world.

    x, y, num_classes = build_data(cfg)
    net, objective = build_network(cfg, x, num_classes), build_objective(cfg)
    comm, device = start(cfg, read_launch_env())

``--parallel``:

- ddp: ringflow's DataParallel (bucketed ring all-reduce overlapped with backward) + AdamW.
- zero1 / zero2: ZeroOptimizer shards AdamW's state (and, for stage 2, the gradients) over
  ranks: reduce-scatter, step the local shard, all-gather the parameters.
- fsdp: FullyShardedDataParallel: parameters, gradients and AdamW's state at 1/n per rank,
  each block's parameters gathered around its compute (the EMA is sharded too: sharded.py).
- torch-ddp-hook: torch's own DistributedDataParallel with ringflow's ring as its comm hook.

The objective's loss runs inside ``LossModule.forward`` so that every wrapper sees the whole
computation (a flow's ``nll`` included) as one forward.

    model, opt, clip = build_parallel(cfg, LossModule(net, objective, gen), comm, device)
    loss = model(x0, y); loss.backward(); norm = clip(1.0); opt.step()
"""
from __future__ import annotations

import contextlib
import math
import os

import torch
from torch import nn

from .. import runtime
from ..data import load_dataset
from ..launch import pick_device, read_launch_env
from . import checks, config

SHARDED = ("zero1", "zero2")     # --parallel modes whose optimizer state is split over ranks


def build_data(cfg):
    try:
        x, y = load_dataset(cfg.data)
    except (FileNotFoundError, ValueError) as e:
        raise config.ConfigError(f"--data {cfg.data}: {e}") from None
    y = y if cfg.class_cond else None
    return x, y, (int(y.max()) + 1 if y is not None else 0)


def build_network(cfg, x, num_classes):
    from ..models import build_network as build
    torch.manual_seed(cfg.seed)                      # the same initial weights on every rank
    image = x.dim() == 4
    try:
        return build(cfg.model, in_channels=x.shape[1], image_size=x.shape[-1] if image else None,
                     num_classes=num_classes, **cfg.model_kwargs)
    except (TypeError, ValueError) as e:
        raise config.ConfigError(f"--model {cfg.model} with --model-kwargs "
                                 f"{cfg.model_kwargs}: {e}") from None


def build_objective(cfg):
    from ..models import build_objective as build
    kw = dict(cfg.objective_kwargs)
    if cfg.objective not in checks.UNLABELLED:          # flows and the VAE take no labels
        kw.setdefault("label_dropout", cfg.label_dropout)
    try:
        return build(cfg.objective, **kw)
    except (TypeError, ValueError) as e:
        raise config.ConfigError(f"--objective {cfg.objective} with --objective-kwargs "
                                 f"{cfg.objective_kwargs}: {e}") from None


def build_autocast(cfg, device):
    """bf16 autocast on request, or by default on GPUs that support it; else a no-op."""
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"
                                       and torch.cuda.is_bf16_supported())
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


class LossModule(nn.Module):
    """forward(x0, y) -> objective.loss(net, x0, y) with this rank's noise generator."""

    def __init__(self, net: nn.Module, objective, gen: torch.Generator | None = None):
        super().__init__()
        self.net, self.objective, self.gen = net, objective, gen

    def forward(self, x0, y=None):
        return self.objective.loss(self.net, x0, y, generator=self.gen)


class Local(nn.Module):
    """No wrapper (ZeRO does its own communication); ``no_sync`` is then a no-op."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def no_sync(self):
        return contextlib.nullcontext()


def adamw_kwargs(cfg, device) -> dict:
    kw = dict(lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    if device.type == "cuda":
        kw["fused"] = True                  # one kernel per step instead of one per tensor
    return kw


def replicated_clip(params):
    """Clip by the global norm when every rank holds the same, full gradients."""
    params = [p for p in params if p.requires_grad]

    def clip(max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    return clip


def build_parallel(cfg, loss_module: LossModule, comm, device):
    """(model, optimizer, clip) for ``cfg.parallel``; see the module doc."""
    params = list(loss_module.net.parameters())
    compress = None if cfg.compress == "none" else cfg.compress
    if cfg.parallel == "ddp":
        from ..parallel import DataParallel
        # broadcast_buffers off: ringflow's networks hold only constant buffers (positions),
        # so a broadcast per step would buy nothing
        model = DataParallel(loss_module, group=comm, bucket_cap_mb=cfg.bucket_cap_mb,
                             compress=compress, broadcast_buffers=False)
        opt = torch.optim.AdamW(params, **adamw_kwargs(cfg, device))
        return model, opt, replicated_clip(params)
    if cfg.parallel in SHARDED:
        return _zero(cfg, loss_module, comm, device)
    if cfg.parallel == "fsdp":
        return _fsdp(cfg, loss_module, comm, device)
    return _torch_ddp(cfg, loss_module, comm, device)


def _zero(cfg, loss_module, comm, device):
    """ZeroOptimizer on the bare model: it averages gradients itself inside step()."""
    from ..parallel import ZeroOptimizer
    opt = ZeroOptimizer(loss_module.net.parameters(), torch.optim.AdamW, group=comm,
                        stage=1 if cfg.parallel == "zero1" else 2, **adamw_kwargs(cfg, device))

    def clip(max_norm: float) -> torch.Tensor:
        return opt.clip_grad_norm_(max_norm if max_norm > 0 else math.inf)
    return Local(loss_module), opt, clip


def _fsdp(cfg, loss_module, comm, device):
    """FullyShardedDataParallel (units: the network's blocks) and AdamW over its shards."""
    from ..parallel import FullyShardedDataParallel
    model = FullyShardedDataParallel(loss_module, group=comm, broadcast_buffers=False)
    opt = torch.optim.AdamW(model.parameters(), **adamw_kwargs(cfg, device))
    return model, opt, lambda max_norm: model.clip_grad_norm_(max_norm if max_norm > 0
                                                              else math.inf)


def _torch_ddp(cfg, loss_module, comm, device):
    """torch's DistributedDataParallel, its buckets averaged by ringflow's ring."""
    from ..parallel import ring_allreduce_hook
    from ..transport.torch_dist import init_process_group
    init_process_group(read_launch_env(), device, cfg.timeout)   # no-op if the transport did
    ddp = torch.nn.parallel.DistributedDataParallel(
        loss_module, device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=cfg.bucket_cap_mb)
    ddp.register_comm_hook(comm, ring_allreduce_hook)
    params = list(loss_module.net.parameters())
    return ddp, torch.optim.AdamW(params, **adamw_kwargs(cfg, device)), replicated_clip(params)


def start(cfg, launch):
    """Threads, algorithm choice and the world communicator."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cfg.threads or max(1, (cores or 1) // launch.local_size))
    device = pick_device(launch.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    # "auto" leaves the choice to RINGFLOW_TRANSPORT / RINGFLOW_ALGORITHM, then to ringflow
    comm = runtime.init(transport=None if cfg.transport == "auto" else cfg.transport,
                        timeout=cfg.timeout, device=device,
                        algorithm=None if cfg.algorithm == "auto" else cfg.algorithm)
    return comm, device
