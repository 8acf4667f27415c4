"""The alpha-beta(-gamma) model: predicted seconds of each algorithm, fitted on this machine.

A message of m bytes between two ranks costs alpha + beta*m; reducing m bytes
costs gamma*m (Hockney's model, with the reduction term of Thakur, Rabenseifner &
Gropp 2005). Each algorithm's cost is a formula in (n, m, alpha, beta, gamma); the
backend's own collective ("native") is a fitted line a + b*m per collective.
``ringflow-bench --tune`` measures alpha, beta, gamma and the native lines, and also
times every candidate at the tune sizes: where those points exist the prediction
goes through them (log-log between points; beyond them, the formula scaled to the
nearest point), so a protocol switch inside MPI or gloo, or a cost the formula
misses, cannot make auto pick a loser at a size it has measured. It caches them in ``$RINGFLOW_CACHE`` (default ``~/.cache/ringflow``)/tune-<kind>-n<N>-l<L>.json;
without that file the defaults below are used and "native" is a candidate only
on CUDA (where NCCL's kernels are known to win).

    model = load(comm); seconds = predict(model, "all_reduce", "ring", n=4, nbytes=1 << 20)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from .. import settings


@dataclasses.dataclass
class Model:
    """Fitted link and reduction costs of one transport at one world size."""
    alpha: float                     # seconds per message (latency, incl. Python overhead)
    beta: float                      # seconds per byte on the wire
    gamma: float                     # seconds per byte reduced
    native: dict = dataclasses.field(default_factory=dict)  # collective -> [a, b]
    measured: dict = dataclasses.field(default_factory=dict)  # "collective/alg" -> [[bytes, s]]
    local_size: int = 0              # ranks per node (0: unknown, one node)
    slice_bytes: int = 0             # ring pipeline slice (0: whole chunks)
    stage_bytes: int = 0             # shm staging half (staged collectives' round size)
    stage_read: float = 1.0          # a staged all-reduce's read of a third stage and on, per byte,
                                     # relative to a copy (shm: SHM_STAGE_READ)
    source: str = "default"          # "default" or the tune file it came from
    probe: dict = dataclasses.field(default_factory=dict)  # alg -> [[bytes, s]] (probe.py)


DEFAULTS = {  # these 2-core machines, per message through ringflow's Python
    # (benchmarks/collectives/overheads.py: an exchange costs ~440 us over gloo, ~40 us over MPI
    # or shm); tune replaces them
    "torch": Model(alpha=300e-6, beta=1 / 2.0e9, gamma=1 / 6e9),
    # one node: Open MPI's shared memory copies a byte in and out too (ring 0.9-1.5 GB/s busbw
    # at 4-64 MiB, 2 ranks), so the staged path wins there as on shm; with 4 ranks its messages
    # are as cheap as shm's and the ring family wins large (SHM_STAGE_READ: 4 ranks over MPI,
    # 2026-12-06, rhd 1.00 of the best at 64 MiB where staged ran 0.74; 0.91 at 16 MiB)
    "mpi": Model(alpha=40e-6, beta=1 / 2.0e9, gamma=1 / 6e9, stage_read=1.2),
    # a byte through the shm rings is copied twice (in, out) by Python-driven slices: the ring
    # reached ~1 GB/s busbw at 16 MiB where staged reached 1.2-2.5 (one node, 2 ranks)
    "shm": Model(alpha=40e-6, beta=1 / 2.0e9, gamma=1 / 6e9, stage_read=1.2),
    "local": Model(alpha=40e-6, beta=1 / 3.0e9, gamma=1 / 6e9),
}
CUDA_NATIVE = [10e-6, 1 / 100e9]    # NCCL on one node: far below anything done from Python
# Across hosts, without a tune, auto weighs only the ring family and recursive doubling (for
# latency), as NCCL keeps to rings and trees between nodes: on two emulated hosts x 2 ranks at
# 2 Gbit/s, rhd ran at 0.69-0.75 of the best candidate at 16-64 MiB (README, Across hosts).
ACROSS_HOSTS_PRIOR = ("ring", "two_level", "rd")
# Open MPI's own all-reduce between the ranks of one node, 2 ranks ([bytes, seconds]; from its
# busbw in benchmarks/results/across_hosts.md, one_mpi, 2026-12-02): ~12 us at 4 KiB and 5 GB/s at
# 1 MiB, where a staged round costs tens of us of Python, but 2.6 GB/s at 4 MiB and 0.65 at 64 MiB
# (it page-faults a fresh temporary buffer on every call), where staged ran 2.8.
# At 4 MiB: 3.2 ms, not the 1.6 of that busbw: in the 2026-12-06 runs MPI's call took 3.7-29 ms
# there and lost to staged in 2 of 3 launches (0.33 of the best, median), so staged from ~3 MiB.
MPI_ONE_NODE_ALL_REDUCE = [[4 << 10, 12e-6], [64 << 10, 30e-6], [1 << 20, 200e-6],
                           [4 << 20, 3.2e-3], [16 << 20, 11e-3], [64 << 20, 100e-3]]
# SHM_STAGE_READ (DEFAULTS["shm"].stage_read): with 4 ranks on these 2 cores a staged all-reduce
# reads 4 stages per rank, and over shm the ring family beat it from 16 MiB (ring, rhd, direct
# 1.2-1.4x faster at 16-64 MiB; staged first at 4 KiB-4 MiB; README, Across hosts), while with
# 2 ranks staged won at every size: the third stage and on cost 1.2x a copy. Beside gloo the ring
# family pays TCP, and staged won at every size with 4 ranks too (factor 1).
# Staged collectives move no messages whatever the transport: a round (copy in, counters,
# wait) and memory-speed copies and reductions. Rough figures of these machines; tune's
# measured points replace them.
STAGED_ROUND, STAGED_COPY = 20e-6, 1 / 6e9


def kind(transport) -> str:
    """Cache key of a transport: its name (with backend), and device type when not cpu."""
    name = transport.name.replace("/", "-")
    device = str(getattr(transport, "device", "cpu")).split(":")[0]
    return name if device == "cpu" else f"{name}-{device}"


def cache_dir() -> Path:
    return Path(settings.cache_dir())


def cache_path(kind_: str, size: int, local_size: int) -> Path:
    return cache_dir() / f"tune-{kind_}-n{size}-l{local_size}.json"


def save(model: Model, path: Path) -> None:
    """Write the model atomically (temp file + rename), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(dataclasses.asdict(model), indent=1, sort_keys=True))
    os.replace(tmp, path)


