"""Command line of ``ringflow-bench``: nccl-tests' flags plus ringflow's own.

    ringflow-bench -b 1M -e 128M -f 2 -n 20 -w 5 -c 1 --collective all_reduce --algorithm ring,rhd
"""
from __future__ import annotations

import argparse
import os

import torch

from .hosts import parse_rate

COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce", "all_to_all",
               "sendrecv")
DTYPES = {"float": torch.float32, "float32": torch.float32, "half": torch.float16,
          "float16": torch.float16, "bfloat16": torch.bfloat16, "double": torch.float64,
          "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8,
          "int32": torch.int32, "int": torch.int32, "int64": torch.int64}
TYPE_NAMES = {torch.float32: "float", torch.float16: "half", torch.bfloat16: "bfloat16",
              torch.float64: "double", torch.int8: "int8", torch.uint8: "uint8",
              torch.int32: "int32", torch.int64: "int64"}
OPS = ("sum", "prod", "max", "min", "avg")
UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_bytes(text: str) -> int:
    """'4K' -> 4096, '1M' -> 1048576, '128' -> 128 (binary units, as nccl-tests)."""
    s = text.strip().upper().removesuffix("IB").removesuffix("B") if text else ""
    unit = s[-1] if s and s[-1] in UNITS else ""
    try:
        value = float(s[: len(s) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not a number with an optional K/M/G "
                                         "suffix (e.g. 64K, 1M, 2G)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"size {text!r} is negative")
    return int(value * UNITS[unit])


def sizes(minbytes: int, maxbytes: int, stepfactor: float) -> list[int]:
    """Geometric sizes from min to max inclusive (nccl-tests' -b/-e/-f)."""
    if maxbytes < minbytes:
        raise ValueError(f"--maxbytes {maxbytes} is below --minbytes {minbytes}")
    if stepfactor <= 1 and maxbytes > minbytes:
        raise ValueError(f"--stepfactor must be > 1 to go from {minbytes} to {maxbytes}, got {stepfactor}")
    out, s = [], max(minbytes, 1) if maxbytes else 0
    while s <= maxbytes:
        out.append(int(s))
        if stepfactor <= 1:
            break
        s = max(s + 1, s * stepfactor)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ringflow-bench", description=(
        "nccl-tests-style collective benchmark: ringflow's algorithms beside the backend's own "
        "collective, same processes, interleaved; medians. Launch with torchrun or mpirun."))
    p.add_argument("-b", "--minbytes", type=parse_bytes, default=parse_bytes("32M"))
    p.add_argument("-e", "--maxbytes", type=parse_bytes, default=parse_bytes("32M"))
    p.add_argument("-f", "--stepfactor", type=float, default=2.0)
    p.add_argument("-n", "--iters", type=int, default=20)
    p.add_argument("-w", "--warmup_iters", type=int, default=5)
    p.add_argument("-c", "--check", type=int, default=1,
                   help="1 (default, as nccl-tests): verify results exactly; 0: skip the check")
    p.add_argument("-o", "--op", choices=OPS, default="sum")
    p.add_argument("-d", "--datatype", choices=sorted(DTYPES), default="float")
    p.add_argument("-r", "--root", type=int, default=0)
    p.add_argument("--collective", default="all_reduce",
                   help=f"one of {', '.join(COLLECTIVES)}, a comma list, or all (a table each)")
    p.add_argument("--algorithm", default="auto",
                   help="auto, a name, a comma list (ring,rhd) or 'all' (every ringflow algorithm)")
    p.add_argument("--transport", choices=("auto", "torch", "mpi", "shm"), default="auto")
    p.add_argument("--builtin", default="auto",
                   help="built-in collectives to compare with: auto (the transport's own; gloo "
                        "under torchrun or MPI under mpirun for shm), torch, mpi, a list, or none")
    p.add_argument("--no-builtin", dest="builtin", action="store_const", const="none")
    p.add_argument("--intra", choices=("auto", "same", "shm"), default="auto",
                   help="transport inside a node for two_level (shm: shared memory; auto: shm "
                        "where the world spans several nodes)")
    p.add_argument("--modes", default="oop,ip",
                   help="out-of-place (oop) and/or in-place (ip) runs; ip alone halves the time")
    p.add_argument("--json", metavar="FILE", help="write every row (median, p10, p90) as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="busbw against size, log-x")
    p.add_argument("--link-rate", metavar="RATE",
                   help="the link's rate in tc's units (2gbit, 500mbit): adds busbw as a share "
                        "of it (busbw/link)")
    p.add_argument("--tune", action="store_true",
                   help="fit alpha/beta/gamma and the native lines; write the tune cache")
    return p


def one(args: argparse.Namespace, collective: str) -> argparse.Namespace:
    """``args`` for one of several collectives: --json/--plot FILE become FILE-<collective>.ext."""
    several = len(args.collectives) > 1
    out = argparse.Namespace(**{**vars(args), "collective": collective})
    for flag in ("json", "plot"):
        path = getattr(args, flag)
        if path and several:
            root, ext = os.path.splitext(path)
            setattr(out, flag, f"{root}-{collective}{ext}")
    return out


def parse(argv=None) -> argparse.Namespace:
    """Parse and validate; errors name the flag and the fix."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.iters < 1 or args.warmup_iters < 0:
        parser.error(f"-n must be >= 1 and -w >= 0, got -n {args.iters} -w {args.warmup_iters}")
    try:
        args.sizes = sizes(args.minbytes, args.maxbytes, args.stepfactor)
    except ValueError as e:
        parser.error(str(e))
    args.collectives = COLLECTIVES if args.collective == "all" else \
        tuple(c.strip() for c in args.collective.split(",") if c.strip())
    if not args.collectives or set(args.collectives) - set(COLLECTIVES):
        parser.error(f"--collective {args.collective!r}: choose from {', '.join(COLLECTIVES)}, "
                     "a comma list of them, or all")
    args.collective = args.collectives[0]
    args.dtype = DTYPES[args.datatype]
    try:        # bytes per second, as busbw is counted
        args.link_Bps = None if args.link_rate is None else parse_rate(args.link_rate) / 8
    except ValueError as e:
        parser.error(f"--link-rate: {e}")
    args.modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not args.modes or set(args.modes) - {"oop", "ip"}:
        parser.error(f"--modes takes oop, ip or oop,ip; got {args.modes}")
    if args.op == "avg" and args.dtype not in (torch.float32, torch.float64, torch.float16,
                                               torch.bfloat16):
        parser.error(f"-o avg needs a floating datatype, got -d {args.datatype}")
    return args
