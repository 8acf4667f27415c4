"""Worker: every torch.distributed verb on the backend "ringflow" against a single-process oracle
and against the same call on a gloo group of the same ranks.

    torchrun --nproc_per_node=3 tests/backend/verbs_worker.py
    mpirun -np 2 python tests/backend/verbs_worker.py       (MASTER_ADDR/PORT exported)

Inputs with integer values make every sum exact, so ringflow and gloo must agree bitwise whatever
order each reduces in; random normals are checked against the oracle within float32 rounding.
Prints "VERBS OK" and the transport on success.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as fc

from tests.backend.any_source_cases import check_any_source
from tests.backend.common import join, launcher_name, rank_input

REDUCE = {dist.ReduceOp.SUM: lambda xs: sum(x.double() for x in xs),
          dist.ReduceOp.MAX: lambda xs: torch.stack(xs).max(0).values,
          dist.ReduceOp.MIN: lambda xs: torch.stack(xs).min(0).values,
          dist.ReduceOp.PRODUCT: lambda xs: torch.stack([x.double() for x in xs]).prod(0),
          dist.ReduceOp.AVG: lambda xs: sum(x.double() for x in xs) / len(xs)}


def check(name, got, want, exact=True):
    want = want.to(got.dtype)
    if exact:
        assert torch.equal(got, want), f"{name}: {got} != {want}"
    else:
        assert torch.allclose(got.double(), want.double(), rtol=1e-5, atol=1e-6), \
            f"{name}: {got} vs {want}"


def both(fn, rf, gloo):
    """fn(group) -> the tensor it produced; run on ringflow's group and on gloo's."""
    return fn(rf), fn(gloo)


def all_reduce_cases(rf, gloo, r, n):
    for op, fn in REDUCE.items():
        for dtype in (torch.float32, torch.float64, torch.int64, torch.bfloat16):
            if op == dist.ReduceOp.AVG and not dtype.is_floating_point:
                continue
            for numel in (0, 1, n - 1, 1000, 4099):
                xs = [rank_input(i, (numel,), dtype, seed=numel, integral=True) for i in range(n)]
                if op == dist.ReduceOp.PRODUCT:
                    xs = [x.clamp(-2, 2) for x in xs]
                ours, ref = both(lambda g: _ar(xs[r].clone(), op, g), rf, gloo)
                exact = op != dist.ReduceOp.AVG
                check(f"all_reduce {op} {dtype} {numel}", ours, fn(xs), exact)
                check(f"all_reduce {op} {dtype} {numel} vs gloo", ours, ref, exact)
    xs = [rank_input(i, (3, 1000)) for i in range(n)]
    check("all_reduce randn", _ar(xs[r].clone(), dist.ReduceOp.SUM, rf), REDUCE[dist.ReduceOp.SUM](xs),
          exact=False)


def sparse_cases(rf, gloo, r, n):
    """A sparse COO all_reduce (hybrid: 2 sparse dims, 1 dense), one rank with no entries."""
    def make(rank):
        g = torch.Generator().manual_seed(rank)
        nnz = 5 if rank else 0
        return torch.sparse_coo_tensor(torch.randint(0, 6, (2, nnz), generator=g),
                                       torch.randint(-8, 9, (nnz, 3), generator=g).float(),
                                       (6, 6, 3))
    ours, ref = make(r), make(r)
    dist.all_reduce(ours, group=rf)
    dist.all_reduce(ref, group=gloo)
    want = sum(make(i).to_dense() for i in range(n))
    check("sparse all_reduce", ours.to_dense(), want)
    check("sparse all_reduce vs gloo", ours.to_dense(), ref.to_dense())
    work = dist.all_reduce(make(r), group=rf, async_op=True)
    check("sparse all_reduce async", work.get_future().wait()[0].to_dense(), want)


BITWISE = {dist.ReduceOp.BAND: torch.bitwise_and, dist.ReduceOp.BOR: torch.bitwise_or,
           dist.ReduceOp.BXOR: torch.bitwise_xor}


def bitwise_cases(rf, gloo, r, n):
    """BAND / BOR / BXOR on integer tensors: exact, so equal to the oracle and to gloo bitwise."""
    for op, fn in BITWISE.items():
        for dtype in (torch.uint8, torch.int32, torch.int64):
            for numel in (0, 1, n - 1, 4099):
                xs = [torch.randint(0, 256, (numel,), generator=torch.Generator().manual_seed(
                      numel * 10 + i)).to(dtype) for i in range(n)]
                want = xs[0].clone()
                for x in xs[1:]:
                    want = fn(want, x)
                ours, ref = both(lambda g: _ar(xs[r].clone(), op, g), rf, gloo)
                check(f"all_reduce {op} {dtype} {numel}", ours, want)
                check(f"all_reduce {op} {dtype} {numel} vs gloo", ours, ref)


def _ar(t, op, group):
    dist.all_reduce(t, op=op, group=group)
    return t


def async_and_futures(rf, r, n):
    xs = [rank_input(i, (64,), integral=True) for i in range(n)]
    t = xs[r].clone()
    work = dist.all_reduce(t, async_op=True, group=rf)
    got = work.get_future().wait()
    assert isinstance(got, list) and got[0] is t, f"the future must yield [tensor], got {got}"
    assert work.is_completed() and work.wait()
    check("async all_reduce", t, sum(xs))
    chained = dist.all_reduce(xs[r].clone(), async_op=True, group=rf).get_future().then(
        lambda f: f.value()[0] * 2)
    check("future.then", chained.wait(), sum(xs) * 2)
    t1 = [xs[r].clone() for _ in range(4)]
    works = [dist.all_reduce(x, async_op=True, group=rf) for x in t1]
    for w in works:
        w.wait()
    for x in t1:
        check("four async all_reduce in flight", x, sum(xs))
    inline_works(rf, xs, r)


def inline_works(rf, xs, r):
    """Calls with asyncOp False run inline: allreduce returns None (torch's verbs take it as done),
    the others a finished Work whose future is built when asked."""
    opts, t = dist.AllreduceOptions(), xs[r].clone()
    opts.asyncOp = False
    assert rf.allreduce([t], opts) is None
    check("inline allreduce", t, sum(xs))
    bopts, b = dist.BroadcastOptions(), xs[r].clone()
    bopts.asyncOp = False
    work = rf.broadcast([b], bopts)
    assert work.is_completed() and work.is_success() and work.exception() is None
    got = work.get_future().wait()
    assert got[0] is b and work.result()[0] is b, got
    check("inline broadcast", b, xs[0])


def gather_family(rf, gloo, r, n):
    for numel in (0, 1, 7, 3001):
        xs = [rank_input(i, (numel,), seed=numel) for i in range(n)]
        outs = both(lambda g: _all_gather(xs[r], g, n), rf, gloo)
        check(f"all_gather {numel}", outs[0], torch.stack(xs))
        check(f"all_gather {numel} vs gloo", outs[0], outs[1])
        flat = torch.empty(numel * n)
        dist.all_gather_into_tensor(flat, xs[r], group=rf)
        check(f"all_gather_into_tensor {numel}", flat, torch.cat(xs))
        check("functional all_gather_tensor", fc.wait_tensor(fc.all_gather_tensor(xs[r], 0, rf)),
              torch.cat(xs))
    b = [rank_input(i, (5,), torch.bool) != 0 for i in range(n)]
    out = [torch.empty(5, dtype=torch.bool) for _ in range(n)]
    dist.all_gather(out, b[r], group=rf)
    check("all_gather bool", torch.stack(out), torch.stack(b))
    shapes = [(3,), (2, 2), (0,)]
    ins = [[rank_input(i, s, seed=k) for k, s in enumerate(shapes)] for i in range(n)]
    outs = [[torch.empty(s) for s in shapes] for _ in range(n)]    # outs[rank][tensor]
    dist.all_gather_coalesced(outs, ins[r], group=rf)
    for j in range(n):
        for k in range(len(shapes)):
            check(f"all_gather_coalesced rank {j} tensor {k}", outs[j][k], ins[j][k])
    objs = [None] * n
    dist.all_gather_object(objs, {"rank": r, "x": [r] * r}, group=rf)
    assert objs == [{"rank": i, "x": [i] * i} for i in range(n)], objs


def _all_gather(x, group, n):
    out = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(out, x, group=group)
    return torch.stack(out)


def reduce_scatter_family(rf, gloo, r, n):
    for m in (0, 1, 5, 1000):
        xs = [rank_input(i, (m * n,), seed=m, integral=True) for i in range(n)]
        want = sum(xs)[r * m:(r + 1) * m]
        out = torch.empty(m)
        dist.reduce_scatter_tensor(out, xs[r].clone(), group=rf)
        check(f"reduce_scatter_tensor {m}", out, want)
        ref = torch.empty(m)
        dist.reduce_scatter_tensor(ref, xs[r].clone(), group=gloo)
        check(f"reduce_scatter_tensor {m} vs gloo", out, ref)
        out2 = torch.empty(m)
        dist.reduce_scatter(out2, list(xs[r].clone().chunk(n)) if m else
                            [torch.empty(0) for _ in range(n)], group=rf)
        check(f"reduce_scatter list {m}", out2, want)
        if m:
            check("functional reduce_scatter_tensor",
                  fc.wait_tensor(fc.reduce_scatter_tensor(xs[r].clone(), "sum", 0, rf)), want)
            check("functional all_reduce",
                  fc.wait_tensor(fc.all_reduce(xs[r].clone(), "sum", rf)), sum(xs))


def rooted(rf, gloo, r, n):
    for root in range(n):
        xs = [rank_input(i, (33,), seed=root, integral=True) for i in range(n)]
        t = xs[r].clone()
        dist.broadcast(t, src=root, group=rf)
        check(f"broadcast root {root}", t, xs[root])
        t = xs[r].clone()
        dist.reduce(t, dst=root, group=rf)
        if r == root:
            check(f"reduce root {root}", t, sum(xs))
        gl = [torch.empty(33) for _ in range(n)] if r == root else None
        dist.gather(xs[r], gl, dst=root, group=rf)
        if r == root:
            check(f"gather root {root}", torch.stack(gl), torch.stack(xs))
        parts = [rank_input(root, (4,), seed=100 + i) for i in range(n)]
        out = torch.empty(4)
        dist.scatter(out, parts if r == root else None, src=root, group=rf)
        check(f"scatter root {root}", out, parts[r])
        obj = [{"root": root} if r == root else None]
        dist.broadcast_object_list(obj, src=root, group=rf)
        assert obj == [{"root": root}], obj


def all_to_all_family(rf, gloo, r, n):
    xs = [rank_input(i, (n * 6, 2), seed=7) for i in range(n)]
    out, ref = torch.empty(n * 6, 2), torch.empty(n * 6, 2)
    dist.all_to_all_single(out, xs[r], group=rf)
    dist.all_to_all_single(ref, xs[r], group=gloo)
    want = torch.cat([x.chunk(n)[r] for x in xs])
    check("all_to_all_single", out, want)
    check("all_to_all_single vs gloo", out, ref)
    sizes = [[(i + j) % 3 for j in range(n)] for i in range(n)]      # rank i sends sizes[i][j]
    ins = [rank_input(i, (sum(sizes[i]), 3), seed=8) for i in range(n)]
    recv = [sizes[j][r] for j in range(n)]
    out = torch.empty(sum(recv), 3)
    dist.all_to_all_single(out, ins[r], recv, sizes[r], group=rf)
    want = torch.cat([ins[j].split(sizes[j])[r] for j in range(n)])
    check("all_to_all_single uneven", out, want)
    outs = [torch.empty(recv[j], 3) for j in range(n)]
    dist.all_to_all(outs, list(ins[r].split(sizes[r])), group=rf)
    check("all_to_all list", torch.cat(outs), want)


def point_to_point(rf, r, n):
    nxt, prv = (r + 1) % n, (r - 1) % n
    big = 3 << 20                            # 12 MiB: more than one shared-memory ring holds
    for numel in (1, 1000, big):
        mine = rank_input(r, (numel,), seed=numel)
        got = torch.empty(numel)
        if r % 2 == 0:
            dist.send(mine, nxt, group=rf)
            dist.recv(got, prv, group=rf)
        else:
            dist.recv(got, prv, group=rf)
            dist.send(mine, nxt, group=rf)
        check(f"send/recv {numel}", got, rank_input(prv, (numel,), seed=numel))
    for tag in (0, 5):
        got = torch.empty(10)
        works = dist.batch_isend_irecv([dist.P2POp(dist.isend, torch.full((10,), r + tag * 1.0), nxt,
                                                   tag=tag),
                                        dist.P2POp(dist.irecv, got, prv, tag=tag)])
        for w in works:
            w.wait()
        check(f"batch_isend_irecv tag {tag}", got, torch.full((10,), prv + tag * 1.0))


def subgroups(rf, r, n):
    groups = [dist.new_group(sorted({0, n - 1})), dist.new_group(list(range(n)))]
    sub, full = groups
    x = torch.full((3,), r + 1.0)
    if r in (0, n - 1):
        dist.all_reduce(x, group=sub)
        check("new_group([0, n-1])", x, torch.full((3,), 1.0 + n if n > 1 else 1.0))
        assert dist.get_backend(sub) == "ringflow"
    y = torch.full((2,), float(r))
    dist.all_reduce(y, group=full)
    check("new_group(all ranks)", y, torch.full((2,), n * (n - 1) / 2))
    for g in dist.new_subgroups(group_size=1)[1]:
        t = torch.ones(1)
        if dist.get_rank() in dist.get_process_group_ranks(g):
            dist.all_reduce(t, group=g)
            check("new_subgroups of one", t, torch.ones(1))


def main():
    rf, gloo = join("ringflow")
    r, n = dist.get_rank(), dist.get_world_size()
    assert dist.get_backend() == "ringflow", dist.get_backend()
    all_reduce_cases(rf, gloo, r, n)
    bitwise_cases(rf, gloo, r, n)
    sparse_cases(rf, gloo, r, n)
    async_and_futures(rf, r, n)
    gather_family(rf, gloo, r, n)
    reduce_scatter_family(rf, gloo, r, n)
    rooted(rf, gloo, r, n)
    all_to_all_family(rf, gloo, r, n)
    if n > 1:
        point_to_point(rf, r, n)
        check_any_source(rf, gloo, r, n)
    else:
        try:
            dist.recv(torch.empty(1))
            raise AssertionError("a recv from any source in a world of one returned")
        except ValueError as e:
            assert "no other rank" in str(e), e
    subgroups(rf, r, n)
    dist.barrier()
    transport = rf.comm.transport.name
    dist.destroy_process_group()
    print(f"VERBS OK rank {r} world={n} launcher={launcher_name()} transport={transport}",
          flush=True)


if __name__ == "__main__":
    main()
