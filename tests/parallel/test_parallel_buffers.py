"""ZeroOptimizer and DistributedOptimizer keep buffers (BatchNorm statistics) equal across ranks
by DataParallel's rule (parallel/buffers.py): rank 0's are broadcast at each training forward,
and a forward in eval() or under no_grad issues no collective, so one rank may evaluate alone."""
import pytest
import torch
import torch.nn.functional as F

from ringflow import collectives as rc
from ringflow.collectives.threads import run_ranks
from ringflow.parallel import DistributedOptimizer, ZeroOptimizer
from tests.parallel.test_parallel_ddp_rules import bn_net

pytestmark = pytest.mark.timeout(60)

WRAPS = {
    "zero(model)": lambda net, comm, **kw: ZeroOptimizer(net, torch.optim.SGD, group=comm,
                                                         lr=0.1, **kw),
    "zero(module=)": lambda net, comm, **kw: ZeroOptimizer(
        [{"params": list(net.parameters())}], torch.optim.SGD, group=comm, module=net, lr=0.1,
        **kw),
    "horovod": lambda net, comm, **kw: DistributedOptimizer(
        torch.optim.SGD(net.parameters(), lr=0.1), named_parameters=net.named_parameters(),
        group=comm, module=net, **kw),
}


def train_step(net, opt, comm, step: int) -> None:
    torch.manual_seed(10 * step + comm.rank)         # each rank its own batch: stats drift apart
    x, t = torch.randn(16, 4) * (comm.rank + 1), torch.randn(16, 1)
    F.mse_loss(net(x), t).backward()
    opt.step()
    opt.zero_grad()


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_training_forwards_give_every_rank_rank0s_statistics(wrap):
    def fn(comm):
        net = bn_net(0)
        opt = WRAPS[wrap](net, comm)
        bn = net[1]
        bn.running_mean.fill_(float(comm.rank + 1))  # ranks drift apart before the forward
        bn.momentum = 0.0                            # the forward keeps the broadcast value
        train_step(net, opt, comm, 0)
        return bn.running_mean.clone(), bn.running_var.clone()
    (m0, v0), (m1, v1) = run_ranks(2, fn, timeout=20)
    assert torch.all(m0 == 1.0) and torch.equal(m0, m1) and torch.equal(v0, v1)


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_statistics_agree_at_every_training_forward_with_a_rank0_only_eval(wrap):
    """The issue's habit: rank 0 evaluates alone between training steps; every training forward
    still starts from the same statistics on every rank (each rank's batch differs)."""
    def fn(comm):
        net = bn_net(0)
        opt = WRAPS[wrap](net, comm)
        seen = []                                    # BatchNorm's statistics as its forward starts
        net[1].register_forward_pre_hook(
            lambda m, args: seen.append(m.running_mean.clone()) if m.training else None)
        for step in range(3):
            train_step(net, opt, comm, step)
            if comm.rank == 0:
                net.eval()
                with torch.no_grad():
                    net(torch.randn(8, 4))
                net.train()
        total = torch.ones(1)
        rc.all_reduce(total, group=comm)             # the collectives still line up
        return seen, total
    (s0, t0), (s1, t1) = run_ranks(2, fn, timeout=20)
    assert torch.equal(t0, torch.full((1,), 2.0)) and torch.equal(t1, t0)
    assert len(s0) == len(s1) == 3 and not torch.equal(s0[2], s0[0])   # they did move
    for step, (a, b) in enumerate(zip(s0, s1)):
        assert torch.equal(a, b), f"step {step}: rank 0 {a.tolist()} != rank 1 {b.tolist()}"


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_no_collective_in_eval_or_no_grad_forwards(wrap):
    def fn(comm):
        net = bn_net(0)
        WRAPS[wrap](net, comm)
        before = comm.seq
        net.eval()
        net(torch.randn(8, 4))
        net.train()
        with torch.no_grad():
            net(torch.randn(8, 4))
        return comm.seq - before
    assert run_ranks(2, fn, timeout=20) == [0, 0]


@pytest.mark.parametrize("wrap", list(WRAPS))
def test_always_and_never(wrap):
    def fn(comm):
        seen = []
        for mode in ("always", False):
            net = bn_net(0)
            WRAPS[wrap](net, comm, broadcast_buffers=mode)
            net[1].running_mean.fill_(float(comm.rank + 1))
            net.eval()
            with torch.no_grad():
                net(torch.randn(8, 4))
            seen.append(net[1].running_mean[0].item())
        with pytest.raises(ValueError, match="broadcast_buffers='sometimes'"):
            WRAPS[wrap](bn_net(0), comm, broadcast_buffers="sometimes")
        return seen
    assert run_ranks(2, fn, timeout=20) == [[1.0, 1.0], [1.0, 2.0]]   # "always": rank 0's


def test_zero_refuses_two_different_modules():
    def fn(comm):
        with pytest.raises(ValueError, match="pass the model once"):
            ZeroOptimizer(bn_net(0), torch.optim.SGD, group=comm, module=bn_net(1), lr=0.1)
        return True
    assert run_ranks(1, fn) == [True]
