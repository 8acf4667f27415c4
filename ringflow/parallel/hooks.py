"""Plugging ringflow's ring into other people's loops: torch DDP and Horovod-style code.

    ringflow.parallel.init_torch_distributed()                      # torch's group, for DDP
    ddp = torch.nn.parallel.DistributedDataParallel(model)          # torch's own, unmodified
    ddp.register_comm_hook(comm, ringflow.parallel.ring_allreduce_hook)

    opt = ringflow.parallel.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    ringflow.parallel.broadcast_parameters(model.state_dict(), root_rank=0)
    ringflow.parallel.broadcast_optimizer_state(opt, root_rank=0)
"""
import contextlib
from typing import Mapping

import torch

from .. import collectives as rc
from ..collectives.group import resolve as resolve_group
from ..transport.torch_dist import init_process_group
from .buffers import BufferSync
from .composed import ComposedOptimizer
from .reducer import Reducer
from .sync import broadcast_coalesced, broadcast_object


def init_torch_distributed(group=None) -> bool:
    """Start torch.distributed's default process group beside ringflow's world, for torch code
    that needs one (DistributedDataParallel with ``ring_allreduce_hook``, FSDP); gloo on CPU,
    NCCL on GPUs, meeting where the launcher says. Returns False if one already exists (the
    torch transport starts it; shared memory and MPI do not).

        comm = ringflow.init(); ringflow.parallel.init_torch_distributed()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
    """
    comm = resolve_group(group)
    if comm.launch is None:
        raise ValueError("init_torch_distributed needs the world of ringflow.init() (it reads the "
                         f"launcher's environment from it); got {comm!r}")
    return init_process_group(comm.launch, comm.device, comm.timeout)


def ring_allreduce_hook(state, bucket) -> torch.futures.Future[torch.Tensor]:
    """A DDP comm hook: average the bucket over ranks with ringflow's ring, asynchronously.

    ``state`` is a ringflow Communicator, or None for the world. DDP waits on the returned
    future at the end of backward and copies its value (the averaged bucket) into the grads.
    """
    # No `from __future__ import annotations` in this file: DDP checks the annotation's value.
    comm = resolve_group(state)
    buf = bucket.buffer()
    fut: torch.futures.Future = torch.futures.Future()
    work = rc.all_reduce(buf, op=rc.ReduceOp.AVG, group=comm, async_op=True)

    def finish(w) -> None:
        err = w.exception()
        if err is not None:
            fut.set_exception(err)
        else:
            fut.set_result(buf)

    work.add_done_callback(finish)
    return fut


def broadcast_parameters(params, root_rank: int = 0, group=None) -> None:
    """Overwrite ``params`` in place with ``root_rank``'s values (Horovod's function).

    params: a state dict, an iterable of (name, tensor) pairs, or an iterable of tensors.
    """
    if isinstance(params, Mapping):
        tensors = list(params.values())
    else:
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
    bad = [type(t).__name__ for t in tensors if not torch.is_tensor(t)]
    if bad:
        raise TypeError(f"broadcast_parameters expects tensors, got {bad[:3]}")
    broadcast_coalesced(tensors, root_rank, resolve_group(group))


def broadcast_optimizer_state(optimizer, root_rank: int = 0, group=None) -> None:
    """Load ``root_rank``'s optimizer state (hyperparameters, steps, moments) on every rank.

    Every rank calls ``optimizer.state_dict()`` (so ZeroOptimizer's collective one works too).
    """
    comm = resolve_group(group)
    sd = optimizer.state_dict()
    sd = broadcast_object(sd if comm.rank == root_rank else None, root_rank, comm)
    if comm.rank != root_rank:
        optimizer.load_state_dict(sd)


class DistributedOptimizer(ComposedOptimizer):
    """Horovod's wrapper: gradients are averaged over ranks during backward, then ``step``.

    ``DistributedOptimizer(opt, named_parameters=None, backward_passes_per_step=1,
    compression=None, group=None, bucket_cap_mb=25, find_unused_parameters=False, module=None,
    broadcast_buffers=True)``.
    compression: None | "bf16" | "fp16". With backward_passes_per_step=k, gradients accumulate
    locally over k backward passes and are averaged in the k-th. module: the model, whose
    buffers (BatchNorm statistics) then follow DataParallel's rule: rank 0's are broadcast at
    each training forward (broadcast_buffers True, False or "always"; see buffers.py); without
    it buffers are never synchronised.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, named_parameters=None,
                 backward_passes_per_step: int = 1, compression: str | None = None, group=None,
                 bucket_cap_mb: float = 25, find_unused_parameters: bool = False,
                 module: torch.nn.Module | None = None, broadcast_buffers: bool | str = True):
        super().__init__(optimizer)
        if backward_passes_per_step < 1:
            raise ValueError(f"backward_passes_per_step must be >= 1, got {backward_passes_per_step}")
        named = self._named(optimizer, named_parameters)
        self.comm = resolve_group(group)
        self.buffer_sync = None if module is None else BufferSync(module, self.comm,
                                                                  broadcast_buffers)
        if self.buffer_sync is not None:
            self.buffer_sync.attach()
        self.passes_per_step, self._passes = backward_passes_per_step, 0
        self.reducer = Reducer(named, self.comm, bucket_cap_mb, compress=compression,
                               find_unused_parameters=find_unused_parameters)
        self.reducer.after_backward = self._count_pass
        self.reducer.prepare(sync=backward_passes_per_step == 1)

    @staticmethod
    def _named(optimizer, named_parameters) -> list[tuple[str, torch.Tensor]]:
        in_opt = [p for g in optimizer.param_groups for p in g["params"]]
        if named_parameters is None:
            return [(f"param_groups[{g}][{i}]", p) for g, grp in enumerate(optimizer.param_groups)
                    for i, p in enumerate(grp["params"])]
        named = list(named_parameters)
        known = {id(p) for _, p in named}
        missing = sum(id(p) not in known for p in in_opt)
        if missing:
            raise ValueError(f"{missing} optimizer parameters are not in named_parameters; pass "
                             "model.named_parameters() of the model the optimizer was built on")
        wanted = {id(p) for p in in_opt}
        return [(n, p) for n, p in named if id(p) in wanted]

    def _count_pass(self) -> None:
        self._passes += 1
        self.reducer.prepare(sync=self._passes % self.passes_per_step == self.passes_per_step - 1)

    def synchronize(self) -> None:
        """Horovod compatibility: gradients are already averaged when backward returns."""

    @contextlib.contextmanager
    def skip_synchronize(self):
        """Horovod compatibility: ``step`` never synchronises, so this changes nothing."""
        yield

    def step(self, closure=None):
        self._passes = 0
        self.reducer.prepare(sync=self.passes_per_step == 1)
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)

