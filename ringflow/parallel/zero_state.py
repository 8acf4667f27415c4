"""ZeroOptimizer checkpoints: consolidate shards into a plain optimizer state dict, and back.

The consolidated form is exactly what ``optimizer_class(model.parameters())`` would save:
``{"state": {param_index: {"exp_avg": tensor shaped like the param, "step": ...}},
"param_groups": [{..., "params": [indices]}]}``. Per-element state (same shape as the shard) is
all-gathered; scalar state (``step``) is the same on every rank and taken as is.

    sd = opt.state_dict()                 # every rank calls; rank 0 saves
    plain = torch.optim.AdamW(model.parameters()); plain.load_state_dict(sd)

The inner optimizer steps each shard in chunks (shard.py); its state is joined into one
shard-shaped entry per param group here (``per_shard``) and cut again on load (``per_chunk``),
so no saved form depends on the chunking.
"""
from __future__ import annotations

import copy

import torch

from .. import collectives as rc

SHARD_KEY = "zero_shard"


def _per_element(value, shard: torch.Tensor) -> bool:
    return torch.is_tensor(value) and value.shape == shard.shape


def _gather(value: torch.Tensor, g) -> torch.Tensor:
    full = torch.empty(g.flat.data.numel(), dtype=value.dtype, device=value.device)
    rc.all_gather_into_tensor(full, value.contiguous(), group=g.comm)
    return full


def per_shard(zopt) -> dict:
    """The inner optimizer's state dict with one entry per param group, shaped like its shard."""
    inner = zopt.optimizer.state_dict()
    state, groups = {}, []
    for k, (g, pg) in enumerate(zip(zopt.groups, inner["param_groups"])):
        parts = [inner["state"].get(i, {}) for i in pg["params"]]
        if any(parts):
            state[k] = {key: torch.cat([s[key] for s in parts])
                        if _per_element(v, g.chunks[0]) else v for key, v in parts[0].items()}
        groups.append({**pg, "params": [k]})
    return {"state": state, "param_groups": groups}


def per_chunk(zopt, sd: dict) -> dict:
    """The inverse of ``per_shard``: load the result into the inner optimizer."""
    state, groups, index = {}, [], 0
    for k, (g, pg) in enumerate(zip(zopt.groups, sd["param_groups"])):
        ids = list(range(index, index + len(g.chunks)))
        index += len(ids)
        mine = sd["state"].get(k, sd["state"].get(str(k), {}))
        for i, (a, b) in zip(ids, g.bounds):
            if mine:
                state[i] = {key: v[a:b].clone() if _per_element(v, g.shard) else copy.deepcopy(v)
                            for key, v in mine.items()}
        groups.append({**pg, "params": ids})
    return {"state": state, "param_groups": groups}


def consolidate(zopt) -> dict:
    """The unsharded state dict (a collective over the optimizer's group)."""
    state, groups, start = {}, [], 0
    inner = per_shard(zopt)["state"]
    for k, g in enumerate(zopt.groups):
        local = inner.get(k, {})
        full = {key: _gather(v, g) if _per_element(v, g.shard) else v for key, v in local.items()}
        for i, p in enumerate(g.params):
            a, b = g.flat.span(i)
            state[start + i] = {key: (v[a:b].view(p.shape).clone() if _per_element(local[key], g.shard)
                                      else copy.deepcopy(v)) for key, v in full.items()}
        options = {key: v for key, v in zopt.optimizer.param_groups[k].items() if key != "params"}
        groups.append({**copy.deepcopy(options), "params": list(range(start, start + len(g.params)))})
        start += len(g.params)
    if not any(state.values()):
        state = {}
    return {"state": state, "param_groups": groups}


def sharded(zopt) -> dict:
    """This rank's inner optimizer state and the layout it belongs to."""
    layout = {"rank": zopt.comm.rank, "world_size": zopt.comm.size, "stage": zopt.stage,
              "numels": [g.flat.numel for g in zopt.groups]}
    return {SHARD_KEY: layout, "optimizer": per_shard(zopt)}


def load(zopt, sd: dict) -> None:
    if SHARD_KEY in sd:
        _load_sharded(zopt, sd)
    else:
        zopt.optimizer.load_state_dict(per_chunk(zopt, _split(zopt, sd)))


