"""State dicts of a fully sharded model: full (gathered, fp32) and sharded (this rank's shards).

The full form is the unwrapped model's own ``state_dict()`` and loads into it, or into a
FullyShardedDataParallel of any world size. The sharded form needs no communication; the
shards of every rank of a world of n merge (``merge_sharded``) into the full form, so a
checkpoint saved on n ranks loads on m.

    sd = fsdp.state_dict()                    # collective; every rank gets the full dict
    part = fsdp.sharded_state_dict()          # this rank only
    full = merge_sharded([part_rank0, part_rank1, ...])
"""
from __future__ import annotations

import torch

from ... import collectives as rc

SHARD_KEY = "fsdp_shard"


def _groups(fsdp):
    return [g for u in fsdp.units for g in u.groups]


def gathered_flat(g, shard: torch.Tensor | None = None) -> torch.Tensor:
    """One group's fp32 values from every rank's shard (a collective); ``shard``: another
    tensor laid out like the group's shard (an EMA of it), else the shard itself."""
    full = torch.empty(g.m * g.comm.size, dtype=torch.float32, device=g.shard.device)
    rc.all_gather_into_tensor(full, (g.shard if shard is None else shard).detach(), group=g.comm)
    return full


def _aliases(fsdp) -> dict[int, list[str]]:
    """param id -> every name it has in the module's state dict (tied weights have several)."""
    out: dict[int, list[str]] = {}
    for name, p in fsdp.module.named_parameters(remove_duplicate=False):
        out.setdefault(id(p), []).append(name)
    return out


@torch.no_grad()
def full(fsdp, rank0_only: bool = False, shards: list | None = None) -> dict:
    """The unwrapped model's state dict with fp32 gathered parameters (a collective).
    ``shards``: one tensor per group laid out like its shard, gathered instead of the shards."""
    sd = fsdp.module.state_dict()            # buffers as they are; parameters replaced below
    aliases = _aliases(fsdp)
    for k, g in enumerate(_groups(fsdp)):
        flat = gathered_flat(g, None if shards is None else shards[k])
        for i, p in enumerate(g.params):
            a, b = g.spans[i]
            value = flat[a:b].view(p.shape).clone()
            for name in aliases[id(p)]:
                sd[name] = value
    return {} if rank0_only and fsdp.comm.rank else sd


def sharded(fsdp) -> dict:
    """This rank's shards, their layout, and the buffers."""
    layout = {"rank": fsdp.comm.rank, "world_size": fsdp.comm.size,
              "groups": [{"names": g.names, "shapes": [list(s) for s in g.shapes]}
                         for g in _groups(fsdp)]}
    params = {id(p) for g in _groups(fsdp) for p in g.params}
    aliases = _aliases(fsdp)
    skip = {n for p in params for n in aliases[p]}
    buffers = {k: v for k, v in fsdp.module.state_dict().items() if k not in skip}
    return {SHARD_KEY: layout, "shards": [g.shard.detach().clone() for g in _groups(fsdp)],
            "buffers": buffers}


def merge_sharded(parts: list[dict]) -> dict:
    """The full state dict from the sharded state dicts of ranks 0..n-1 (no communication)."""
    n = len(parts)
    got = [(p[SHARD_KEY]["rank"], p[SHARD_KEY]["world_size"]) for p in parts]
    if got != [(r, n) for r in range(n)]:
        raise ValueError(f"merge_sharded needs the sharded state dicts of ranks 0..{n - 1} of a "
                         f"world of {n}, in rank order; got (rank, world_size) {got}")
    sd = dict(parts[0]["buffers"])
    for k, spec in enumerate(parts[0][SHARD_KEY]["groups"]):
        flat = torch.cat([p["shards"][k] for p in parts])
        start = 0
        for name, shape in zip(spec["names"], spec["shapes"]):
            numel = torch.Size(shape).numel()
            sd[name] = flat[start:start + numel].view(shape).clone()
            start += numel
    return sd


@torch.no_grad()
def load(fsdp, sd: dict) -> None:
    """Load a full or a sharded state dict (the sharded one: same world size and model)."""
    if SHARD_KEY in sd:
        _check_layout(fsdp, sd[SHARD_KEY])
        for g, shard in zip(_groups(fsdp), sd["shards"]):
            g.shard.copy_(shard)
        sd = sd["buffers"]
    else:
        _load_full_params(fsdp, sd)
    params = {n for ns in _aliases(fsdp).values() for n in ns}
    missing = fsdp.module.load_state_dict({k: v for k, v in sd.items() if k not in params},
                                          strict=False).unexpected_keys
    if missing:
        raise ValueError(f"state dict has keys the model does not: {missing[:5]}")


def _check_layout(fsdp, layout: dict) -> None:
    here = sharded(fsdp)[SHARD_KEY]
    for key in ("world_size", "rank", "groups"):
        if layout[key] != here[key]:
            raise ValueError(f"sharded state dict has another {key} ({str(layout[key])[:80]}) than "
                             f"this model ({str(here[key])[:80]}); to change world size, merge the "
                             "shards of every rank with merge_sharded() and load the full dict")


def _load_full_params(fsdp, sd: dict) -> None:
    for g, mine in zip(_groups(fsdp), cut(fsdp, sd)):
        g.shard.copy_(mine)


def cut(fsdp, sd: dict) -> list[torch.Tensor]:
    """This rank's slice of every group, read from a full state dict (no communication)."""
    out = []
    for g in _groups(fsdp):
        missing = [n for n in g.names if n not in sd]
        if missing:
            raise ValueError(f"state dict lacks parameters {missing[:5]}: not a checkpoint of "
                             "this model")
        flat = torch.zeros(g.m * g.comm.size, dtype=torch.float32, device=g.shard.device)
        for i, name in enumerate(g.names):
            a, b = g.spans[i]
            flat[a:b].copy_(sd[name].reshape(-1))
        out.append(flat[g.lo:g.hi].clone())
    return out
