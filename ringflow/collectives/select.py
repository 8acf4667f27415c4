"""Which algorithm runs a collective: the registry, and the per-size choice for "auto".

``RINGFLOW_ALGORITHM=name`` forces one algorithm wherever it applies.
"""
from __future__ import annotations

import os
from typing import Callable

from . import naive, ring, tree

ALGORITHMS: dict[str, dict[str, Callable]] = {
    "all_reduce": {"ring": ring.all_reduce, "naive": naive.all_reduce},
    "reduce_scatter": {"ring": ring.reduce_scatter, "naive": naive.reduce_scatter},
    "all_gather": {"ring": ring.all_gather, "naive": naive.all_gather},
    "broadcast": {"tree": tree.broadcast, "naive": naive.broadcast},
    "reduce": {"tree": tree.reduce, "naive": naive.reduce},
}
DEFAULT = {"all_reduce": "ring", "reduce_scatter": "ring", "all_gather": "ring",
           "broadcast": "tree", "reduce": "tree"}


def choose(comm, collective: str, nbytes: int, algorithm: str = "auto") -> tuple[str, Callable]:
    """(name, function) of the algorithm to run ``collective`` on ``nbytes`` per rank."""
    table = ALGORITHMS[collective]
    if algorithm == "auto":
        forced = os.environ.get("RINGFLOW_ALGORITHM", "")
        algorithm = forced if forced in table else DEFAULT[collective]
    if algorithm not in table:
        raise ValueError(f"algorithm {algorithm!r} is not available for {collective}; "
                         f"choose one of {sorted(table) + ['auto']}")
    return algorithm, table[algorithm]
