"""Which algorithm runs a collective: the registry, and the per-size choice for "auto".

"auto" takes the algorithm with the smallest predicted time under the fitted
alpha-beta model (``costmodel``), the backend's own collective ("native")
included. ``RINGFLOW_ALGORITHM`` overrides it: ``ring`` forces that name wherever
it exists, ``all_reduce=rd,broadcast=tree`` forces per collective. The name that
ran last is kept in ``last`` so a benchmark can say which one it measured.

    name, fn = choose(comm, "all_reduce", nbytes=4 << 20)     # e.g. ("ring", ring.all_reduce)
    ranked(comm, "all_reduce", 4096)                          # [(name, predicted seconds), ...]
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from .. import settings
from . import costmodel, direct, hierarchical, naive, native, ring, staged, tree, wire


def two_level(comm, buf, op) -> None:
    """The two-level all-reduce, its cross-node step chosen here by size like any other call."""
    hierarchical.all_reduce(comm, buf, op, _across_nodes)


def _across_nodes(inter, block, op) -> None:
    # never two_level again (inter is flat), native (the backend's group is the world's) or naive
    _, fn = choose(inter, "all_reduce", block.numel() * block.element_size(),
                   exclude=("two_level", "native", "naive"), record=False, dtype=block.dtype)
    fn(inter, block, op)


# Every algorithm by name. The algorithm modules never import this one (two_level gets its
# cross-node choice passed in), so selection sits above them all.
ALGORITHMS: dict[str, dict[str, Callable]] = {
    "all_reduce": {"ring": ring.all_reduce, "rd": tree.all_reduce_rd, "rhd": tree.all_reduce_rhd,
                   "direct": direct.all_reduce, "two_level": two_level,
                   "fp32acc": direct.all_reduce_fp32, "staged": staged.all_reduce,
                   "naive": naive.all_reduce, "native": native.all_reduce},
    "reduce_scatter": {"ring": ring.reduce_scatter, "direct": direct.reduce_scatter,
                       "fp32acc": direct.reduce_scatter_fp32, "staged": staged.reduce_scatter,
                       "naive": naive.reduce_scatter, "native": native.reduce_scatter},
    "all_gather": {"ring": ring.all_gather, "direct": direct.all_gather,
                   "staged": staged.all_gather, "naive": naive.all_gather,
                   "native": native.all_gather},
    "broadcast": {"tree": tree.broadcast, "naive": naive.broadcast, "native": native.broadcast},
    "reduce": {"tree": tree.reduce, "naive": naive.reduce, "native": native.reduce},
}
DEFAULT = {"all_reduce": "ring", "reduce_scatter": "ring", "all_gather": "ring",
           "broadcast": "tree", "reduce": "tree"}
NEVER_AUTO = ("naive", "fp32acc")   # the oracle never wins; fp32acc changes numerics: opt-in only
last: dict[str, str] = {}           # collective -> algorithm name chosen most recently
# auto chooses for every call below this size as for this size: there every candidate is one
# latency (the model cannot tell 4 KiB from 8 KiB apart), and one choice for all small calls
# keeps ranks that wrongly call with sizes a few KiB apart (a dtype mismatch) on one algorithm,
# which then names the mismatch, where two (MPI's call on one rank, staged on the other: the
# probe can put their crossover anywhere) would only time out
SMALL_BYTES = 16 << 10
# float32 carried in bf16/fp16 (``wire_dtype=``), fn(comm, buf, op, wire): apart from ALGORITHMS
# because they change the numerics (auto never weighs them, a tune never measures them) and only
# run when the caller names a wire dtype.
WIRE_ALGORITHMS: dict[str, dict[str, Callable]] = {"all_reduce": {"ring": wire.all_reduce}}


def available(comm, collective: str, dtype: torch.dtype | None = None) -> list[str]:
    """Algorithms that can run ``collective`` on ``comm`` (native and staged need the
    transport's support; native's reductions, the ``dtype`` too: None, any)."""
    return [name for name in ALGORITHMS[collective]
            if (name != "native" or native.supports(comm, collective, dtype))
            and (name != "staged" or staged.supports(comm))]


def forced(collective: str, env: str | None = None) -> str | None:
    """The algorithm RINGFLOW_ALGORITHM forces for ``collective`` (None: not forced)."""
    env = settings.get("RINGFLOW_ALGORITHM") if env is None else env
    known = sorted(set().union(*ALGORITHMS.values()))
    for item in filter(None, (s.strip() for s in env.split(","))):
        if "=" not in item:
            if item in ALGORITHMS[collective]:
                return item
            if item not in known:        # a typo must not silently mean auto
                raise ValueError(f"RINGFLOW_ALGORITHM={env!r}: {item!r} is not an algorithm; "
                                 f"choose one of {known}, or verb=name")
            continue
        coll, name = (s.strip() for s in item.split("=", 1))
        if coll not in ALGORITHMS:
            raise ValueError(f"RINGFLOW_ALGORITHM={env!r}: {coll!r} is not a collective; "
                             f"choose one of {sorted(ALGORITHMS)}")
        if coll == collective:
            if name not in ALGORITHMS[collective]:
                raise ValueError(f"RINGFLOW_ALGORITHM={env!r}: {name!r} is not an algorithm of "
                                 f"{collective}; choose one of {sorted(ALGORITHMS[collective])}")
            return name
    return None


def fastest(comm, collective: str, nbytes: int, exclude: Iterable[str] = (),
            dtype: torch.dtype | None = None) -> str:
    """The candidate with the smallest predicted time (``choose`` memoises it per group)."""
    best = ranked(comm, collective, nbytes, exclude, dtype)
    return best[0][0] if best else DEFAULT[collective]


def ranked(comm, collective: str, nbytes: int, exclude: Iterable[str] = (),
           dtype: torch.dtype | None = None) -> list[tuple[str, float]]:
    """(name, predicted seconds) of the auto candidates for ``collective`` on ``dtype``,
    fastest first."""
    model = costmodel.load(comm)
    out = []
    for name in available(comm, collective, dtype):
        if name in NEVER_AUTO or name in exclude or not costmodel.allowed(model, name, comm.size):
            continue
        t = costmodel.predict(model, collective, name, comm.size, nbytes)
        if t is not None:
            out.append((name, t))
    return sorted(out, key=lambda x: x[1])


def choose(comm, collective: str, nbytes: int, algorithm: str = "auto",
           exclude: Iterable[str] = (), record: bool = True,
           dtype: torch.dtype | None = None) -> tuple[str, Callable]:
    """(name, function) of the algorithm to run ``collective`` on ``nbytes`` (nccl-tests size)
    of ``dtype`` (auto never picks the backend's own reduction where it cannot take the dtype).

    Every rank must get the same answer: it depends only on the arguments, the
    group size, the transport and the tune file (write it on every node with
    ``ringflow-bench --tune``).
    """
    table = ALGORITHMS[collective]
    if algorithm == "auto":
        algorithm = _auto(comm, collective, nbytes, tuple(exclude), dtype)
    if algorithm not in table:
        raise ValueError(f"algorithm {algorithm!r} is not available for {collective}; "
                         f"choose one of {sorted(table) + ['auto']}")
    if record:                      # inner choices (two_level's) keep the outer name
        last[collective] = algorithm
    return algorithm, table[algorithm]


def choose_wire(collective: str, algorithm: str, wire_dtype) -> tuple[str, Callable]:
    """(name, fn(comm, buf, op)) of the ``wire_dtype`` variant of ``algorithm`` ("auto": the
    ring, the only one; RINGFLOW_ALGORITHM does not apply, as its names have no wire variant)."""
    table = WIRE_ALGORITHMS.get(collective, {})
    name = "ring" if algorithm == "auto" else algorithm
    if name not in table:
        raise ValueError(f"{collective} with wire_dtype={wire_dtype} runs algorithm "
                         f"{sorted(table) + ['auto']}, not {algorithm!r}; drop algorithm= or pass "
                         "wire_dtype=None")
    last[collective] = f"{name}:{wire.verb(wire_dtype).rsplit('_', 1)[-1]}"
    fn = table[name]
    return name, lambda comm, buf, op: fn(comm, buf, op, wire_dtype)


def _auto(comm, collective: str, nbytes: int, exclude: tuple, dtype) -> str:
    """auto's answer, memoised per communicator: it runs on every call, and a small collective
    costs little more than resolving it. RINGFLOW_ALGORITHM is read once per communicator, as
    NCCL reads its variables at init (reading the environment cost more than the rest of
    choosing), unless the communicator was given the text (``algorithm=``); a new tune
    (costmodel.forget) expires the memo."""
    nbytes = max(nbytes, SMALL_BYTES)
    key = (collective, nbytes, exclude, dtype, costmodel.generation)
    env, memo = comm.auto_memo or _new_memo(comm)
    name = memo.get(key)
    if name is None:
        name = forced(collective, env)
        if name is None or name in exclude or name not in available(comm, collective, dtype):
            name = fastest(comm, collective, nbytes, exclude, dtype)
        if len(memo) > 4096:
            memo.clear()
        memo[key] = name
    return name


def _new_memo(comm) -> tuple[str, dict]:
    """(the RINGFLOW_ALGORITHM text ``comm`` runs under, {choice key: name}), kept on ``comm``
    (an attribute, not a table keyed by communicator: looking one up weakly cost more than
    the choice)."""
    env = settings.get("RINGFLOW_ALGORITHM") if comm.algorithm_env is None else comm.algorithm_env
    comm.auto_memo = (env, {})
    return comm.auto_memo
