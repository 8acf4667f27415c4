"""The parallel equivalence matrix, run in one group: threads here, launched by matrix_worker.py.

Every case trains a model with conv, linear, GroupNorm, LayerNorm and embedding layers for
STEPS steps on per-rank batches of B rows, and must match one process trained on the
concatenated n*B rows (max relative parameter difference <= 1e-5, fp32), with parameters
bitwise identical across ranks after every step. Gradients are clipped by the global norm in
every case (ZeroOptimizer and FullyShardedDataParallel across shards; the latter's parameters
are compared gathered, as its module holds them only while computing).

    failures = run_matrix(comm)          # [] when every case matched
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ringflow import collectives as rc
from ringflow import parallel as rp

STEPS, B, TOL, MAX_NORM = 10, 4, 1e-5, 0.5
OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01),
}
OPT_CLASSES = {"sgd": (torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
               "adamw": (torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01))}


class Net(nn.Module):
    """Conv -> GroupNorm -> Linear + Embedding -> LayerNorm -> Linear: (B,3,4,4), (B,) -> (B,4)."""

    def __init__(self):
        super().__init__()
        self.conv, self.gn = nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8)
        self.fc, self.emb = nn.Linear(128, 32), nn.Embedding(10, 32)
        self.ln, self.head = nn.LayerNorm(32), nn.Linear(32, 4)

    def forward(self, x, y):
        h = F.gelu(self.gn(self.conv(x))).flatten(1)          # (B, 128)
        h = self.fc(h) + self.emb(y)                           # (B, 32)
        return self.head(F.gelu(self.ln(h)))                   # (B, 4)


@torch.no_grad()
def make_net(seed: int) -> Net:
    """Weights drawn from a private generator (rank threads share torch's global one)."""
    net, g = Net(), torch.Generator().manual_seed(seed)
    for name, p in net.named_parameters():
        if p.dim() > 1:
            p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
        else:
            base = 1.0 if name in ("gn.weight", "ln.weight") else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
    return net


def batch(step: int, rows: int):
    """The global batch of ``step``: (x, labels, target)."""
    g = torch.Generator().manual_seed(100 + step)
    return (torch.randn(rows, 3, 4, 4, generator=g), torch.randint(0, 10, (rows,), generator=g),
            torch.randn(rows, 4, generator=g))


def reference(opt_name: str, n: int) -> list[torch.Tensor]:
    """One process, the whole n*B batch: the parameters every case must reach."""
    net = make_net(1000)                                       # rank 0's weights
    opt = OPTIMIZERS[opt_name](net.parameters())
    for step in range(STEPS):
        x, y, t = batch(step, n * B)
        F.mse_loss(net(x, y), t).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), MAX_NORM)
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in net.parameters()]


def _loss(model, comm, step):
    x, y, t = batch(step, comm.size * B)
    rows = slice(comm.rank * B, (comm.rank + 1) * B)
    return F.mse_loss(model(x[rows], y[rows]), t[rows])


def build(case: str, opt_name: str, comm):
    """(net, step_fn) for one case; each rank starts from different weights (seed 1000+rank)
    so the broadcast from rank 0 is part of what is tested."""
    net = make_net(1000 + comm.rank if case != "ddp" else 1000)
    if case == "dp":
        model = rp.DataParallel(net, group=comm, bucket_cap_mb=0.01, first_bucket_mb=0.002)
        opt = OPTIMIZERS[opt_name](model.parameters())
        clip = lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    elif case in ("zero1", "zero2"):
        cls, kw = OPT_CLASSES[opt_name]
        model = net
        opt = rp.ZeroOptimizer(net.parameters(), cls, group=comm, stage=int(case[-1]), **kw)
        clip = lambda: opt.clip_grad_norm_(MAX_NORM)
    elif case == "zero2_fwd":           # parameters sent under the next forward, bucket by bucket
        cls, kw = OPT_CLASSES[opt_name]
        model = net
        opt = rp.ZeroOptimizer(net, cls, group=comm, stage=2, gather_in_forward=True,
                               bucket_cap_mb=0.002, **kw)
        clip = lambda: opt.clip_grad_norm_(MAX_NORM)
    elif case in ("fsdp", "fsdp_keep"):
        model = rp.FullyShardedDataParallel(net, units=[net.conv, net.fc, net.head], group=comm,
                                            reshard_after_forward=case == "fsdp")
        opt = OPTIMIZERS[opt_name](model.parameters())
        clip = lambda: model.clip_grad_norm_(MAX_NORM)
        net = Gathered(model)
    elif case == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(net, bucket_cap_mb=0.01)
        model.register_comm_hook(comm, rp.ring_allreduce_hook)
        opt = OPTIMIZERS[opt_name](model.parameters())
        clip = lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
    elif case == "hvd":
        model = net
        rp.broadcast_parameters(net.state_dict(), root_rank=0, group=comm)
        opt = rp.DistributedOptimizer(OPTIMIZERS[opt_name](net.parameters()),
                                      named_parameters=net.named_parameters(), group=comm,
                                      bucket_cap_mb=0.01)
        rp.broadcast_optimizer_state(opt, root_rank=0, group=comm)
        clip = lambda: torch.nn.utils.clip_grad_norm_(net.parameters(), MAX_NORM)
    else:
        raise ValueError(f"unknown case {case!r}")

    def step_fn(step: int) -> None:
        _loss(model, comm, step).backward()
        clip()
        opt.step()
        opt.zero_grad()
        if case == "zero2_fwd":         # the checks read the parameters a forward received
            with torch.no_grad():
                _loss(model, comm, step)

    return net, step_fn


class Gathered:
    """A fully sharded model's parameters, gathered (its module holds them only in compute)."""

    def __init__(self, model):
        self.model, self.names = model, [n for n, _ in model.module.named_parameters()]

    def parameters(self):
        sd = self.model.state_dict()
        return [sd[n] for n in self.names]


def identical_across_ranks(params, comm) -> bool:
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    everyone = torch.empty(comm.size * flat.numel(), dtype=flat.dtype)
    rc.all_gather_into_tensor(everyone, flat, group=comm)
    rows = everyone.view(comm.size, -1)
    return bool((rows == rows[0]).all())


def rel_diff(params, ref) -> float:
    return max(((p.detach() - r).abs().max() / r.abs().max().clamp_min(1e-12)).item()
               for p, r in zip(params, ref))


def run_case(case: str, opt_name: str, comm, ref) -> list[str]:
    """Failures of one case (empty: it passed)."""
    net, step_fn = build(case, opt_name, comm)
    failures = []
    for step in range(STEPS):
        step_fn(step)
        if not identical_across_ranks(list(net.parameters()), comm):
            failures.append(f"{case}/{opt_name}: ranks differ after step {step}")
            break
    diff = rel_diff(list(net.parameters()), ref)
    if not diff <= TOL:
        failures.append(f"{case}/{opt_name}: max relative difference {diff:.2e} > {TOL:.0e}")
    return failures


CASES = ("dp", "zero1", "zero2", "zero2_fwd", "hvd", "fsdp", "fsdp_keep")


def run_matrix(comm, cases=CASES, opts=("sgd", "adamw")) -> list[str]:
    failures = []
    for opt_name in opts:
        ref = reference(opt_name, comm.size)
        for case in cases:
            failures += run_case(case, opt_name, comm, ref)
    return failures