def _load_sharded(zopt, sd: dict) -> None:
    layout = sd[SHARD_KEY]
    here = sharded(zopt)[SHARD_KEY]
    for key in ("rank", "world_size", "numels"):
        if layout[key] != here[key]:
            raise ValueError(f"sharded optimizer state has {key}={layout[key]}, this optimizer has "
                             f"{key}={here[key]}; load the consolidated state_dict() instead to "
                             "change world size or model")
    zopt.optimizer.load_state_dict(per_chunk(zopt, sd["optimizer"]))


def _split(zopt, sd: dict) -> dict:
    """This rank's inner-optimizer state dict cut out of a consolidated one."""
    if len(sd["param_groups"]) != len(zopt.groups):
        raise ValueError(f"state dict has {len(sd['param_groups'])} param groups, the optimizer "
                         f"has {len(zopt.groups)}")
    inner_state, inner_groups = {}, []
    for k, (sg, g) in enumerate(zip(sd["param_groups"], zopt.groups)):
        if len(sg["params"]) != len(g.params):
            raise ValueError(f"param group {k}: state dict has {len(sg['params'])} parameters, the "
                             f"optimizer has {len(g.params)}")
        per_param = [sd["state"].get(i, sd["state"].get(str(i), {})) for i in sg["params"]]
        if any(per_param):
            inner_state[k] = _shard_of(per_param, g)
        inner_groups.append({**{key: v for key, v in sg.items() if key != "params"}, "params": [k]})
    return {"state": inner_state, "param_groups": inner_groups}


def _shard_of(per_param: list[dict], g) -> dict:
    """One group's per-parameter states -> the state of this rank's shard."""
    keys = next(s for s in per_param if s).keys()
    out = {}
    for key in keys:
        values = [s.get(key) for s in per_param]
        elementwise = all(torch.is_tensor(v) and v.shape == p.shape for v, p in zip(values, g.params)) \
            and any(p.dim() for p in g.params)
        if not elementwise:
            out[key] = copy.deepcopy(values[0])
            continue
        full = torch.zeros(g.flat.data.numel(), dtype=values[0].dtype, device=g.shard.device)
        for i, v in enumerate(values):
            a, b = g.flat.span(i)
            full[a:b].copy_(v.reshape(-1))
        out[key] = full[g.lo:g.hi].clone()
    return out


def merge_shards(zopt, shards: list[dict]) -> dict:
    """The consolidated state dict that ``sharded_state_dict()`` of every rank of a world of
    any size held (``shards`` in rank order), without communication: what ``state_dict()``
    would have returned there. Load it to continue on another number of ranks.

        shards = [torch.load(f"optim.rank{r}.pt") for r in range(n)]
        opt.load_state_dict(merge_shards(opt, shards))
    """
    n = len(shards)
    layouts = [sd[SHARD_KEY] for sd in shards]
    if [(x["rank"], x["world_size"]) for x in layouts] != [(r, n) for r in range(n)]:
        got = [(x["rank"], x["world_size"]) for x in layouts]
        raise ValueError(f"expected the shards of ranks 0..{n - 1} of a world of {n} in rank "
                         f"order, got (rank, world_size) {got}")
    here = [g.flat.numel for g in zopt.groups]
    if any(x["numels"] != here for x in layouts):
        raise ValueError(f"the shards hold param groups of {layouts[0]['numels']} elements, this "
                         f"optimizer has {here}: another model")
    state, groups, start = {}, [], 0
    for k, g in enumerate(zopt.groups):
        inner = [sd["optimizer"]["state"].get(k, {}) for sd in shards]
        full = {key: _joined([s[key] for s in inner], n) for key in inner[0]}
        for i, p in enumerate(g.params):
            a, b = g.flat.span(i)
            state[start + i] = {key: v[a:b].view(p.shape).clone() if flat else copy.deepcopy(v)
                                for key, (v, flat) in full.items()}
        options = {key: v for key, v in shards[0]["optimizer"]["param_groups"][k].items()
                   if key != "params"}
        groups.append({**copy.deepcopy(options),
                       "params": list(range(start, start + len(g.params)))})
        start += len(g.params)
    if not any(state.values()):
        state = {}
    return {"state": state, "param_groups": groups}


def _joined(values: list, n: int) -> tuple:
    """(value, per_element): per-element state (equal 1-D shards) laid end to end in rank
    order; anything else (the step count, the same on every rank) is rank 0's value."""
    first = values[0]
    if torch.is_tensor(first) and first.dim() == 1 and len(values) == n and \
            all(torch.is_tensor(v) and v.shape == first.shape for v in values):
        return torch.cat(values), True
    return first, False
