"""DataParallel follows torch DDP's rules a user brings along: buffers are broadcast only in
training forwards (so one rank may evaluate alone), and DDP's keyword arguments are accepted where
harmless and refused with the reason otherwise."""
import pytest
import torch
from torch import nn

from ringflow import collectives as rc
from ringflow.collectives.threads import run_ranks
from ringflow.parallel import DataParallel

pytestmark = pytest.mark.timeout(60)


def bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))


def test_rank0_only_eval_forward_makes_no_collective():
    """The habit from the issue: rank 0 evaluates alone, then both ranks train on; statistics stay
    equal across ranks because training forwards broadcast rank 0's buffers."""
    def fn(comm):
        dp = DataParallel(bn_net(comm.rank), group=comm)
        torch.manual_seed(100 + comm.rank)
        if comm.rank == 0:                      # eval mode, no_grad: must not broadcast
            dp.eval()
            with torch.no_grad():
                dp(torch.randn(16, 4))
            dp.train()
        seq_before = comm.seq
        dp(torch.randn(16, 4)).sum().backward()
        total = torch.ones(3)
        rc.all_reduce(total, group=comm)       # collectives still line up after the eval
        return seq_before, total
    (seq0, t0), (seq1, t1) = run_ranks(2, fn, timeout=20)
    assert seq0 == seq1                        # the eval forward issued no collective
    assert torch.equal(t0, torch.full((3,), 2.0)) and torch.equal(t1, t0)


def test_training_forward_broadcasts_rank0_buffers():
    def fn(comm):
        dp = DataParallel(bn_net(0), group=comm)
        dp.module[1].running_mean.fill_(float(comm.rank + 1))   # ranks drift apart
        dp.module[1].momentum = 0.0                              # forward keeps the buffer
        dp(torch.randn(8, 4)).sum().backward()
        return dp.module[1].running_mean.clone()
    a, b = run_ranks(2, fn, timeout=20)
    assert torch.equal(a, b) and torch.all(a == 1.0)             # rank 0's value everywhere


@pytest.mark.parametrize("mode", ["no_grad", "eval"])
def test_no_broadcast_outside_training(mode):
    def fn(comm):
        dp = DataParallel(bn_net(0), group=comm)
        dp.module[1].running_mean.fill_(float(comm.rank + 1))
        before = comm.seq
        if mode == "eval":
            dp.eval()
            dp(torch.randn(8, 4))
        else:
            with torch.no_grad():
                dp(torch.randn(8, 4))
        return comm.seq - before, dp.module[1].running_mean.clone()
    (n0, a), (n1, b) = run_ranks(2, fn, timeout=20)
    assert n0 == n1 == 0
    assert not torch.equal(a, b)


def test_always_broadcasts_in_eval_too():
    def fn(comm):
        dp = DataParallel(bn_net(0), group=comm, broadcast_buffers="always")
        dp.module[1].running_mean.fill_(float(comm.rank + 1))
        dp.eval()
        with torch.no_grad():
            dp(torch.randn(8, 4))
        return dp.module[1].running_mean.clone()
    a, b = run_ranks(2, fn, timeout=20)
    assert torch.equal(a, b)


def test_ddp_keywords_harmless_ones_accepted():
    def fn(comm):
        dp = DataParallel(bn_net(0), group=comm, device_ids=None, output_device=None, dim=0,
                          static_graph=True, gradient_as_bucket_view=True, check_reduction=False,
                          mixed_precision=None, init_sync=True)
        dp(torch.randn(8, 4)).sum().backward()
        return True
    assert run_ranks(2, fn, timeout=20) == [True, True]


def test_ddp_device_ids_of_the_modules_device_accepted():
    def fn(comm):
        DataParallel(bn_net(0), group=comm, device_ids=["cpu"], output_device="cpu")
        return True
    assert run_ranks(1, fn, timeout=20) == [True]


@pytest.mark.parametrize("kwargs, error, words", [
    ({"device_ids": [3]}, ValueError, "one device per rank"),
    ({"mixed_precision": object()}, ValueError, "compress='bf16'"),
    ({"device_mesh": object()}, ValueError, "group=<ringflow Communicator>"),
    ({"process_group": object()}, TypeError, "torch process groups are not accepted"),
    ({"bucket_size": 3}, TypeError, "unexpected keyword argument 'bucket_size'"),
])
def test_ddp_keywords_refused_with_reason(kwargs, error, words):
    def fn(comm):
        with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[")):
            DataParallel(bn_net(0), group=comm, **kwargs)
        return True
    assert run_ranks(1, fn, timeout=20) == [True]


def test_bad_broadcast_buffers_value():
    def fn(comm):
        with pytest.raises(ValueError, match="broadcast_buffers='sometimes'"):
            DataParallel(bn_net(0), group=comm, broadcast_buffers="sometimes")
        return True
    assert run_ranks(1, fn, timeout=20) == [True]


def test_init_sync_false_skips_the_first_broadcast():
    def fn(comm):
        dp = DataParallel(bn_net(comm.rank), group=comm, init_sync=False)
        return comm.seq, dp.module[0].weight.detach().clone()
    (s0, w0), (s1, w1) = run_ranks(2, fn, timeout=20)
    assert s0 == s1 == 0 and not torch.equal(w0, w1)