_LOADED: dict[tuple, Model] = {}
generation = 0                    # bumped by forget(): choices memoised under older models expire


def load(comm) -> Model:
    """The model for ``comm``: its tune file if present (read once per process), else defaults."""
    tr = comm.transport
    # keyed on the env var itself, not cache_dir(): resolving the home folder is slow
    key = (kind(tr), comm.size, comm.local_size, settings.get("RINGFLOW_CACHE"))
    if key not in _LOADED:
        path = cache_path(key[0], comm.size, comm.local_size)
        if path.exists():
            fields = json.loads(path.read_text())
            model = Model(**{k: v for k, v in fields.items() if k in Model.__dataclass_fields__})
            model.source = str(path)
        else:
            model = prior(tr, comm.size, comm.local_size)
        model.local_size, model.slice_bytes = comm.local_size, comm.slice_bytes or 0
        model.stage_bytes = stage_bytes(tr)
        _LOADED[key] = model
    return _LOADED[key]


def prior(transport, size: int, local_size: int) -> Model:
    """The model without a tune file: the transport's default costs; the backend's own
    collectives count on CUDA (CUDA_NATIVE) and MPI's all-reduce on one node
    (MPI_ONE_NODE_ALL_REDUCE; choose() leaves it out for the dtypes MPI cannot reduce)."""
    name = transport.name.split("/")[0]
    model = dataclasses.replace(DEFAULTS.get(name, DEFAULTS["torch"]), native={}, measured={})
    if str(getattr(transport, "device", "cpu")).startswith("cuda"):
        model.native = {c: CUDA_NATIVE for c in ("all_reduce", "reduce_scatter",
                                                 "all_gather", "broadcast", "reduce")}
    elif name == "mpi" and local_size == size:
        bus = 2 * (size - 1) / size          # the points are 2 ranks' (bus factor 1)
        model.measured = {"all_reduce/native": [[b, t * bus] for b, t in MPI_ONE_NODE_ALL_REDUCE]}
    return model


