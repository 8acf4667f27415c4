"""Train and all-reduce across "hosts" (torchrun agents, network namespaces); optionally wait for
the link between them to be cut and report how the failure surfaced.

    torchrun --nnodes=2 --nproc_per_node=2 --node_rank=K --rdzv-backend=c10d \
        --rdzv-endpoint=HOST:PORT tests/faults/twohost_worker.py [--wait-cut]

Prints "TWOHOST OK rank R ..." once the all-reduce and a DataParallel run agree with a
single-process reference; with --wait-cut then all-reduces until an error and prints
"CUT rank R after S s: <error>" (exit 3), or "NO CUT" after --cut-deadline seconds.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import ringflow  # noqa: E402
from ringflow import collectives as rc  # noqa: E402
from ringflow.parallel import DataParallel  # noqa: E402


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(16, 8, generator=g)
    return x, x.sum(1, keepdim=True) * 0.5 + 1.0


def train(model: nn.Module, ranks: list[int], steps: int, wrap=None) -> nn.Module:
    """SGD on the loss averaged over ``ranks``' batches (wrapped: this rank's batch only)."""
    net = wrap(model) if wrap else model
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for step in range(steps):
        opt.zero_grad()
        xs, ys = zip(*(batch(r, step) for r in ranks))
        loss = nn.functional.mse_loss(net(torch.cat(xs)), torch.cat(ys))
        loss.backward()
        opt.step()
    return model


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--wait-cut", action="store_true")
    p.add_argument("--cut-deadline", type=float, default=60)
    a = p.parse_args()
    comm = ringflow.init()
    x = torch.arange(1000, dtype=torch.float32) + comm.rank
    rc.all_reduce(x)
    want = torch.arange(1000, dtype=torch.float32) * comm.size + sum(range(comm.size))
    assert torch.equal(x, want), "all_reduce across hosts gave a wrong sum"
    torch.manual_seed(0)
    ours = train(nn.Linear(8, 1), [comm.rank], a.steps, wrap=lambda m: DataParallel(m, group=comm))
    torch.manual_seed(0)
    ref = train(nn.Linear(8, 1), list(range(comm.size)), a.steps)
    for p_ours, p_ref in zip(ours.parameters(), ref.parameters()):
        assert torch.allclose(p_ours, p_ref, atol=1e-5), (p_ours, p_ref)
    flat = torch.cat([q.detach().reshape(-1) for q in ours.parameters()])
    every = torch.empty(flat.numel() * comm.size)
    rc.all_gather_into_tensor(every, flat)
    assert all(torch.equal(c, flat) for c in every.chunk(comm.size)), "ranks' weights differ"
    print(f"TWOHOST OK rank {comm.rank}/{comm.size} node {comm.node}/{comm.num_nodes} "
          f"host {socket.gethostname()}: all_reduce and {a.steps} DataParallel steps match the "
          "single-process reference", flush=True)
    if not a.wait_cut:
        ringflow.shutdown()
        return 0
    return wait_for_cut(comm, a.cut_deadline)


def wait_for_cut(comm, deadline: float) -> int:
    start, t = time.monotonic(), torch.ones(1024)
    while time.monotonic() - start < deadline:
        try:
            rc.all_reduce(t)
        except rc.CollectiveError as e:
            print(f"CUT rank {comm.rank} after {time.monotonic() - start:.1f}s: "
                  f"{type(e).__name__}: {e}", flush=True)
            return 3
        time.sleep(0.05)
    print(f"NO CUT rank {comm.rank} within {deadline}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
