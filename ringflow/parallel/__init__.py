"""ringflow.parallel: when to communicate. Built on the verbs of ``ringflow.collectives``.

The user keeps their loop and changes a line or two:

    comm = ringflow.init()
    model = DataParallel(model, group=comm, bucket_cap_mb=25, compress=None,
                         find_unused_parameters=False, broadcast_buffers=True)
    #   backward returns with gradients averaged over ranks (bucketed, overlapped);
    #   model.no_sync() / model.sync_grads = False accumulate locally;
    #   model.state_dict() has no "module." prefix (loads into the unwrapped model).

    opt = ZeroOptimizer(model, torch.optim.AdamW, group=comm, stage=2, lr=1e-4)
    #   (an unwrapped model: it averages gradients itself; given the model, not only its
    #   parameters, it broadcasts rank 0's buffers as DataParallel does) opt.clip_grad_norm_(max_norm),
    #   opt.step(), opt.zero_grad(); opt.state_dict() (collective, consolidated: loads into a
    #   plain AdamW), opt.sharded_state_dict(), opt.load_state_dict(either).

    init_torch_distributed()                 # torch.distributed's group (shm and mpi start none)
    ddp.register_comm_hook(comm, ring_allreduce_hook)        # torch DDP, reducing with our ring

    opt = DistributedOptimizer(opt, named_parameters=model.named_parameters(),  # Horovod-style
                               module=model)             # module: buffers as in DataParallel
    broadcast_parameters(model.state_dict(), root_rank=0)
    broadcast_optimizer_state(opt, root_rank=0)

    idx = shard_indices(len(ds), comm.rank, comm.size, epoch=e, seed=0)   # or DistributedSampler
    for batch in even_batches(loader, group=comm): ...    # uneven inputs: all stop together
    if all_finite(grads, group=comm): opt.step()           # a NaN anywhere: every rank skips

    model = FullyShardedDataParallel(net, units=None, reshard_after_forward=True,
                                     mixed_precision=None, group=comm)
    #   parameters, gradients and optimizer state at 1/n; model.parameters() are the shards
    #   (torch.optim.AdamW(model.parameters())); model.clip_grad_norm_, model.no_sync(),
    #   model.state_dict() (full, any world size), model.optim_state_dict(opt).

``NaiveDataParallel`` (one blocking all-reduce per gradient) is the oracle the tests compare with.
"""
from .data_parallel import DataParallel
from .fsdp import FullyShardedDataParallel, merge_sharded
from .guards import all_finite, even_batches
from .hooks import (DistributedOptimizer, broadcast_optimizer_state, broadcast_parameters,
                    init_torch_distributed, ring_allreduce_hook)
from .naive import NaiveDataParallel
from .reducer import UnusedParametersError
from .sampler import DistributedSampler, shard_indices
from .sync import broadcast_coalesced, broadcast_object
from .zero import ZeroOptimizer

__all__ = ["DataParallel", "ZeroOptimizer", "FullyShardedDataParallel", "merge_sharded", "ring_allreduce_hook", "init_torch_distributed",
           "DistributedOptimizer", "broadcast_parameters", "broadcast_optimizer_state", "shard_indices",
           "DistributedSampler", "NaiveDataParallel", "UnusedParametersError",
           "broadcast_coalesced", "broadcast_object", "all_finite", "even_batches"]