def adopt_probe(comm, points: dict) -> Model:
    """Calibrate ``comm``'s prior with the start-up probe's times (probe.py, the same on every
    rank): the prior's curve of the backend's own all-reduce is scaled by how much slower (or
    faster) than staged the probe found it, against what the prior expected, at the probe's
    sizes (geometric mean; never faster than the prior, an idle node's). So a backend slowed
    20x by a busy machine where staged was not stays 20x slower at every size, and an idle
    machine keeps the prior. The other candidates keep
    their formulas: the probe decides between the backend's call and ringflow's."""
    model, n = load(comm), comm.size
    logs = [math.log((tn / ts) / (predict(model, "all_reduce", "native", n, b)
                                  / predict(model, "all_reduce", "staged", n, b)))
            for (b, tn), (_, ts) in zip(points["native"], points["staged"])]
    scale = max(1.0, math.exp(sum(logs) / len(logs)))  # the prior is the idle node: no faster
    model.measured = {**model.measured, "all_reduce/native": [
        [b, t * scale] for b, t in model.measured["all_reduce/native"]]}
    model.probe = points
    global generation
    generation += 1                   # choices memoised before the probe expire
    return model


def allowed(model: Model, alg: str, size: int) -> bool:
    """Whether ``alg`` is a candidate of auto under ``model``: every one, except across hosts
    without a tune (ACROSS_HOSTS_PRIOR)."""
    spans_hosts = 0 < model.local_size < size
    return model.source != "default" or not spans_hosts or alg in ACROSS_HOSTS_PRIOR


def stage_bytes(transport) -> int:
    """The staging half of ``transport`` (0: it cannot stage)."""
    stage = transport.staging()
    return stage.half if stage is not None else 0


def forget() -> None:
    """Drop loaded models (after a new tune file was written)."""
    global generation
    _LOADED.clear()
    generation += 1


def fit_line(sizes, seconds) -> tuple[float, float]:
    """Least-squares (a, b) of seconds = a + b*size, weighting relative error (all sizes count)."""
    m, t = np.asarray(sizes, float), np.asarray(seconds, float)
    if len(m) < 2 or np.ptp(m) == 0:
        raise ValueError(f"fitting a line needs >= 2 distinct sizes, got {list(m)}")
    rows = np.stack([1 / t, m / t], axis=1)
    (a, b), *_ = np.linalg.lstsq(rows, np.ones_like(t), rcond=None)
    return max(float(a), 1e-7), max(float(b), 1e-13)


# ---- the formulas --------------------------------------------------------------------------------
def _ring_steps(n: int, chunk_bytes: float, md: Model) -> float:
    slices = max(1, math.ceil(chunk_bytes / md.slice_bytes)) if md.slice_bytes else 1
    return (n - 1) * slices


def _round(n: int, alpha: float) -> float:
    """One round of n-1 concurrent messages: the first pays alpha, the others half of it
    (their latencies overlap, their per-message CPU cost does not)."""
    return alpha * (1 + (n - 2) / 2)


def _staged(staged_bytes: float, copied: float, reduced: float, md: Model) -> float:
    """A staged collective: a round per stage half of ``staged_bytes``, then memory-speed
    copies and reductions (reading peers' stages costs what copying them does)."""
    rounds = max(1, math.ceil(staged_bytes / (md.stage_bytes or 2 << 20)))
    return rounds * STAGED_ROUND + (copied + reduced) * STAGED_COPY


def _log2(n: int) -> tuple[int, int]:
    p = 1 << (n.bit_length() - 1)
    return p.bit_length() - 1, n - p


