"""Channels and slice size of the pipelined ring against the built-in all-reduce, interleaved.

Every round runs each configuration once and the built-in (gloo under torchrun, MPI under
mpirun) once, in the same processes; the table gives medians over rounds and the ratio of
each configuration's time to the built-in's (>1: ringflow faster). It is how the per-transport
defaults of ``ring_channels`` and ``slice_bytes`` were chosen; "rd" in ``--configs`` adds
recursive doubling (what auto weighs against the ring for small buffers), "raw" the same
exchange of the whole buffer with torch.distributed's own isend/irecv and one add (2 ranks over
torch only: the floor under ringflow's layers).

    RINGFLOW_TRANSPORT=torch torchrun --nproc_per_node=2 benchmarks/collectives/pipeline_sweep.py \\
        --sizes 1M,4M,16M,64M --configs 1x0,1x256K,2x256K,4x1M --rounds 15
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import ringflow
from ringflow.bench.args import parse_bytes
from ringflow.collectives import pipeline, tree
from ringflow.collectives.ops import ReduceOp

sys.path.insert(0, str(Path(__file__).parent))
from interleave import medians, print_rows  # noqa: E402  (the sweeps' shared timing)


def parse_configs(text: str) -> list[tuple[int, int]]:
    """'1x0,2x256K' -> [(1, 0), (2, 262144)]: channels x slice bytes (0: whole chunks)."""
    out = []
    for item in filter(None, text.split(",")):
        c, _, s = item.partition("x")
        out.append((int(c), parse_bytes(s)))
    return out


def runs_for(comm, buf, configs: str) -> dict:
    """name -> call, for each pipelined-ring configuration (and "rd")."""
    wanted = configs.split(",")
    runs = {f"{c}x{s >> 10}K": (lambda c=c, s=s: pipeline.all_reduce(comm, buf, ReduceOp.SUM, c, s))
            for c, s in parse_configs(",".join(w for w in wanted if w not in ("rd", "raw")))}
    if "rd" in wanted:
        runs["rd"] = lambda: tree.all_reduce_rd(comm, buf, ReduceOp.SUM)
    if "raw" in wanted:
        runs["raw"] = raw_exchange(comm, buf)
    return runs


def raw_exchange(comm, buf):
    """rd for 2 ranks with torch.distributed's calls: swap whole buffers, add (lower rank first)."""
    import torch.distributed as dist
    if comm.size != 2 or not comm.transport.name.startswith("torch"):
        raise SystemExit("config 'raw' needs 2 ranks over torch.distributed")
    peer, theirs = 1 - comm.rank, torch.empty_like(buf)

    def run():
        r, s = dist.irecv(theirs, peer), dist.isend(buf, peer)
        r.wait()
        s.wait()
        torch.add(theirs, buf, out=buf) if comm.rank else torch.add(buf, theirs, out=buf)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1M,4M,16M,64M")
    p.add_argument("--configs", default="1x0,1x256K,2x256K,4x256K,2x1M")
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    comm = ringflow.init()
    tr = comm.transport
    for nbytes in (parse_bytes(s) for s in args.sizes.split(",")):
        buf = torch.ones(nbytes // 4)
        runs = runs_for(comm, buf, args.configs)
        runs["builtin"] = lambda: tr.native_all_reduce(buf, "sum")
        print_rows(comm, nbytes, medians(runs, buf, tr, args.rounds, warmups=2), width=10,
                   busbw=True)
    ringflow.shutdown()


if __name__ == "__main__":
    main()
