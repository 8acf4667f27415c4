"""dist.recv / dist.irecv without src on backend "ringflow", each case run the same way on a gloo
group of the same ranks: the same senders and contents come out (sorted where the arrival order
is free), every message is taken exactly once, and none crosses between groups. Run inside
verbs_worker.py (every launcher and transport it covers, n >= 2).

    check_any_source(rf, gloo, rank, world_size)

A message's values are (sender + 1) * 100 + its index, so a receive knows what it should hold
from the rank it reports.
"""
from __future__ import annotations

import torch
import torch.distributed as dist



def msg(sender: int, index: int, numel: int = 6) -> torch.Tensor:
    return torch.full((numel,), float((sender + 1) * 100 + index))


def from_each(g, r: int, n: int) -> list[tuple[int, float]]:
    """torch's own test: each rank in turn takes 2 (n - 1) messages from any source, one
    half with recv, the other with irecv; (sender, value) in arrival order on the receiver."""
    got = []
    for receiver in range(n):
        if receiver != r:
            dist.send(msg(r, 0), receiver, group=g)
            dist.send(msg(r, 1), receiver, group=g)
            continue
        for i in range(2 * (n - 1)):
            t = torch.empty(6)
            if i % 2 == 0:
                src = dist.recv(t, group=g)
            else:
                work = dist.irecv(t, group=g)
                work.wait()
                src = dist.get_global_rank(g, work._source_rank())
            assert t.eq(t[0]).all() and int(t[0]) // 100 == src + 1, (src, t)
            got.append((src, float(t[0])))
    return got


def ordered(g, r: int, n: int) -> list[tuple[int, float]]:
    """Rank 0 posts a receive from rank 1, then any-source receives: rank 1's messages keep their
    order (MPI's non-overtaking rule); the named receive takes rank 1's first."""
    if r == 0:
        named = torch.empty(6)
        works = [dist.irecv(named, 1, group=g)]
        anys = [torch.empty(6) for _ in range(n - 1)]
        works += [dist.irecv(t, group=g) for t in anys]
        for w in works:
            w.wait()
        assert float(named[0]) == 200.0, named         # rank 1's first message
        srcs = [w._source_rank() for w in works[1:]]
        out = [(s, float(t[0])) for s, t in zip(srcs, anys)]
        assert all(int(v) // 100 == s + 1 for s, v in out), out
        return [(1, float(named[0]))] + sorted(out)
    if r == 1:
        dist.send(msg(1, 0), 0, group=g)
        dist.send(msg(1, 1), 0, group=g)
    else:
        dist.send(msg(r, 0), 0, group=g)
    return []


def by_tag(g, r: int, n: int) -> list[tuple[int, float]]:
    """Rank 1 sends tag 0 then tag 5; rank 0 asks for tag 5 from any source first: it gets the
    second message, and the first stays for the receive of tag 0."""
    if r == 1:            # isend: gloo's send waits for its receive, which comes second
        works = [dist.isend(msg(1, 0), 0, group=g, tag=0), dist.isend(msg(1, 1), 0, group=g, tag=5)]
        for w in works:
            w.wait()
    if r != 0:
        return []
    five, zero = torch.empty(6), torch.empty(6)
    src = dist.recv(five, group=g, tag=5)
    dist.recv(zero, 1, group=g, tag=0)
    return [(src, float(five[0])), (1, float(zero[0]))]


def early(g, gloo, r: int, n: int) -> list[tuple[int, float]]:
    """The message may be there before its receive is posted (rank 1 sent before a barrier)."""
    if r == 1:
        work = dist.isend(msg(1, 7), 0, group=g)
    dist.barrier(group=gloo)
    if r == 1:
        work.wait()
    if r != 0:
        return []
    t = torch.empty(6)
    return [(dist.recv(t, group=g), float(t[0]))]


def empty(g, r: int) -> None:
    """An empty message names its sender too (ringflow sends a token; gloo refuses an empty
    any-source receive: "offset < this->size", so this case is ringflow's alone)."""
    if r == 1:
        dist.send(torch.empty(0), 0, group=g)
    elif r == 0:
        assert dist.recv(torch.empty(0), group=g) == 1


def groups_apart(g, pair, r: int, n: int) -> list[tuple[int, float]]:
    """The last rank sends on ``pair`` (ranks 0 and n-1) and rank 1 on the whole group, same tag:
    rank 0's any-source receive on ``pair`` gets the pair's message, never the other."""
    if r == n - 1:
        dist.send(msg(r, 3), 0, group=pair)
    if r == 1:
        dist.send(msg(1, 4), 0, group=g)
    if r != 0:
        return []
    a, b = torch.empty(6), torch.empty(6)
    got = [(dist.recv(a, group=pair), float(a[0]))]
    got.append((dist.recv(b, group=g), float(b[0])))
    return got


def cases(g, gloo, pair, r: int, n: int) -> dict:
    """Each case alone: a barrier after it, so that no case's any-source receive may take
    the next case's message (which would be right, but not what the case checks)."""
    runs = {"from_each": lambda: sorted(from_each(g, r, n)), "ordered": lambda: ordered(g, r, n),
            "by_tag": lambda: by_tag(g, r, n), "early": lambda: early(g, gloo, r, n)}
    if n > 2:
        runs["groups_apart"] = lambda: groups_apart(g, pair, r, n)
    out = {}
    for name, run in runs.items():
        out[name] = run()
        dist.barrier(group=gloo)
    return out


def check_any_source(rf, gloo, r: int, n: int) -> None:
    """Every case on ringflow's group and on gloo's: the same (sender, value) lists."""
    pair_rf = dist.new_group([0, n - 1])
    pair_gloo = dist.new_group([0, n - 1], backend="gloo")
    ours = cases(rf, gloo, pair_rf, r, n)
    ref = cases(gloo, gloo, pair_gloo, r, n)
    empty(rf, r)
    assert ours == ref, f"rank {r}: ringflow {ours} != gloo {ref}"
    if r == 0:
        assert len(ours["from_each"]) == 2 * (n - 1), ours