def _all_reduce(alg: str, n: int, m: float, md: Model) -> float | None:
    a, b, g = md.alpha, md.beta, md.gamma
    k, rem = _log2(n)
    fold = (2 * (a + m * b) + m * g) if rem else 0.0
    p = n - rem
    if alg == "ring":
        return 2 * _ring_steps(n, m / n, md) * a + 2 * (n - 1) / n * m * b + (n - 1) / n * m * g
    if alg in ("direct", "fp32acc"):
        return 2 * _round(n, a) + 2 * (n - 1) / n * m * b + (n - 1) / n * m * g
    if alg == "rd":
        return k * (a + m * b + m * g) + fold
    if alg == "rhd":
        return 2 * k * a + 2 * (p - 1) / p * m * b + (p - 1) / p * m * g + fold
    if alg == "naive":
        return 2 * (n - 1) * (a + m * b) + (n - 1) * m * g
    if alg == "staged":                      # stage m, read n stages of m
        return _staged(m, m, (min(n, 2) + max(n - 2, 0) * md.stage_read) * m, md)
    if alg == "two_level":
        local = md.local_size or n
        nodes = n // local
        inside = 2 * (local - 1) * a + 2 * (local - 1) / local * m * b + (local - 1) / local * m * g
        across = min(_all_reduce(x, nodes, m / local, md) for x in ("ring", "rd")) if nodes > 1 else 0
        return inside + across
    return None


def predict(md: Model, collective: str, alg: str, n: int, nbytes: float) -> float | None:
    """Predicted seconds of ``alg`` for ``collective`` on ``nbytes`` (nccl-tests size), or None."""
    if n == 1:
        return 0.0
    points = md.measured.get(f"{collective}/{alg}")
    if not points:
        return formula(md, collective, alg, n, nbytes)
    return _through(points, float(nbytes), lambda m: formula(md, collective, alg, n, m))


def _through(points: list, m: float, shape) -> float:
    """The time at ``m`` bytes on the measured curve ``points`` ([[bytes, seconds], ...]):
    log-log between neighbours; outside them ``shape`` (the model) scaled to the end point."""
    pts = sorted((float(b), float(t)) for b, t in points if b > 0 and t > 0)
    (b0, t0), (b1, t1) = pts[0], pts[-1]
    if m <= b0 or m >= b1:
        b, t = (b0, t0) if m <= b0 else (b1, t1)
        model_m, model_b = shape(m), shape(b)
        if model_m is not None and model_b:
            return t * model_m / model_b
        return t * max(1.0, m / b)            # no model (native without a line): bandwidth-bound
    for (lo, tlo), (hi, thi) in zip(pts, pts[1:]):
        if lo <= m <= hi:
            w = math.log(m / lo) / math.log(hi / lo) if hi > lo else 0.0
            return math.exp(math.log(tlo) + w * (math.log(thi) - math.log(tlo)))
    return t1


def formula(md: Model, collective: str, alg: str, n: int, nbytes: float) -> float | None:
    """The alpha-beta(-gamma) time of ``alg``, or the native line (None: no formula for it)."""
    if n == 1:
        return 0.0
    if alg == "native":
        line = md.native.get(collective)
        return None if line is None else line[0] + line[1] * nbytes
    a, b, g, m = md.alpha, md.beta, md.gamma, float(nbytes)
    k = math.ceil(math.log2(n))
    if collective == "all_reduce":
        return _all_reduce(alg, n, m, md)
    if collective == "reduce_scatter" and alg == "ring":
        return _ring_steps(n, m / n, md) * a + (n - 1) / n * m * (b + g)
    if collective == "reduce_scatter" and alg in ("direct", "fp32acc"):
        return _round(n, a) + (n - 1) / n * m * (b + g)
    if collective == "all_gather" and alg == "ring":
        return _ring_steps(n, m / n, md) * a + (n - 1) / n * m * b
    if collective == "all_gather" and alg == "direct":
        return _round(n, a) + (n - 1) / n * m * b
    if collective == "reduce_scatter" and alg == "staged":   # stage m, read my block of n
        return _staged(m, m, m, md)
    if collective == "all_gather" and alg == "staged":       # stage m/n, copy all n blocks out
        return _staged(m / n, m / n, m, md)
    if collective in ("reduce_scatter", "all_gather") and alg == "naive":
        return 2 * (n - 1) * a + 2 * (n - 1) * m * b
    if collective == "broadcast":
        return {"tree": k * (a + m * b), "naive": (n - 1) * (a + m * b)}.get(alg)
    if collective == "reduce":
        return {"tree": k * (a + m * (b + g)), "naive": (n - 1) * (a + m * (b + g))}.get(alg)
    return None
