"""FullyShardedDataParallel on the thread transport against one process on the whole batch.

The launched runs (torchrun, mpirun) are in the equivalence matrix (test_parallel_equivalence).
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ringflow.collectives.threads import run_ranks
from ringflow.parallel import FullyShardedDataParallel as FSDP
from ringflow.parallel import merge_sharded
from tests.parallel.fsdp_models import (batch, local_rows, make_blocks, max_rel_diff,
                                        reference)

pytestmark = pytest.mark.timeout(90)
ROWS, STEPS, TOL = 12, 10, 1e-5
ADAMW = lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)
SGD = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)


def train(model, opt, comm, steps, first=0, clip=None):
    for step in range(first, first + steps):
        x, t = batch(step, ROWS)
        rows = local_rows(comm, ROWS)
        F.mse_loss(model(x[rows]), t[rows]).backward()
        if clip is not None:
            model.clip_grad_norm_(clip)
        opt.step()
        opt.zero_grad()


def identical(sds) -> bool:
    return all(torch.equal(sd[k], sds[0][k]) for sd in sds[1:] for k in sds[0])


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("opt_fn", [ADAMW, SGD], ids=["adamw", "sgd"])
@pytest.mark.parametrize("reshard", [True, False])
def test_default_units_match_one_process(n, opt_fn, reshard):
    ref = reference(make_blocks(0), STEPS, ROWS, opt_fn)

    def fn(comm):
        model = FSDP(make_blocks(comm.rank), group=comm, reshard_after_forward=reshard)
        assert [u.name for u in model.units] == ["", "blocks.0", "blocks.1", "blocks.2",
                                                 "blocks.3"]
        opt = opt_fn(model.parameters())
        per_step = []
        for step in range(STEPS):          # rank 0's weights win: the others start elsewhere
            train(model, opt, comm, 1, first=step)
            per_step.append(model.state_dict())
        return per_step
    out = run_ranks(n, fn)
    for step in range(STEPS):
        assert identical([r[step] for r in out]), f"ranks differ after step {step}"
    assert max_rel_diff(out[0][-1], ref) <= TOL


def test_clip_grad_norm_matches_torch():
    ref = make_blocks(0)
    x, t = batch(0, ROWS)
    F.mse_loss(ref(x), t).backward()
    for norm_type in (2.0, math.inf):
        expect = torch.nn.utils.clip_grad_norm_(ref.parameters(), 1e9, norm_type=norm_type)

        def fn(comm):
            model = FSDP(make_blocks(0), group=comm)
            F.mse_loss(model(x[local_rows(comm, ROWS)]), t[local_rows(comm, ROWS)]).backward()
            return model.clip_grad_norm_(0.01, norm_type=norm_type).item()
        assert run_ranks(3, fn) == pytest.approx([expect.item()] * 3, rel=1e-5)


def test_reduce_scatters_are_issued_during_backward():
    """The last block's gradients leave before the first block is gathered for backward."""
    def fn(comm):
        model = FSDP(make_blocks(0), group=comm)
        first = comm.seq
        x, t = batch(0, ROWS)
        F.mse_loss(model(x[local_rows(comm, ROWS)]), t[local_rows(comm, ROWS)]).backward()
        return [r.name for r in comm.history if r.seq >= first]
    names = run_ranks(2, fn)[0]
    gathers = [i for i, n in enumerate(names) if n == "all_gather_into_tensor"]
    scatters = [i for i, n in enumerate(names) if n == "reduce_scatter_tensor"]
    # forward gathers root + 4 blocks; backward gathers blocks 3..0 again; 5 reduce-scatters
    assert len(gathers) == 9 and len(scatters) == 5, names
    assert scatters[0] < gathers[-1], names


