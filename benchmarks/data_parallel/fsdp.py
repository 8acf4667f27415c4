"""Step time and memory of a fully sharded DiT: ringflow FullyShardedDataParallel against torch
FSDP2 (``fully_shard`` on gloo), both sharding every block plus the root, AdamW, fp32.

    OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 benchmarks/data_parallel/fsdp.py --preset S
    ... --modes ringflow_fsdp          # one mode per launch: its peak RSS is that mode's alone

Modes run in the same launch, interleaved round by round (ratios inside a launch are steady,
absolute times drift between launches). Per rank it reports the step time, the bytes of
parameters + gradients + optimizer state each mode holds after a step (counted from the
tensors: shards, their gradients, AdamW's exp_avg / exp_avg_sq), and the process's peak RSS
(meaningful when one mode runs alone).

  compute        the same step, unsharded, no communication (the floor)
  ringflow_fsdp  ringflow.parallel.FullyShardedDataParallel (default units: DiT's blocks)
  torch_fsdp2    torch.distributed.fsdp.fully_shard on each block, then on the model
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

import ringflow
from ringflow import collectives as rc
from ringflow import parallel as rp
from ringflow.models.dit import DiT


def make_model(args) -> torch.nn.Module:
    torch.manual_seed(0)
    return DiT(in_channels=4, image_size=args.image, patch_size=2, preset=args.preset,
               num_classes=10)


def data(args, rank: int):
    g = torch.Generator().manual_seed(rank)
    return (torch.randn(args.batch, 4, args.image, args.image, generator=g),
            torch.rand(args.batch, generator=g), torch.randint(0, 10, (args.batch,), generator=g))


def local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP2), or the tensor."""
    return t.to_local() if hasattr(t, "to_local") else t


def state_bytes(params, opt) -> int:
    """Parameters + gradients + optimizer state this rank holds for ``params``."""
    total = 0
    for p in params:
        total += local(p).numel() * p.element_size()
        if p.grad is not None:
            total += local(p.grad).numel() * p.grad.element_size()
    for s in opt.state.values():
        total += sum(local(v).numel() * v.element_size() for v in s.values()
                     if torch.is_tensor(v) and v.dim())
    return total


class Mode:
    """One model + AdamW; ``step()`` trains once, ``held()`` counts its bytes."""

    def __init__(self, model, opt, x, t, y):
        self.model, self.opt, self.batch = model, opt, (x, t, y)

    def step(self) -> None:
        x, t, y = self.batch
        F.mse_loss(self.model(x, t, y), x).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=False)       # keep gradients so held() counts them

    def held(self) -> int:
        return state_bytes(list(self.model.parameters()), self.opt)


def build(name: str, args, comm) -> Mode:
    x, t, y = data(args, comm.rank)
    adamw = lambda params: torch.optim.AdamW(params, lr=1e-4)
    model = make_model(args)
    if name == "ringflow_fsdp":
        model = rp.FullyShardedDataParallel(model, group=comm)
    elif name == "torch_fsdp2":
        from torch.distributed.fsdp import fully_shard
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
    elif name != "compute":
        raise ValueError(f"unknown mode {name!r}")
    return Mode(model, adamw(model.parameters()), x, t, y)


def timed(fn, comm) -> float:
    rc.barrier(group=comm)
    start = time.perf_counter()
    fn()
    rc.barrier(group=comm)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="S", help="DiT size preset (T, S, B, ...)")
    ap.add_argument("--image", type=int, default=16, help="image side (latent-sized, 4 channels)")
    ap.add_argument("--batch", type=int, default=4, help="images per rank")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=2, help="steps per mode per round")
    ap.add_argument("--modes", default="compute,ringflow_fsdp,torch_fsdp2")
    ap.add_argument("--out", default=None, help="append the table to this file (rank 0)")
    args = ap.parse_args()
    comm = ringflow.init()
    if not dist.is_initialized():          # FSDP2 needs gloo beside an shm/mpi transport
        from ringflow.transport.torch_dist import init_process_group
        init_process_group(comm.launch, torch.device("cpu"), timeout=300)
    modes = {name: build(name, args, comm) for name in args.modes.split(",")}
    for m in modes.values():               # warm-up: allocations, optimizer state
        timed(m.step, comm)
    times = {k: [] for k in modes}
    for _ in range(args.rounds):
        for name, m in modes.items():
            times[name] += [timed(m.step, comm) for _ in range(args.steps)]
    held = {k: m.held() for k, m in modes.items()}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # MiB (Linux: KiB)
    report(args, comm, times, held, rss)
    ringflow.shutdown()


def report(args, comm, times: dict, held: dict, rss: float) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    peak = torch.tensor([rss], dtype=torch.float64)
    rc.all_reduce(peak, op=rc.ReduceOp.MAX, group=comm)
    if comm.rank:
        return
    nparams = sum(p.numel() for p in make_model(args).parameters())
    base = med.get("torch_fsdp2")
    rows = [f"DiT-{args.preset} ({nparams / 1e6:.1f}M params), {comm.size} ranks, batch "
            f"{args.batch}/rank, {args.image}x{args.image}x4, AdamW fp32, transport "
            f"{comm.transport.name}; medians of {len(next(iter(times.values())))} steps; peak "
            f"RSS of the launch (max over ranks) {peak.item():.0f} MiB", "",
            "| mode | step (ms) | vs torch_fsdp2 | params+grads+AdamW per rank (MiB) | "
            "vs replicated |", "|---|---|---|---|---|"]
    replicated = 16 * nparams
    for k, v in med.items():
        ratio = f"{v / base:.2f}x" if base else ""
        rows.append(f"| {k} | {v * 1e3:.0f} | {ratio} | {held[k] / 2**20:.1f} | "
                    f"{held[k] / replicated:.3f} |")
    text = "\n".join(rows)
    print(text, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n\n")


if __name__ == "__main__":
    main()
