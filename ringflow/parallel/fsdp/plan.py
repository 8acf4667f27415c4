"""Which parameters each unit of a fully sharded model owns.

Default units are the items of every ModuleList (transformer blocks, UNet levels), outermost
first; whatever no unit holds belongs to the root unit (the model itself). A parameter shared
by two units, or by a unit and the root's own modules (tied embeddings), also goes to the
root: the root is the common ancestor, gathered through the whole forward and backward, so
the weight is gathered once and its gradient reduced once.

    plan = plan_units(model, None)   # [(name, module, [(fqn, param), ...]), ...], root first
"""
from __future__ import annotations

from typing import Sequence

from torch import nn


def default_units(model: nn.Module) -> list[nn.Module]:
    """Items of the model's ModuleLists, skipping ModuleLists inside an item already taken."""
    taken: set[int] = set()
    units = []
    for _, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and id(m) not in taken:
            for item in m:
                units.append(item)
                taken.update(id(s) for s in item.modules())
    return units


def _check_units(model: nn.Module, units: Sequence[nn.Module]) -> dict[int, str]:
    names = {id(m): n for n, m in model.named_modules()}
    seen: dict[int, str] = {}
    for u in units:
        if not isinstance(u, nn.Module) or id(u) not in names:
            raise ValueError(f"units: {type(u).__name__} is not a submodule of the model; pass "
                             "modules of the model being wrapped (e.g. list(model.blocks))")
        if u is model:
            raise ValueError("units: the model itself is the root unit already; list only its "
                             "submodules")
        for s in u.modules():
            if id(s) in seen:
                raise ValueError(f"units: {names[id(u)]!r} and {seen[id(s)]!r} nest or repeat; "
                                 "list each module once and no unit inside another")
            seen[id(s)] = names[id(u)]
    return seen


def plan_units(model: nn.Module, units: Sequence[nn.Module] | None):
    """[(name, module, [(fqn, param)])] with the root ("", model) first, then ``units`` in order."""
    units = default_units(model) if units is None else list(units)
    in_unit = _check_units(model, units)
    holders: dict[int, set[str]] = {}              # param id -> units (or "" root) using it
    for _, m in model.named_modules(remove_duplicate=False):
        where = in_unit.get(id(m), "")
        for p in m.parameters(recurse=False):
            holders.setdefault(id(p), set()).add(where)
    names = {id(u): n for n, u in model.named_modules() if id(u) in in_unit}
    owned: dict[str, list] = {"": []}
    owned.update({names[id(u)]: [] for u in units})
    for fqn, p in model.named_parameters():
        where = holders[id(p)]
        owned[where.pop() if len(where) == 1 else ""].append((fqn, p))
    return [("", model, owned[""])] + [(names[id(u)], u, owned[names[id(u)]]) for u in units]