def test_memory_is_one_over_n_plus_a_unit_working_set():
    """Parameters + gradients + AdamW state per rank, sampled through forward and backward."""
    depth, n = 8, 2
    net = make_blocks(0, depth)
    numel = sum(p.numel() for p in net.parameters())
    replicated = 4 * numel * 4             # params, grads, exp_avg, exp_avg_sq (fp32)

    def fn(comm):
        model = FSDP(make_blocks(0, depth), group=comm)
        opt = ADAMW(model.parameters())
        peak = [0]

        def sample(*_):
            m = model.memory()
            state = sum(v.numel() * v.element_size() for s in opt.state.values()
                        for v in s.values() if torch.is_tensor(v) and v.dim())
            peak[0] = max(peak[0], m["shards"] + m["shard_grads"] + m["gathered"]
                          + m["full_grads"] + state)
        for mod in model.module.modules():
            mod.register_forward_hook(sample)
        for p in model.module.parameters():
            p.register_post_accumulate_grad_hook(sample)
        for step in range(2):
            x, t = batch(step, ROWS)
            F.mse_loss(model(x[local_rows(comm, ROWS)]), t[local_rows(comm, ROWS)]).backward()
            sample()                                 # gradients reduced, state from step 0
            opt.step()
            sample()
            opt.zero_grad()
        units = [u.param_nbytes() for u in model.units]
        return peak[0], units[0], max(units[1:])
    for peak, root, block in run_ranks(n, fn):
        bound = 1.05 * replicated / n + root + 3 * block    # root, two blocks, one's gradients
        print(f"fsdp memory per rank: {peak} B, replicated {replicated} B, bound {bound:.0f} B")
        assert peak <= bound and peak < 0.7 * replicated


def bf16_reference(steps: int) -> dict:
    """One process, the mixed-precision recipe by hand: a bf16 copy computes, fp32 master steps."""
    master = make_blocks(0)
    opt = SGD(master.parameters())
    for step in range(steps):
        work = copy.deepcopy(master).to(torch.bfloat16)
        x, t = batch(step, ROWS)
        F.mse_loss(work(x.to(torch.bfloat16)), t).backward()
        for p, w in zip(master.parameters(), work.parameters()):
            p.grad = w.grad.float()
        opt.step()
    return {k: v.detach().clone() for k, v in master.state_dict().items()}


def test_mixed_precision_bf16_compute_fp32_master():
    ref32, ref16 = reference(make_blocks(0), 3, ROWS, SGD), bf16_reference(3)

    def fn(comm):
        model = FSDP(make_blocks(0), group=comm, mixed_precision=torch.bfloat16)
        seen = []
        model.module.blocks[0].fc1.register_forward_hook(
            lambda m, a, out: seen.append((m.weight.dtype, a[0].dtype)))
        first = comm.seq
        train(model, SGD(model.parameters()), comm, 3)
        wire = {(r.name, r.dtype) for r in comm.history if r.seq >= first
                and r.name != "all_reduce"}       # (which units had gradients: a flag each)
        return model.state_dict(), seen[0], wire
    sd, seen, wire = run_ranks(2, fn)[0]
    assert seen == (torch.bfloat16, torch.bfloat16)          # compute in bf16
    assert wire == {("all_gather_into_tensor", "bfloat16"),
                    ("reduce_scatter_tensor", "float32")}, wire
    assert all(v.dtype == torch.float32 for v in sd.values())  # fp32 master
    print(f"bf16 vs bf16 oracle {max_rel_diff(sd, ref16):.2e}, "
          f"vs fp32 {max_rel_diff(sd, ref32):.2e}")
    assert max_rel_diff(sd, ref16) <= 1e-2


def test_no_sync_accumulates_then_reduces_once():
    """Two half-batches (one under no_sync) == one step on the whole batch."""
    ref = reference(make_blocks(0), 1, ROWS, SGD)

    def fn(comm):
        model = FSDP(make_blocks(0), group=comm)
        opt = SGD(model.parameters())
        x, t = batch(0, ROWS)
        rows = local_rows(comm, ROWS)
        xs, ts = x[rows].chunk(2), t[rows].chunk(2)
        first = comm.seq
        with model.no_sync():
            (F.mse_loss(model(xs[0]), ts[0]) / 2).backward()
        rs = [r.name for r in comm.history if r.seq >= first].count("reduce_scatter_tensor")
        (F.mse_loss(model(xs[1]), ts[1]) / 2).backward()
        opt.step()
        return model.state_dict(), rs
    for sd, rs in run_ranks(2, fn):
        assert rs == 0 and max_rel_diff(sd, ref) <= TOL


