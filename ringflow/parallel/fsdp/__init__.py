"""Fully sharded data parallel: each unit's parameters gathered around its compute.

    layout.py     FlatShard: one flat group, its fp32 shard and its full (gathered) buffer
    plan.py       which parameters each unit owns (default units, tied weights, checks)
    unit.py       Unit: gather / prefetch / free, gradient countdown, reduce-scatter
    schedule.py   the forward / backward hooks that drive the units
    wrapper.py    FullyShardedDataParallel, the user's entry point
    state.py, optim_state.py   model and optimizer state dicts (full, sharded; any world size)
"""
from .state import merge_sharded
from .wrapper import FullyShardedDataParallel

__all__ = ["FullyShardedDataParallel", "merge_sharded"]
