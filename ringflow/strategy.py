"""``--parallel``: how one rank's network and optimizer become a data-parallel pair.

- ddp: ringflow's DataParallel (bucketed ring all-reduce overlapped with backward) + AdamW.
- zero1 / zero2: ZeroOptimizer shards AdamW's state (and, for stage 2, the gradients) over
  ranks: reduce-scatter, step the local shard, all-gather the parameters.
- torch-ddp-hook: torch's own DistributedDataParallel with ringflow's ring as its comm hook.

The objective's loss runs inside ``LossModule.forward`` so that every wrapper sees the whole
computation (a flow's ``nll`` included) as one forward.

    model, opt, clip = build_parallel(cfg, LossModule(net, objective, gen), comm, device)
    loss = model(x0, y); loss.backward(); norm = clip(1.0); opt.step()
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn


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
        from .parallel import DataParallel
        # broadcast_buffers off: ringflow's networks hold only constant buffers (positions),
        # so a broadcast per step would buy nothing
        model = DataParallel(loss_module, group=comm, bucket_cap_mb=cfg.bucket_cap_mb,
                             compress=compress, broadcast_buffers=False)
        opt = torch.optim.AdamW(params, **adamw_kwargs(cfg, device))
        return model, opt, replicated_clip(params)
    if cfg.parallel in ("zero1", "zero2"):
        return _zero(cfg, loss_module, comm, device)
    return _torch_ddp(cfg, loss_module, comm, device)


def _zero(cfg, loss_module, comm, device):
    """ZeroOptimizer on the bare model: it averages gradients itself inside step()."""
    from .parallel import ZeroOptimizer
    opt = ZeroOptimizer(loss_module.net.parameters(), torch.optim.AdamW, group=comm,
                        stage=1 if cfg.parallel == "zero1" else 2, **adamw_kwargs(cfg, device))

    def clip(max_norm: float) -> torch.Tensor:
        return opt.clip_grad_norm_(max_norm if max_norm > 0 else math.inf)
    return Local(loss_module), opt, clip


def _torch_ddp(cfg, loss_module, comm, device):
    """torch's DistributedDataParallel, its buckets averaged by ringflow's ring."""
    from .parallel import ring_allreduce_hook
    from .launch import read_launch_env
    from .transport.torch_dist import init_process_group
    init_process_group(read_launch_env(), device, cfg.timeout)   # no-op if the transport did
    ddp = torch.nn.parallel.DistributedDataParallel(
        loss_module, device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=cfg.bucket_cap_mb)
    ddp.register_comm_hook(comm, ring_allreduce_hook)
    params = list(loss_module.net.parameters())
    return ddp, torch.optim.AdamW(params, **adamw_kwargs(cfg, device)), replicated_clip(params)