def test_eval_and_inference_free_everything():
    net = make_blocks(0)
    x, _ = batch(0, ROWS)
    expect = net(x)

    def fn(comm):
        model = FSDP(make_blocks(0), group=comm).eval()
        with torch.no_grad():
            y = model(x)
        return torch.equal(y, expect), model.memory()["gathered"]
    assert run_ranks(2, fn) == [(True, 0)] * 2


def test_checkpoint_from_two_ranks_continues_on_three():
    ref = reference(make_blocks(0), 5, ROWS, ADAMW)

    def save(comm):
        model = FSDP(make_blocks(0), group=comm)
        opt = ADAMW(model.parameters())
        train(model, opt, comm, 3)
        return (model.state_dict(), model.optim_state_dict(opt),
                copy.deepcopy(model.sharded_state_dict()), model.state_dict(rank0_only=True))
    saved = run_ranks(2, save)
    sd, osd = saved[0][0], saved[0][1]
    assert saved[1][3] == {} and identical([sd, saved[0][3], saved[1][0]])   # rank 0 / every rank
    plain = make_blocks(1)
    plain.load_state_dict(sd)                          # the unwrapped model's format
    for k, v in merge_sharded([s[2] for s in saved]).items():
        assert torch.equal(v, sd[k]), k

    def resume(comm):
        model = FSDP(make_blocks(7), group=comm)
        opt = ADAMW(model.parameters())
        model.load_state_dict(sd)
        model.load_optim_state_dict(opt, osd)
        train(model, opt, comm, 2, first=3)
        return model.state_dict()
    for got in run_ranks(3, resume):
        assert max_rel_diff(got, ref) <= TOL


def test_sharded_state_dict_round_trip_and_wrong_world_size():
    def fn(comm):
        model = FSDP(make_blocks(0), group=comm)
        train(model, SGD(model.parameters()), comm, 2)
        part = copy.deepcopy(model.sharded_state_dict())
        twin = FSDP(make_blocks(5), group=comm)
        twin.load_state_dict(part)
        same = identical([model.state_dict(), twin.state_dict()])
        part["fsdp_shard"]["world_size"] = 5
        with pytest.raises(ValueError, match="merge the shards of every rank with merge_sharded"):
            twin.load_state_dict(part)
        return same
    assert run_ranks(2, fn) == [True, True]


def test_tied_weights_across_units_go_to_the_root():
    def tied(seed):
        net = make_blocks(seed)
        net.blocks[3].fc2.weight = net.blocks[0].fc2.weight      # shared by two units
        return net
    ref = reference(tied(0), 4, ROWS, SGD)

    def fn(comm):
        model = FSDP(tied(0), group=comm)
        root = {n for g in model.units[0].groups for n in g.names}
        train(model, SGD(model.parameters()), comm, 4)
        return "blocks.0.fc2.weight" in root, model.state_dict()
    for in_root, sd in run_ranks(2, fn):
        assert in_root and max_rel_diff(sd, ref) <= TOL


def test_frozen_parameters_are_sharded_but_never_stepped():
    def frozen(seed):
        net = make_blocks(seed)
        net.blocks[1].fc1.weight.requires_grad_(False)
        net.inp.requires_grad_(False)
        return net
    ref = reference(frozen(0), 3, ROWS, ADAMW)

    def fn(comm):
        model = FSDP(frozen(0), group=comm)
        n_opt = sum(s.numel() for s in model.parameters())
        train(model, ADAMW(model.parameters()), comm, 3)
        return n_opt, model.state_dict()
    trainable = sum(p.numel() for p in frozen(0).parameters() if p.requires_grad)
    for n_opt, sd in run_ranks(2, fn):
        assert n_opt <= trainable // 2 + 2 * 5        # padding: at most n-1 per trainable group
        assert max_rel_diff(sd, ref) <= TOL


