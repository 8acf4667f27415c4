"""torch DDP's keyword arguments, as DataParallel reads them: accepted where they change nothing
here, refused with the reason where ringflow has no equivalent.

    DataParallel(model, device_ids=[0], static_graph=True)     # fine: a DDP line pasted as is
"""
from __future__ import annotations

from torch import nn

# DDP keyword -> why DataParallel can ignore it (its default behaviour already is what it asks)
HARMLESS = {
    "dim": "inputs are never scattered: each rank feeds its own batch",
    "static_graph": "buckets are laid out once and reused whether or not the graph is static",
    "gradient_as_bucket_view": "gradients are always views into the flat buckets",
    "check_reduction": "deprecated in torch DDP and a no-op there",
}
# DDP keyword -> what to do instead
REFUSED = {
    "mixed_precision": "use compress='bf16' or 'fp16' (gradients on the wire in half precision, "
                       "summed in fp32), and torch.autocast for the forward",
    "device_mesh": "pass group=<ringflow Communicator> (e.g. one from comm.subgroup(ranks))",
    "delay_all_reduce_named_params": "DataParallel reduces every parameter in buckets; wrap the "
                                     "delayed parameters' module separately",
    "param_to_hook_all_reduce": "register your own hook: see ringflow.parallel.hooks",
    "skip_all_reduce_unused_params": "use find_unused_parameters=True",
}


def _devices(module: nn.Module) -> set:
    return {p.device for p in module.parameters()} or {None}


def check_ddp_kwargs(module: nn.Module, kwargs: dict) -> bool:
    """Validate DDP-only keywords; returns init_sync (DDP's flag for the first broadcast)."""
    kwargs = dict(kwargs)
    init_sync = bool(kwargs.pop("init_sync", True))
    for name in ("device_ids", "output_device"):
        value = kwargs.pop(name, None)
        if value is None:
            continue
        wanted = value if isinstance(value, (list, tuple)) else [value]
        have = _devices(module)
        if len(wanted) != 1 or len(have) != 1 or str(wanted[0]) not in {
                str(d) for d in have} | {str(d.index) for d in have if d is not None}:
            raise ValueError(f"DataParallel({name}={value!r}): the module's parameters are on "
                             f"{sorted(map(str, have))}; ringflow drives one device per rank, the "
                             f"one the module is on (move it with module.to(device) and drop {name})")
    if kwargs.pop("process_group", None) is not None:
        raise TypeError("DataParallel(process_group=...): torch process groups are not accepted; "
                        "pass group=<ringflow Communicator> (None: the world of ringflow.init())")
    for name in list(kwargs):
        if name in HARMLESS:
            kwargs.pop(name)
        elif name in REFUSED and not kwargs[name]:
            kwargs.pop(name)                         # the off value: nothing asked for
    for name, value in kwargs.items():
        if name in REFUSED:
            raise ValueError(f"DataParallel({name}=...) is torch DDP's and has no ringflow "
                             f"equivalent: {REFUSED[name]}")
        raise TypeError(f"DataParallel got an unexpected keyword argument {name!r} (neither "
                        "ringflow's nor torch DDP's)")
    return init_sync
