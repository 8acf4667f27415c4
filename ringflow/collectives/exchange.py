"""Personalised exchange (all-to-all) and the barrier: pairwise schedules, no reduction."""
from __future__ import annotations

import torch

from .communicator import Communicator


def all_to_all(comm: Communicator, out: torch.Tensor, inp: torch.Tensor,
               out_bounds: list[tuple[int, int]], in_bounds: list[tuple[int, int]]) -> None:
    """Block j of ``inp`` goes to rank j; block i of ``out`` comes from rank i (flat buffers).

    Step s pairs rank r with r+s (send) and r-s (receive): n-1 steps, each a sendrecv.
    """
    n, r = comm.size, comm.rank
    a, b = in_bounds[r]
    c, d = out_bounds[r]
    out[c:d].copy_(inp[a:b])
    for step in range(1, n):
        dst, src = (r + step) % n, (r - step) % n
        (sa, sb), (ra, rb) = in_bounds[dst], out_bounds[src]
        sw, rw = comm.sendrecv(inp[sa:sb], dst, out[ra:rb], src)
        comm.wait(rw, peer=src, step=step)
        comm.wait(sw, peer=dst, step=step)


def barrier(comm: Communicator) -> None:
    """Dissemination barrier: in round k every rank signals r+2^k and waits for r-2^k."""
    n, r = comm.size, comm.rank
    token = torch.zeros(1, dtype=torch.uint8, device=comm.device)
    got = torch.zeros_like(token)
    dist, step = 1, 0
    while dist < n:
        dst, src = (r + dist) % n, (r - dist) % n
        sw, rw = comm.sendrecv(token, dst, got, src)
        comm.wait(rw, peer=src, step=step)
        comm.wait(sw, peer=dst, step=step)
        dist, step = dist * 2, step + 1
