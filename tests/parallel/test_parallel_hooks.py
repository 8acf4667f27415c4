"""The DDP comm hook, the Horovod-style API and the sampler, on the thread transport."""
import pytest
import torch
import torch.nn.functional as F

from ringflow.collectives.threads import run_ranks
from ringflow.parallel import (DistributedOptimizer, DistributedSampler, broadcast_optimizer_state,
                               broadcast_parameters, init_torch_distributed, ring_allreduce_hook,
                               shard_indices)
from tests.parallel.matrix import batch, make_net

pytestmark = pytest.mark.timeout(60)


class FakeBucket:
    """What DDP hands a comm hook: a flat buffer."""

    def __init__(self, t):
        self.t = t

    def buffer(self):
        return self.t


def test_ring_allreduce_hook_returns_future_of_the_average():
    def fn(comm):
        futs = [ring_allreduce_hook(comm, FakeBucket(torch.full((7,), float(comm.rank + k))))
                for k in range(3)]
        return [f.wait().clone() for f in futs], isinstance(futs[0], torch.futures.Future)
    for values, is_future in run_ranks(3, fn):
        assert is_future
        assert [v.tolist() for v in values] == [[1.0 + k] * 7 for k in range(3)]


def test_distributed_optimizer_accumulates_backward_passes():
    ref = make_net(1000)
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    x, y, t = batch(0, 8)
    F.mse_loss(ref(x, y), t).backward()
    opt.step()

    def fn(comm):
        net = make_net(1000 + comm.rank)
        broadcast_parameters(net.state_dict(), root_rank=0, group=comm)
        dopt = DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1),
                                    named_parameters=net.named_parameters(),
                                    backward_passes_per_step=2, group=comm)
        for k in range(2):                       # rank r, pass k: rows of micro-batch (k, r)
            rows = slice(4 * k + 2 * comm.rank, 4 * k + 2 * comm.rank + 2)
            (F.mse_loss(net(x[rows], y[rows]), t[rows]) / 2).backward()
        dopt.step()
        return max(((a - b).abs().max() / b.abs().max()).item()
                   for a, b in zip(net.parameters(), ref.parameters()))
    assert max(run_ranks(2, fn)) < 1e-6


def test_distributed_optimizer_rejects_foreign_parameters():
    def fn(comm):
        net, other = make_net(0), make_net(1)
        with pytest.raises(ValueError, match="not in named_parameters"):
            DistributedOptimizer(torch.optim.SGD(net.parameters(), lr=0.1),
                                 named_parameters=other.named_parameters(), group=comm)
        return True
    assert run_ranks(2, fn) == [True, True]


def test_broadcast_optimizer_state_from_root():
    def fn(comm):
        net = make_net(0)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3 * (comm.rank + 1))
        if comm.rank == 0:                        # only the root has stepped
            F.mse_loss(net(*batch(0, 2)[:2]), batch(0, 2)[2]).backward()
            opt.step()
        broadcast_optimizer_state(opt, root_rank=0, group=comm)
        st = opt.state[net.fc.weight]
        return opt.param_groups[0]["lr"], float(st["step"]), st["exp_avg"].sum().item()
    a, b = run_ranks(2, fn)
    assert a == b and a[0] == 1e-3 and a[1] == 1.0


@pytest.mark.parametrize("n,world", [(10, 3), (12, 4), (2, 3), (0, 2)])
def test_shard_indices_cover_and_reshuffle(n, world):
    for drop_last in (False, True):
        parts = [shard_indices(n, r, world, epoch=1, seed=3, drop_last=drop_last)
                 for r in range(world)]
        assert len({len(p) for p in parts}) == 1                        # same steps everywhere
        flat = [i for p in parts for i in p]
        if drop_last:
            assert len(flat) == len(set(flat)) == n - n % world         # disjoint
        else:
            assert set(flat) == set(range(n)) and len(flat) == -(-n // world) * world
    if n >= 10:
        e1, e2 = (shard_indices(n, 0, world, epoch=e) for e in (1, 2))
        assert e1 != e2                                                   # reshuffled per epoch
        assert shard_indices(n, 0, world, epoch=1) == e1                  # and reproducible


def test_distributed_sampler_len_and_epoch():
    s = DistributedSampler(10, rank=1, world_size=3)
    s.set_epoch(4)
    assert list(s) == shard_indices(10, 1, 3, epoch=4) and len(s) == 4


def test_init_torch_distributed_needs_the_world_of_init():
    """It reads the launcher's environment from ringflow.init()'s world (README.md's DDP recipe
    runs it under torchrun: tests/test_readme.py)."""
    def fn(comm):
        with pytest.raises(ValueError, match=r"needs the world of ringflow.init\(\)"):
            init_torch_distributed(comm)
        return True
    assert run_ranks(1, fn) == [True]
