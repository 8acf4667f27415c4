"""DataParallel behaviour on the thread transport: buckets, overlap, no_sync, unused parameters,
compression, buffers, checkpoints."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ringflow import collectives as rc
from ringflow.collectives import wire
from ringflow.collectives.threads import run_ranks
from ringflow.parallel import DataParallel, NaiveDataParallel, UnusedParametersError
from ringflow.parallel.buckets import assign
from tests.parallel.matrix import batch, make_net

pytestmark = pytest.mark.timeout(60)


def rank_rows(comm, rows, step=0):
    x, y, t = batch(step, comm.size * rows)
    sl = slice(comm.rank * rows, (comm.rank + 1) * rows)
    return x[sl], y[sl], t[sl]


def test_bucket_assignment_reverse_small_first_capped():
    params = [torch.zeros(n) for n in (10, 20, 30, 40, 50)]       # 4 bytes per element
    buckets = assign(params, cap_bytes=300, first_cap_bytes=200)
    assert buckets == [[4], [3, 2], [1, 0]]                       # 200 B first, then <= 300 B
    assert sorted(i for b in buckets for i in b) == list(range(5))
    mixed = [torch.zeros(4), torch.zeros(4, dtype=torch.float64), torch.zeros(4)]
    assert all(len({mixed[i].dtype for i in b}) == 1 for b in assign(mixed, 1 << 20, 1 << 20))


def test_grads_are_bucket_views_and_match_naive_oracle():
    def fn(comm):
        dp = DataParallel(make_net(1000 + comm.rank), group=comm, bucket_cap_mb=0.01,
                          first_bucket_mb=0.002)
        naive = NaiveDataParallel(make_net(1000 + comm.rank), group=comm)
        x, y, t = rank_rows(comm, 4)
        F.mse_loss(dp(x, y), t).backward()
        F.mse_loss(naive(x, y), t).backward()
        naive.average_gradients()
        views = all(any(p.grad.data_ptr() == v.data_ptr() for b in dp.reducer.buckets for v in b.views)
                    for p in dp.parameters())
        close = all(torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-7)
                    for a, b in zip(dp.parameters(), naive.parameters()))
        return views, close, len(dp.reducer.buckets)
    for views, close, nbuckets in run_ranks(3, fn):
        assert views and close and nbuckets > 2


def test_buckets_launch_in_index_order_during_backward():
    def fn(comm):
        dp = DataParallel(make_net(1), group=comm, bucket_cap_mb=0.01, first_bucket_mb=0.002)
        events, launch = [], dp.reducer._launch
        dp.reducer._launch = lambda b: (events.append(("launch", b.index)), launch(b))
        for p in dp.parameters():                    # runs after the reducer's own hook
            p.register_post_accumulate_grad_hook(lambda p: events.append(("grad", None)))
        x, y, t = rank_rows(comm, 4)
        F.mse_loss(dp(x, y), t).backward()
        names = [r.name for r in comm.history]
        return events, names
    results = run_ranks(2, fn)
    events, names = results[0]
    launches = [i for kind, i in events if kind == "launch"]
    assert launches == sorted(launches) == list(range(len(launches)))
    last_grad = max(k for k, e in enumerate(events) if e[0] == "grad")
    assert events.index(("launch", 0)) < last_grad          # communication began inside backward
    assert names == results[1][1]                            # the same collectives on every rank


def test_no_sync_accumulation_equals_big_batch():
    def fn(comm):
        net = make_net(1000 + comm.rank)
        dp = DataParallel(net, group=comm, bucket_cap_mb=0.01)
        ref = make_net(1000)
        x, y, t = batch(0, 4 * comm.size * 2)              # 4 micro-batches of 2 rows per rank
        F.mse_loss(ref(x, y), t).backward()
        micro = x.view(4, comm.size, 2, 3, 4, 4), y.view(4, comm.size, 2), t.view(4, comm.size, 2, 4)
        for k in range(4):
            mx, my, mt = (m[k, comm.rank] for m in micro)
            dp.sync_grads = k == 3                         # the documented attribute
            loss = F.mse_loss(dp(mx, my), mt) / 4
            if k < 2:
                with dp.no_sync():                         # and the context manager
                    loss = F.mse_loss(dp(mx, my), mt) / 4
            loss.backward()
        return max(((a.grad - b.grad).abs().max() / b.grad.abs().max()).item()
                   for a, b in zip(net.parameters(), ref.parameters()))
    assert max(run_ranks(2, fn)) < 1e-5


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.never = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.frozen = nn.Linear(4, 4).requires_grad_(False)

    def forward(self, x, branch):
        return (self.a(x) if branch == 0 else self.b(x)) + self.frozen(x)


def test_unused_parameters_no_hang_and_correct_average():
    x = torch.randn(2, 2, 4)

    def fn(comm):
        torch.manual_seed(0)
        dp = DataParallel(Branchy(), group=comm, find_unused_parameters=True)
        dp(x[comm.rank], comm.rank % 2).sum().backward()    # rank 0 uses a, rank 1 uses b
        m = dp.module
        return m.a.weight.grad.clone(), m.b.weight.grad.clone(), m.never.weight.grad
    (ga0, gb0, n0), (ga1, gb1, n1) = run_ranks(2, fn)
    assert torch.equal(ga0, ga1) and torch.equal(gb0, gb1) and n0 is None and n1 is None
    torch.manual_seed(0)
    ref = Branchy()
    ((ref(x[0], 0).sum() + ref(x[1], 1).sum()) / 2).backward()
    assert torch.allclose(ga0, ref.a.weight.grad) and torch.allclose(gb0, ref.b.weight.grad)


def test_unused_parameters_error_names_them():
    def fn(comm):
        dp = DataParallel(Branchy(), group=comm)
        for _ in range(2):                                   # the reducer recovers each time
            with pytest.raises(UnusedParametersError, match=r"b\.weight, b\.bias, never\.weight"):
                dp(torch.randn(2, 4), 0).sum().backward()
        return True
    assert run_ranks(2, fn) == [True, True]


@pytest.mark.parametrize("compress,wire_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
@pytest.mark.parametrize("n", [2, 3])
def test_compressed_gradients_within_the_wire_bound_of_naive(compress, wire_dtype, n):
    """float32 buckets go through rc.all_reduce(wire_dtype=...): the fp32 average within
    wire.error_bound of mean |g| (plus the fp32 oracle's own rounding), ranks bitwise equal."""
    def fn(comm):
        dp = DataParallel(make_net(1000), group=comm, compress=compress, bucket_cap_mb=0.01)
        naive = NaiveDataParallel(make_net(1000), group=comm)
        x, y, t = rank_rows(comm, 3)
        F.mse_loss(naive(x, y), t).backward()
        mine = [p.grad.clone() for p in naive.parameters()]  # this rank's own gradient
        naive.average_gradients()
        F.mse_loss(dp(x, y), t).backward()
        mean_abs = []
        for g in mine:                                       # every rank's gradient, for the bound
            out = torch.empty(comm.size * g.numel())
            rc.all_gather_into_tensor(out, g.reshape(-1).contiguous(), group=comm)
            mean_abs.append(out.view(comm.size, *g.shape).abs().mean(0))
        names = {r.name for r in comm.history}
        return ([p.grad.clone() for p in dp.parameters()], [p.grad for p in naive.parameters()],
                mean_abs, names)
    results = run_ranks(n, fn)
    gamma = wire.error_bound(wire_dtype, n) + 2 * n * 2.0 ** -24   # + the fp32 oracle's roundings
    info = torch.finfo(wire_dtype)
    for grads, oracle, mean_abs, names in results:
        assert f"all_reduce_wire_{str(wire_dtype)[6:]}" in names, f"no compressed call: {names}"
        for g, o, m, g0 in zip(grads, oracle, mean_abs, results[0][0]):
            assert g.view(torch.int32).equal(g0.view(torch.int32)), "ranks differ bitwise"
            err = (g - o).abs()
            assert (err <= gamma * m + n * info.smallest_normal * info.eps).all(), err.max()
    assert any(not torch.equal(g, o) for g, o in zip(results[0][0], results[0][1])), \
        "compressed gradients equal the float32 ones exactly: nothing was rounded"


def test_compress_leaves_other_dtypes_alone():
    """float64 buckets travel in their own dtype even with compress="bf16" (only float32 is
    compressed): the average equals the uncompressed one exactly (two ranks: one addition)."""
    def fn(comm):
        dp = DataParallel(make_net(5).double(), group=comm, compress="bf16")
        naive = NaiveDataParallel(make_net(5).double(), group=comm)
        x, y, t = rank_rows(comm, 3)
        for model in (dp, naive):
            F.mse_loss(model(x.double(), y), t.double()).backward()
        naive.average_gradients()
        same = all(torch.equal(a.grad, b.grad) for a, b in zip(dp.parameters(), naive.parameters()))
        return same, {r.name for r in comm.history}
    for same, names in run_ranks(2, fn):
        assert same and not any(name.startswith("all_reduce_wire") for name in names)


def test_broadcast_buffers_and_initial_broadcast():
    def fn(comm, flag):
        torch.manual_seed(comm.rank)
        net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
        dp = DataParallel(net, group=comm, broadcast_buffers=flag)
        same_init = [p.clone() for p in net.parameters()]
        net[1].running_mean.add_(comm.rank + 1.0)            # replicas drift apart
        dp.eval()
        dp(torch.randn(2, 3))
        return net[1].running_mean.clone(), same_init
    on = run_ranks(2, lambda c: fn(c, "always"))    # an eval forward broadcasts only if "always"
    off = run_ranks(2, lambda c: fn(c, False))
    assert torch.equal(on[0][0], on[1][0])
    assert not torch.equal(off[0][0], off[1][0])
    assert all(torch.equal(a, b) for a, b in zip(on[0][1], on[1][1]))


def test_state_dict_loads_into_unwrapped_model():
    def fn(comm):
        dp = DataParallel(make_net(1000 + comm.rank), group=comm)
        sd = dp.state_dict()
        plain = make_net(7)
        plain.load_state_dict(sd)
        prefixed = {"module." + k: v + 1 for k, v in sd.items()}
        dp.load_state_dict(prefixed)
        return list(sd) == list(plain.state_dict()), torch.equal(dp.module.fc.bias, plain.fc.bias + 1)
    assert run_ranks(2, fn) == [(True, True)] * 2


def test_world_of_one_leaves_gradients_alone():
    def fn(comm):
        net, ref = make_net(3), make_net(3)
        dp = DataParallel(net, group=comm, compress=None)
        x, y, t = batch(0, 4)
        F.mse_loss(dp(x, y), t).backward()
        F.mse_loss(ref(x, y), t).backward()
        return all(torch.equal(a.grad, b.grad) for a, b in zip(net.parameters(), ref.parameters()))
    assert run_ranks(1, fn) == [True]