def skipping(net, used: int):
    """``net`` whose forward runs only ``blocks[:used]`` (the rest get no gradient)."""
    def forward(x):
        h = net.inp(x)
        for b in net.blocks[:used]:
            h = b(h)
        return net.out(h)
    net.forward = forward
    return net


def test_blocks_unused_on_every_rank_are_skipped_by_the_optimizer():
    """As torch (and FSDP2) leave a parameter no rank used: gradient None, AdamW (weight decay,
    momentum) does not touch it; equal to one process with the same unused blocks."""
    ref = reference(skipping(make_blocks(0), 2), 3, ROWS, ADAMW)

    def fn(comm):
        model = FSDP(skipping(make_blocks(0), 2), group=comm)
        train(model, ADAMW(model.parameters()), comm, 3)
        x, t = batch(0, ROWS)
        F.mse_loss(model(x[local_rows(comm, ROWS)]), t[local_rows(comm, ROWS)]).backward()
        return [s.grad is None for s in model.parameters()], model.state_dict()
    for none, sd in run_ranks(2, fn):
        assert none == [False, False, False, True, True]     # root, blocks 0-1 | blocks 2-3
        assert max_rel_diff(sd, ref) <= TOL


def test_a_parameter_unused_on_some_ranks_is_a_named_error_not_a_hang():
    """Rank 1's last block skips its fc2: its unit's reduction moves behind the next gather on
    rank 1 only. The ring reports the mismatch; the error says what causes it."""
    def fn(comm):
        net = make_blocks(0)
        last = net.blocks[3]
        if comm.rank == 1:
            last.forward = lambda x: x + F.gelu(last.fc1(last.ln(x)))[:, :x.shape[1]]
        model = FSDP(net, group=comm)
        x, t = batch(0, ROWS)
        F.mse_loss(model(x[local_rows(comm, ROWS)]), t[local_rows(comm, ROWS)]).backward()
    outs = run_ranks(2, fn, timeout=20, outcomes=True)
    texts = [str(o.error) for o in outs]
    assert any("reach the same parameters" in t and "do not match" in t for t in texts), texts


def test_bad_units_are_named():
    def fn(comm):
        net = make_blocks(0)
        with pytest.raises(ValueError, match="nest or repeat"):
            FSDP(net, units=[net.blocks, net.blocks[0]], group=comm)
        with pytest.raises(ValueError, match="not a submodule"):
            FSDP(make_blocks(0), units=[net.blocks[0]], group=comm)
        with pytest.raises(ValueError, match="mixed_precision"):
            FSDP(make_blocks(0), mixed_precision=torch.float64, group=comm)
        return True
    assert run_ranks(2, fn) == [True, True]


def test_units_missing_parameters_leave_them_to_the_root():
    def fn(comm):
        net = make_blocks(0)
        model = FSDP(net, units=[net.blocks[2]], group=comm)
        return sorted({n.split(".")[0] for g in model.units[0].groups for n in g.names})
    assert run_ranks(2, fn)[0] == ["blocks", "inp", "out"]


def test_mixed_precision_trains_a_dit():
    """DiT makes fp32 tensors inside its forward (timestep sinusoid, positions); under bf16
    parameters they follow the weights' dtype, so mixed precision runs on the real network."""
    from ringflow.models import build_network, build_objective
    rf = build_objective("rectified_flow")

    def fn(comm):
        torch.manual_seed(0)
        net = build_network("dit-t", in_channels=1, image_size=8, num_classes=10, patch_size=2)
        model = FSDP(net, group=comm, mixed_precision=torch.bfloat16)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(comm.rank)
        x, y = torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)
        losses = []
        for _ in range(2):
            loss = rf.loss(model, x, y, generator=g)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        return losses, {s.dtype for s in model.parameters()}
    for losses, dtypes in run_ranks(2, fn):
        assert all(math.isfinite(v) for v in losses) and dtypes == {torch.float32}
