"""ringflow as a torch.distributed backend: unmodified torch code (DDP, FSDP2,
ZeroRedundancyOptimizer, functional collectives) on ringflow's algorithms and transports.

    import ringflow                              # registers the backend "ringflow"
    torch.distributed.init_process_group("ringflow")

Importing registers only (a name and a function in torch's table); the transport is built when
torch creates the group.
"""
from __future__ import annotations

import datetime

import torch.distributed as dist

NAME = "ringflow"


def create(options, backend_options=None):
    """torch's creator (extended API): the ProcessGroup of one group, over a ringflow
    Communicator (the default group's transport, or a sub-group of it for new_group)."""
    from .process_group import RingflowProcessGroup
    from .world import group_communicator
    timeout = options.timeout
    seconds = timeout.total_seconds() if isinstance(timeout, datetime.timedelta) else float(timeout)
    comm = group_communicator(options.store, options.group_rank, options.group_size, seconds,
                              list(options.global_ranks_in_group))
    return RingflowProcessGroup(comm, str(options.group_id))


def register() -> None:
    """Make "ringflow" a torch.distributed backend for CPU and CUDA tensors (idempotent)."""
    if dist.is_available() and NAME.upper() not in dist.Backend._plugins:
        dist.Backend.register_backend(NAME, create, extended_api=True, devices=["cpu", "cuda"])


register()
