"""ZeroOptimizer on the thread transport: state memory, checkpoints, clipping, schedulers."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ringflow.collectives.threads import run_ranks
from ringflow.parallel import ZeroOptimizer
from tests.parallel.matrix import batch, make_net

pytestmark = pytest.mark.timeout(60)


def train(net, opt, comm, steps, first=0):
    for step in range(first, first + steps):
        x, y, t = batch(step, 2 * comm.size)
        rows = slice(2 * comm.rank, 2 * comm.rank + 2)
        F.mse_loss(net(x[rows], y[rows]), t[rows]).backward()
        opt.step()
        opt.zero_grad()


def state_numel(opt) -> int:
    return sum(v.numel() for s in opt.state.values() for v in s.values()
               if torch.is_tensor(v) and v.dim())


@pytest.mark.parametrize("stage", [1, 2])
def test_state_memory_is_one_over_world_size(stage):
    total = sum(p.numel() for p in make_net(0).parameters())

    def fn(comm):
        net = make_net(0)
        opt = ZeroOptimizer(net.parameters(), torch.optim.AdamW, group=comm, stage=stage, lr=1e-3)
        train(net, opt, comm, 1)
        full_grads = any(p.grad is not None for p in net.parameters()) or opt.groups[0].grads
        return state_numel(opt), bool(full_grads)
    for n in (2, 3):
        per_rank = run_ranks(n, fn)
        # exp_avg + exp_avg_sq, 1/n each; stage 2 keeps only its gradient shard after step()
        assert per_rank == [(2 * math.ceil(total / n), stage == 1)] * n


def test_consolidated_state_dict_loads_into_plain_optimizer_and_other_world_size():
    def save(comm):
        net = make_net(1000)
        opt = ZeroOptimizer(net.parameters(), torch.optim.AdamW, group=comm, lr=1e-3)
        train(net, opt, comm, 3)
        return opt.state_dict(), {k: v.clone() for k, v in net.state_dict().items()}
    sd, weights = run_ranks(2, save)[0]
    plain_net = make_net(0)
    plain_net.load_state_dict(weights)
    plain = torch.optim.AdamW(plain_net.parameters(), lr=1e-3)
    plain.load_state_dict(sd)                                   # the unsharded format exactly
    assert plain.state[plain_net.fc.weight]["exp_avg"].shape == plain_net.fc.weight.shape

    def resume(comm):                                           # 2 ranks saved, 3 ranks load
        net = make_net(0)
        net.load_state_dict(weights)
        opt = ZeroOptimizer(net.parameters(), torch.optim.AdamW, group=comm, lr=1e-3)
        opt.load_state_dict(sd)
        return opt.state_dict()
    again = run_ranks(3, resume)[0]
    for i, st in sd["state"].items():
        for k, v in st.items():
            assert torch.equal(again["state"][i][k], v), (i, k)


def test_sharded_state_dict_round_trip_and_layout_check():
    def fn(comm):
        net = make_net(1000)
        opt = ZeroOptimizer(net.parameters(), torch.optim.SGD, group=comm, lr=0.1, momentum=0.9)
        train(net, opt, comm, 2)
        twin = make_net(0)
        twin.load_state_dict(net.state_dict())
        resumed = ZeroOptimizer(twin.parameters(), torch.optim.SGD, group=comm, lr=0.1, momentum=0.9)
        sd = copy.deepcopy(opt.sharded_state_dict())     # as if saved: no shared tensors
        resumed.load_state_dict(sd)
        train(net, opt, comm, 1, first=2)
        train(twin, resumed, comm, 1, first=2)              # same momentum: the same step
        sd["zero_shard"]["world_size"] = 5
        with pytest.raises(ValueError, match="world_size=5"):
            resumed.load_state_dict(sd)
        return all(torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters()))
    assert run_ranks(2, fn) == [True, True]


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_grad_norm_across_shards_matches_torch(norm_type):
    ref = make_net(1000)
    x, y, t = batch(0, 6)
    F.mse_loss(ref(x, y), t).backward()
    expect = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1, norm_type=norm_type)

    def fn(comm):
        net = make_net(1000)
        opt = ZeroOptimizer(net.parameters(), torch.optim.SGD, group=comm, stage=2, lr=1.0)
        rows = slice(2 * comm.rank, 2 * comm.rank + 2)
        F.mse_loss(net(x[rows], y[rows]), t[rows]).backward()
        return opt.clip_grad_norm_(0.1, norm_type=norm_type).item()
    for got in run_ranks(3, fn):
        assert got == pytest.approx(expect.item(), rel=1e-5)


def test_works_with_lr_scheduler_and_rejects_bad_stage():
    def fn(comm):
        net = make_net(0)
        opt = ZeroOptimizer(net.parameters(), torch.optim.SGD, group=comm, lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        train(net, opt, comm, 1)
        sched.step()
        with pytest.raises(ValueError, match="stage must be 1"):
            ZeroOptimizer(net.parameters(), torch.optim.SGD, group=comm, stage=3, lr=1.0)
        return opt.param_groups[0]["lr"]
    assert run_ranks(2, fn) == [0.5, 0.5]


# stage 2: the reduce-scatter is issued piece by piece during backward, one reduce into each
# rank's region per bucket (one bucket per region here), then the all-gather in step()
@pytest.mark.parametrize("stage,calls", [(1, ["all_reduce", "all_gather_into_tensor"]),
                                         (2, ["reduce", "reduce", "all_gather_into_tensor"])])
def test_step_is_all_reduce_split_around_the_optimizer(stage, calls):
    def fn(comm):
        net = make_net(0)
        opt = ZeroOptimizer(net.parameters(), torch.optim.SGD, group=comm, stage=stage, lr=0.1)
        first = comm.seq
        train(net, opt, comm, 1)
        return [r.name for r in comm.history if r.seq >= first]
    assert run_ranks(2, fn) == [calls, calls]


def test_weights_loaded_after_construction_are_not_overwritten():
    def fn(comm):
        net = make_net(0)
        opt = ZeroOptimizer(net.parameters(), torch.optim.SGD, group=comm, lr=0.0)
        loaded = make_net(1000).state_dict()
        net.load_state_dict(loaded)                  # e.g. resuming from a checkpoint
        train(net, opt, comm, 1)                     # lr 0: the step must change nothing
        return all(torch.equal(v, net.state_dict()[k]) for k, v in loaded.items())
    assert run_ranks(2, fn) == [True, True]


def test_state_dict_on_rank0_only_says_it_is_a_collective():
    """Rank 0 saves alone while rank 1 trains on: the gather meets another call, and rank 0's
    error says state_dict() must be called on every rank (not only "sizes differ")."""
    def fn(comm):
        net = make_net(0)
        opt = ZeroOptimizer(net.parameters(), torch.optim.AdamW, group=comm, lr=1e-3)
        train(net, opt, comm, 1)
        if comm.rank == 0:
            opt.state_dict()
        else:
            train(net, opt, comm, 1, first=1)
    outs = run_ranks(2, fn, timeout=3, outcomes=True)
    text = str(outs[0].error)
    assert "state_dict() is a collective" in text and "every rank" in text, text
    assert "sharded_state_dict()" in text and outs[1].error is not None, text


@pytest.mark.parametrize("stage", [1, 2])
def test_model_cast_after_construction_is_named(stage):
    def fn(comm):
        net = make_net(0)
        opt = ZeroOptimizer(net.parameters(), torch.optim.AdamW, group=comm, stage=stage, lr=1e-3)
        net.to(torch.float64)                        # detaches the parameters from the optimizer
        x, y, t = batch(0, 2)
        F.mse_loss(net(x.double(), y), t.double()).backward()
        with pytest.raises(RuntimeError, match=r"torch.float64 on cpu, no longer the torch.float32"
                                               r".*Build ZeroOptimizer after model.to\(...\)"):
            opt.step()
        return True
    assert run_ranks(2, fn) == [True, True]


def test_stage2_reduces_buckets_while_backward_runs():
    """Small buckets: by the time the first layer's gradient exists (the end of backward),
    buckets of later layers are already reduced or on their way; step() adds none."""
    def fn(comm):
        net = make_net(0)
        opt = ZeroOptimizer(net.parameters(), torch.optim.SGD, group=comm, stage=2, lr=0.1,
                            bucket_cap_mb=0.001)
        first, seen = comm.seq, []
        net.conv.weight.register_post_accumulate_grad_hook(lambda p: seen.append(comm.seq))
        x, y, t = batch(0, 2 * comm.size)
        rows = slice(2 * comm.rank, 2 * comm.rank + 2)
        F.mse_loss(net(x[rows], y[rows]), t[rows]).backward()
        after_backward = comm.seq
        opt.step()
        names = [r.name for r in comm.history if r.seq >= first]
        return seen[0] - first, after_backward - first, names[-1], comm.seq - after_backward
    for during, total, last, in_step in run_ranks(2, fn):
        assert 0 < during < total and last == "all_gather_into_tensor" and in_step == 1


def _train_reading_after_forward(comm, gather_in_forward: bool, steps: int = 4):
    """Stage 2 with small buckets; the parameters each forward computed with, per step."""
    net = make_net(1000 + comm.rank)
    opt = ZeroOptimizer(net, torch.optim.AdamW, group=comm, stage=2, lr=1e-3,
                        bucket_cap_mb=0.002, gather_in_forward=gather_in_forward)
    used, first_waits = [], []
    if gather_in_forward:                             # what the first module waited for
        net.conv.register_forward_pre_hook(
            lambda m, a: first_waits.append((opt.gather.waited, len(opt.gather.works))))
    for step in range(steps):
        x, y, t = batch(step, 2 * comm.size)
        rows = slice(2 * comm.rank, 2 * comm.rank + 2)
        loss = F.mse_loss(net(x[rows], y[rows]), t[rows])
        used.append([p.detach().clone() for p in net.parameters()])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return used, first_waits


@pytest.mark.parametrize("n", [2, 3])
def test_gather_in_forward_is_bitwise_the_gather_in_step(n):
    """The parameters arrive under the next forward, each module waiting for its own buckets
    only; every forward computes with the bytes the all-gather in step() would have left."""
    in_step = run_ranks(n, lambda comm: _train_reading_after_forward(comm, False))
    in_fwd = run_ranks(n, lambda comm: _train_reading_after_forward(comm, True))
    for rank in range(n):
        for a, b in zip(in_step[rank][0], in_fwd[rank][0]):
            assert all(torch.equal(x, y) for x, y in zip(a, b))
    for step in range(4):                             # and the ranks agree
        assert all(torch.equal(x, y) for x, y in zip(in_fwd[0][0][step], in_fwd[-1][0][step]))
    waits = in_fwd[0][1][1:]                          # forward 0 follows no step
    assert waits and all(0 < waited < launched for waited, launched in waits), waits


def test_gather_in_forward_flushes_for_state_dicts_and_needs_the_model():
    def fn(comm):
        net = make_net(1000 + comm.rank)
        opt = ZeroOptimizer(net, torch.optim.SGD, group=comm, lr=0.1, bucket_cap_mb=0.002,
                            gather_in_forward=True)
        x, y, t = batch(0, 2 * comm.size)
        F.mse_loss(net(x[:2], y[:2]), t[:2]).backward()
        opt.step()
        stale = [p.detach().clone() for p in net.parameters()]   # before any flush
        sd = {k: v.clone() for k, v in net.state_dict().items()}  # flushes first
        changed = any(not torch.equal(a, b) for a, b in zip(stale, sd.values()))
        net.load_state_dict(make_net(5).state_dict())   # not overwritten by the pending send
        F.mse_loss(net(x[:2], y[:2]), t[:2]).backward()
        want = make_net(5).state_dict()
        loaded = all(torch.equal(v, want[k]) for k, v in net.state_dict().items())
        with pytest.raises(ValueError, match="gather_in_forward=True needs the model"):
            ZeroOptimizer(net.parameters(), torch.optim.SGD, group=comm, lr=0.1,
                          gather_in_forward=True)
        return changed, loaded
    assert run_ranks(2, fn) == [(True, True)] * 2


def test_chunked_step_is_bitwise_one_shard_and_state_dicts_do_not_show_it(monkeypatch):
    """The optimizer steps the shard in chunks (shard.py); results and every saved form are
    those of one tensor per shard."""
    def fn(comm):
        net = make_net(1000)
        opt = ZeroOptimizer(net, torch.optim.AdamW, group=comm, lr=1e-3)
        train(net, opt, comm, 3)
        return ([p.detach().clone() for p in net.parameters()], opt.state_dict(),
                copy.deepcopy(opt.sharded_state_dict()), len(opt.param_groups[0]["params"]))
    whole = run_ranks(2, fn)
    monkeypatch.setattr("ringflow.parallel.shard.CHUNK", 100)
    chunked = run_ranks(2, fn)
    for (p1, sd1, sh1, n1), (p2, sd2, sh2, n2) in zip(whole, chunked):
        assert n1 == 1 and n2 > 10
        assert all(torch.equal(a, b) for a, b in zip(p1, p2))
        for i, st in sd1["state"].items():
            other = sd2["state"][i]
            assert all(torch.equal(v, other[k]) if torch.is_tensor(v) else v == other[k]
                       for k, v in st.items())
        for k, v in sh1["optimizer"]["state"][0].items():
            assert torch.equal(v, sh2["optimizer"]["state"][0][k]), k

    def reload(comm):                                 # both forms load back into chunks
        net = make_net(1000)
        opt = ZeroOptimizer(net, torch.optim.AdamW, group=comm, lr=1e-3)
        opt.load_state_dict(chunked[comm.rank][2])
        again = opt.sharded_state_dict()["optimizer"]["state"][0]
        opt.load_state_dict(chunked[0][1])
        return again, opt.sharded_state_dict()["optimizer"]["state"][0]
    for rank, (a, b) in enumerate(run_ranks(2, reload)):
        for k, v in chunked[rank][2]["optimizer"]["state"][0].items():
            assert torch.equal(a[k], v) and torch.equal(b[k], v), k


def test_stage2_backwards_accumulate_until_step():
    """Two half-batch backwards (loss halved) then step == one step on the whole batch: the
    first backward since step() replaces the shard gradient, the second adds to it."""
    def fn(comm, halves: bool):
        net = make_net(1000)
        opt = ZeroOptimizer(net, torch.optim.SGD, group=comm, stage=2, lr=0.1, momentum=0.9,
                            bucket_cap_mb=0.002)
        for step in range(2):
            x, y, t = batch(step, 4 * comm.size)
            rows = slice(4 * comm.rank, 4 * comm.rank + 4)
            parts = [slice(0, 2), slice(2, 4)] if halves else [slice(0, 4)]
            for part in parts:
                xs, ys, ts = x[rows][part], y[rows][part], t[rows][part]
                (F.mse_loss(net(xs, ys), ts) / len(parts)).backward()
            opt.step()
            opt.zero_grad()
        return [p.detach().clone() for p in net.parameters()]
    whole = run_ranks(2, lambda comm: fn(comm, False))[0]
    for got in run_ranks(2, lambda comm: fn(comm, True)):
        assert max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, whole)) < 1e-6
