"""Ranks that call collectives that do not match: the cases of the no-silent-divergence suite.

Each case runs on a group of 2+ ranks, rank 0 and rank 1 disagreeing; every rank returns what it
saw. The suite's rule: every rank ends in an error within the timeout; none returns wrong bytes.

    outcome = run_case("extra", comm, numel=64, algorithm="auto")
"""
from __future__ import annotations

import json
import time

import torch

from ringflow import collectives as rc
from ringflow.collectives.select import ALGORITHMS


def _bcast(b, comm, alg):
    """Broadcast with ``alg`` where broadcast has it (two_level, ring...: all-reduce's only)."""
    rc.broadcast(b, src=0, group=comm, algorithm=alg if alg in ALGORITHMS["broadcast"] else "auto")


def _extra(comm, numel, alg):
    """Rank 0 makes one broadcast more than the others, then all agree (the issue's trial)."""
    y = torch.full((numel,), float(comm.rank + 1))
    b = torch.full((numel,), 7.0 if comm.rank == 0 else 0.0)
    if comm.rank == 0:
        _bcast(b, comm, alg)
        b.fill_(9.0)
    rc.all_reduce(y, group=comm, algorithm=alg)
    _bcast(b, comm, alg)
    return {"y": (y, float(sum(range(1, comm.size + 1)))), "b": (b, 9.0)}


def _missing(comm, numel, alg):
    """Rank 1 skips the all-reduce the others make."""
    y = torch.full((numel,), float(comm.rank + 1))
    b = torch.full((numel,), 9.0 if comm.rank == 0 else 0.0)
    if comm.rank != 1:
        rc.all_reduce(y, group=comm, algorithm=alg)
    _bcast(b, comm, alg)
    return {"b": (b, 9.0)}


def _order(comm, numel, alg):
    """Rank 1 makes the same two calls in the other order."""
    y = torch.full((numel,), float(comm.rank + 1))
    b = torch.full((numel,), 9.0 if comm.rank == 0 else 0.0)
    calls = [lambda: rc.all_reduce(y, group=comm, algorithm=alg),
             lambda: _bcast(b, comm, alg)]
    for call in (calls[::-1] if comm.rank == 1 else calls):
        call()
    return {"y": (y, float(sum(range(1, comm.size + 1)))), "b": (b, 9.0)}


def _verb(comm, numel, alg):
    """Rank 1 broadcasts where the others all-reduce (same tensor size)."""
    y = torch.full((numel,), float(comm.rank + 1))
    if comm.rank == 1:
        _bcast(y, comm, alg)
    else:
        rc.all_reduce(y, group=comm, algorithm=alg)
    return {"y": (y, float(sum(range(1, comm.size + 1))))}


def _op(comm, numel, alg):
    """Rank 1 asks for MAX where the others ask for SUM."""
    y = torch.full((numel,), float(comm.rank + 1))
    rc.all_reduce(y, op=rc.ReduceOp.MAX if comm.rank == 1 else rc.ReduceOp.SUM, group=comm,
                  algorithm=alg)
    return {"y": (y, float(sum(range(1, comm.size + 1))))}


def _dtype(comm, numel, alg):
    """Rank 1 reduces int32 where the others reduce float32: the same bytes on the wire."""
    dtype = torch.int32 if comm.rank == 1 else torch.float32
    y = torch.full((numel,), comm.rank + 1, dtype=dtype)
    rc.all_reduce(y, group=comm, algorithm=alg)
    return {"y": (y, float(sum(range(1, comm.size + 1))))}


def _width(comm, numel, alg):
    """Rank 1 reduces float64 where the others reduce float32: twice the bytes on the wire."""
    dtype = torch.float64 if comm.rank == 1 else torch.float32
    y = torch.full((numel,), comm.rank + 1, dtype=dtype)
    rc.all_reduce(y, group=comm, algorithm=alg)
    return {"y": (y, float(sum(range(1, comm.size + 1))))}


CASES = {"extra": _extra, "missing": _missing, "order": _order, "verb": _verb, "op": _op,
         "dtype": _dtype, "width": _width}
# the dtypes of each dtype case: rank 0's, rank 1's (what a mismatch message must name)
DTYPES = {"dtype": ("float32", "int32"), "width": ("float32", "float64")}


def run_case(case: str, comm, numel: int, algorithm: str = "auto") -> dict:
    """What this rank saw: {"rank", "error" (class name or None), "message", "wrong", "seconds"}."""
    start = time.monotonic()
    out = {"rank": comm.rank, "error": None, "message": "", "wrong": []}
    try:
        results = CASES[case](comm, numel, algorithm)
        out["wrong"] = [name for name, (t, want) in results.items()
                        if not bool(torch.all(t.double() == want))]
    except Exception as e:                      # noqa: BLE001 - what the rank saw is the result
        out["error"], out["message"] = type(e).__name__, str(e)
    out["seconds"] = time.monotonic() - start
    return out


def results_in(out: str) -> list[dict]:
    """The outcomes launched ranks printed as ``RESULT {json}`` (their lines may interleave)."""
    decoder, outs, at = json.JSONDecoder(), [], out.find("RESULT {")
    while at >= 0:
        record, end = decoder.raw_decode(out, at + len("RESULT "))
        outs.append(record)
        at = out.find("RESULT {", end)
    return outs
