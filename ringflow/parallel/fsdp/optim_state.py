"""The optimizer's state of a fully sharded model, in a form that does not depend on shards.

The user's optimizer steps the flat shards; its ``state_dict()`` is tied to this world size.
``full_optim_state_dict`` gathers it into per-parameter state keyed by the parameter's name
(``{"state": {"blocks.0.fc.weight": {"exp_avg": tensor shaped like it, "step": ...}},
"param_groups": [{..., "params": [names]}]}``), which loads back on any world size.

    osd = fsdp.optim_state_dict(opt)         # collective; every rank gets it, rank 0 saves
    fsdp.load_optim_state_dict(opt, osd)     # on n or m ranks
"""
from __future__ import annotations

import copy

import torch

from ... import collectives as rc


def _per_element(v, like: torch.Tensor) -> bool:
    return torch.is_tensor(v) and v.shape == like.shape and like.dim() > 0


def _owners(fsdp) -> dict[int, object]:
    """shard id -> its FlatShard."""
    return {id(g.shard): g for u in fsdp.units for g in u.groups}


def _check_params(fsdp, opt) -> dict:
    owners = _owners(fsdp)
    for group in opt.param_groups:
        for s in group["params"]:
            if id(s) not in owners:
                raise ValueError("the optimizer holds a tensor that is not a shard of this model: "
                                 "build it as torch.optim.X(fsdp.parameters(), ...)")
    return owners


def full(fsdp, opt) -> dict:
    """Per-parameter optimizer state (a collective over the model's group)."""
    owners = _check_params(fsdp, opt)
    state, groups = {}, []
    for group in opt.param_groups:
        names = []
        for s in group["params"]:
            g = owners[id(s)]
            local = opt.state.get(s, {})
            gathered = {k: _gather(v, g) if _per_element(v, s) else v for k, v in local.items()}
            for i, name in enumerate(g.names):
                a, b = g.spans[i]
                if gathered:
                    state[name] = {k: v[a:b].view(g.shapes[i]).clone() if _per_element(local[k], s)
                                   else copy.deepcopy(v) for k, v in gathered.items()}
            names += g.names
        groups.append({**copy.deepcopy({k: v for k, v in group.items() if k != "params"}),
                       "params": names})
    return {"state": state, "param_groups": groups}


def _gather(v: torch.Tensor, g) -> torch.Tensor:
    out = torch.empty(g.m * g.comm.size, dtype=v.dtype, device=v.device)
    rc.all_gather_into_tensor(out, v.contiguous(), group=g.comm)
    return out


def load(fsdp, opt, osd: dict) -> None:
    """Cut this rank's shards out of a per-parameter optimizer state dict and load them."""
    owners = _check_params(fsdp, opt)
    if len(osd["param_groups"]) != len(opt.param_groups):
        raise ValueError(f"optimizer state has {len(osd['param_groups'])} param groups, the "
                         f"optimizer {len(opt.param_groups)}: build it the same way")
    inner_state, inner_groups, index = {}, [], 0
    for saved, group in zip(osd["param_groups"], opt.param_groups):
        mine = [n for s in group["params"] for n in owners[id(s)].names]
        if saved["params"] != mine:
            raise ValueError("optimizer state's parameters differ from this model's (another "
                             f"model or grouping): {saved['params'][:3]}... vs {mine[:3]}...")
        ids = []
        for s in group["params"]:
            g = owners[id(s)]
            per_param = [osd["state"].get(n, {}) for n in g.names]
            if any(per_param):
                inner_state[index] = _shard_of(per_param, g)
            ids.append(index)
            index += 1
        inner_groups.append({**{k: v for k, v in saved.items() if k != "params"}, "params": ids})
    opt.load_state_dict({"state": inner_state, "param_groups": inner_groups})


def _shard_of(per_param: list[dict], g) -> dict:
    out = {}
    for key in next(s for s in per_param if s):
        values = [s.get(key) for s in per_param]
        if not all(torch.is_tensor(v) and v.shape == torch.Size(shape) for v, shape
                   in zip(values, g.shapes)) or not any(len(s) for s in g.shapes):
            out[key] = copy.deepcopy(values[0])
            continue
        flat = torch.zeros(g.m * g.comm.size, dtype=values[0].dtype, device=g.shard.device)
        for (a, b), v in zip(g.spans, values):
            flat[a:b].copy_(v.reshape(-1))
        out[key] = flat[g.lo:g.hi].clone()
    return out
