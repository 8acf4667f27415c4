"""Piece size of the overlapped two-level all-reduce against the built-in, interleaved.

Every round runs two_level once per piece size and the built-in (gloo) once, in the same
processes; the table gives rank 0's medians over rounds and the ratio of the built-in's time to
each configuration's (>1: ringflow faster). "0" runs the stages one after the other (no
overlap); "1M/2": pieces of 1 MiB, two crossing the nodes at once (no "/K":
``hierarchical.IN_FLIGHT``). It is how ``hierarchical.PIECE_BYTES`` and ``IN_FLIGHT`` were
chosen; run it on emulated hosts:

    python benchmarks/cluster/cluster.py --hosts 2 --ranks-per-host 2 --rate 2gbit \\
        --script benchmarks/collectives/two_level_sweep.py --sizes 4M,16M,64M --pieces 0,1M/1,1M/2,2M/2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import ringflow
from ringflow.bench.args import parse_bytes
from ringflow.collectives import hierarchical, select
from ringflow.collectives.ops import ReduceOp

sys.path.insert(0, str(Path(__file__).parent))
from interleave import medians, print_rows  # noqa: E402  (the sweeps' shared timing)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="4M,16M,64M")
    p.add_argument("--pieces", default="0,512K,1M,2M,4M")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    comm = ringflow.init()
    tr = comm.transport
    for nbytes in (parse_bytes(s) for s in args.sizes.split(",")):
        buf = torch.ones(nbytes // 4)
        runs = {f"piece {spec}": (lambda s=s, k=k: hierarchical.all_reduce(
                    comm, buf, ReduceOp.SUM, select._across_nodes, s or nbytes + 1, k))
                for spec, s, k in map(_config, args.pieces.split(","))}
        runs["builtin"] = lambda: tr.native_all_reduce(buf, "sum")
        print_rows(comm, nbytes, medians(runs, buf, tr, args.rounds), width=12)
    ringflow.shutdown()


def _config(spec: str) -> tuple[str, int, int | None]:
    """"2M/2" -> ("2M/2", piece bytes, pieces in flight); no "/K": the default in flight."""
    size, _, flight = spec.partition("/")
    return spec, parse_bytes(size), int(flight) if flight else None


if __name__ == "__main__":
    main()
