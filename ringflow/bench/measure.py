"""Time one benchmark row: every implementation, out-of-place and in-place, interleaved.

Each iteration runs every implementation once per mode, each call between two
barriers' worth of synchronisation, so all of them see the same machine state; the
order rotates every iteration, because a call runs slower after one that swept other
memory through the caches (by up to a third at 4 MiB here). Per-call times are maxed
over ranks and summarised as median, p10 and p90.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
import torch

from ..collectives import select
from ..collectives import all_gather_into_tensor, all_reduce, all_to_all_single, barrier, \
    broadcast, reduce, reduce_scatter_tensor
from .cases import IN_PLACE_ONLY, Case, inputs, recv_numel, send_numel, wrong

MODES = ("oop", "ip")


@dataclasses.dataclass
class Impl:
    label: str                                  # "ring", "auto:rhd", "builtin"
    algorithm: str                              # what ran: a ringflow name or "native"
    run: Callable[[torch.Tensor, torch.Tensor], None]   # run(out, inp)


def ringflow_impl(comm, case: Case, algorithm: str) -> Impl:
    """ringflow's verb for ``case.collective`` with ``algorithm`` (auto resolved now, for the label)."""
    c, op, root, kw = case.collective, case.op, case.root, {"group": comm}
    name, label = algorithm, algorithm
    if c in select.ALGORITHMS:
        name, _ = select.choose(comm, c, case.size, algorithm, dtype=case.dtype)
        label = f"auto:{name}" if algorithm == "auto" else name
        kw["algorithm"] = name
    runs = {
        "all_reduce": lambda out, inp: all_reduce(out, op=op, **kw),
        "reduce_scatter": lambda out, inp: reduce_scatter_tensor(out, inp, op=op, **kw),
        "all_gather": lambda out, inp: all_gather_into_tensor(out, inp, **kw),
        "broadcast": lambda out, inp: broadcast(out, src=root, **kw),
        "reduce": lambda out, inp: reduce(out, dst=root, op=op, **kw),
        "all_to_all": lambda out, inp: all_to_all_single(out, inp, group=comm),
        "sendrecv": lambda out, inp: _sendrecv(comm, out, inp)}
    return Impl(label, name, runs[c])


def _sendrecv(comm, out: torch.Tensor, inp: torch.Tensor) -> None:
    right, left = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    sw, rw = comm.sendrecv(inp, right, out, left)
    comm.wait(rw, peer=left)
    comm.wait(sw, peer=right)


def builtin_impl(transport, case: Case, label: str = "builtin", own: bool = True) -> Impl | None:
    """The backend's own collective, called directly on ``transport`` (None: it has none).

    ``own``: ``transport`` is the one ringflow runs over (so the tuned native line predicts it).
    """
    op, root = _op(case.op).value, case.root       # transports take the op by name
    method = getattr(transport, f"native_{case.collective}", None)
    if method is None:
        return None
    runs = {
        "all_reduce": lambda out, inp: method(out, op),
        "reduce_scatter": lambda out, inp: method(out, inp, op),
        "all_gather": lambda out, inp: method(out, inp),
        "broadcast": lambda out, inp: method(out, root),
        "reduce": lambda out, inp: method(out, root, op),
        "all_to_all": lambda out, inp: method(out, inp)}
    return Impl(label, "native" if own else "external", runs[case.collective])


def _op(name: str):
    from ..collectives.ops import as_reduce_op
    return as_reduce_op({"prod": "product"}.get(name, name))


class Buffers:
    """send (pristine input), recv (out-of-place output), ip (in-place buffer)."""

    def __init__(self, case: Case, device: torch.device):
        self.case, self.device = case, device
        self.send = torch.empty(send_numel(case), dtype=case.dtype, device=device)
        self.recv = torch.empty(recv_numel(case), dtype=case.dtype, device=device)
        self.ip = torch.empty(max(send_numel(case), recv_numel(case)), dtype=case.dtype, device=device)
        self.reset()

    def reset(self) -> None:
        c = self.case
        self.send.copy_(inputs(c.rank, self.send.numel(), c.dtype, c.op))
        self.recv.zero_()
        self.ip.zero_()
        out, inp = self.pair("ip")
        if inp is not None:
            inp.copy_(inputs(c.rank, inp.numel(), c.dtype, c.op))

    def pair(self, mode: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(out, inp) for ``mode``; (None, None) where the collective has no in-place form."""
        c, k, r = self.case.collective, self.case.count, self.case.rank
        if mode == "oop":
            return self.recv, self.send
        if c in IN_PLACE_ONLY:
            return self.ip[:k], self.ip[:k]
        if c == "reduce_scatter":
            return self.ip[r * k:(r + 1) * k], self.ip
        if c == "all_gather":
            return self.ip, self.ip[r * k:(r + 1) * k]
        return None, None


def call(impl: Impl, bufs: Buffers, mode: str) -> bool:
    """One call of ``impl`` in ``mode``; False when the mode does not exist for the collective."""
    out, inp = bufs.pair(mode)
    if out is None:
        return False
    if mode == "oop" and bufs.case.collective in IN_PLACE_ONLY:
        out.copy_(inp)                      # the in-place verb needs its output to start as input
    impl.run(out, inp)
    return True


def _sync(comm, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    native = getattr(comm.transport, "native_barrier", None)
    native() if native is not None else barrier(group=comm)


def time_row(comm, case: Case, impls: list[Impl], iters: int, warmup: int, device,
             modes=MODES) -> dict:
    """{(label, mode): seconds per iteration, max over ranks} for every implementation."""
    bufs = Buffers(case, device)
    keys = [(i.label, m) for i in impls for m in modes if bufs.pair(m)[0] is not None]
    times = {k: [] for k in keys}
    for it in range(warmup + iters):
        k = it % len(impls)
        for impl in impls[k:] + impls[:k]:
            for mode in MODES:
                if (impl.label, mode) not in times:
                    continue
                _sync(comm, device)
                t0 = time.perf_counter()
                call(impl, bufs, mode)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if it >= warmup:
                    times[(impl.label, mode)].append(time.perf_counter() - t0)
    table = torch.tensor([times[k] for k in keys], dtype=torch.float64)
    all_reduce(table, op="max", group=comm, algorithm="ring")
    return {k: table[i].numpy() for i, k in enumerate(keys)}


def check_row(comm, case: Case, impls: list[Impl], device, modes=MODES) -> dict:
    """{(label, mode): wrong elements summed over ranks}, each from freshly reset inputs."""
    bufs = Buffers(case, device)
    counts = {}
    for impl in impls:
        for mode in modes:
            bufs.reset()
            if call(impl, bufs, mode):
                counts[(impl.label, mode)] = wrong(bufs.pair(mode)[0], case)
    keys = list(counts)
    total = torch.tensor([counts[k] for k in keys] or [0], dtype=torch.int64)
    all_reduce(total, op="sum", group=comm, algorithm="ring")
    return {k: int(total[i]) for i, k in enumerate(keys)}


def summarise(seconds: np.ndarray) -> dict:
    """Median, p10 and p90 in microseconds."""
    p10, med, p90 = np.percentile(seconds, [10, 50, 90]) * 1e6
    return {"time_us": float(med), "p10_us": float(p10), "p90_us": float(p90)}
