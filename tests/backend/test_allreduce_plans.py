"""The process group's all_reduce plans (backend/plans.py): a kind of tensor seen before skips
the checks and choices of its first call, and still gets every error and every result the
general path gives (ranks as threads, the group's methods called as torch's wrapper calls them)."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.distributed as dist

from ringflow import collectives as rc
from ringflow.backend.process_group import RingflowProcessGroup
from ringflow.collectives import costmodel
from ringflow.collectives.threads import run_ranks


def _opts(op=dist.ReduceOp.SUM, async_op=False) -> dist.AllreduceOptions:
    opts = dist.AllreduceOptions()
    opts.reduceOp, opts.asyncOp = op, async_op
    return opts


def _on_groups(body):
    """``body(pg, rank)`` on 2 thread-ranks, each with its own RingflowProcessGroup."""
    return run_ranks(2, lambda comm: body(RingflowProcessGroup(comm, "plans"), comm.rank),
                     timeout=20.0)


@pytest.fixture
def planned(monkeypatch):
    """Counts the kinds resolved (rc.all_reduce_plan calls), across both ranks."""
    made = []
    real = rc.all_reduce_plan

    def counting(comm, tensor, op, algorithm="auto"):
        made.append((tensor.numel(), tensor.dtype, op))
        return real(comm, tensor, op, algorithm)
    monkeypatch.setattr(rc, "all_reduce_plan", counting)
    return made


@pytest.mark.timeout(60)
def test_a_kind_is_resolved_once_and_every_call_reduces(planned):
    def body(pg, r):
        outs = []
        for i in range(3):
            t = torch.full((8,), float(r + i))
            assert pg.allreduce([t], _opts()) is None      # inline: torch's "done"
            outs.append(t.clone())
        m = torch.arange(6.0).reshape(2, 3) * (r + 1)       # 2-D: reduced through a flat view
        pg.allreduce([m], _opts(dist.ReduceOp.MAX))
        return outs, m
    for outs, m in _on_groups(body):
        assert [o[0].item() for o in outs] == [1.0, 3.0, 5.0]
        assert torch.equal(m, torch.arange(6.0).reshape(2, 3) * 2)
    # (8, float32, SUM) and (6, float32, MAX), each once per rank
    assert sorted(set(planned), key=str) == sorted({(8, torch.float32, rc.ReduceOp.SUM),
                                                    (6, torch.float32, rc.ReduceOp.MAX)}, key=str)
    assert len(planned) == 4


@pytest.mark.timeout(60)
def test_a_planned_kind_still_refuses_what_the_general_path_refuses(planned):
    def body(pg, r):
        pg.allreduce([torch.ones(8)], _opts())                 # plans (8, float32, SUM)
        strided = torch.ones(16)[::2]                           # same numel and dtype, a view
        with pytest.raises(ValueError, match="must be contiguous"):
            pg.allreduce([strided], _opts())
        for _ in range(2):                                      # never planned: refused each time
            with pytest.raises(TypeError, match="integer dtype"):
                pg.allreduce([torch.ones(8)], _opts(dist.ReduceOp.BAND))
        with pytest.raises(ValueError, match="one tensor per rank"):
            pg.allreduce([torch.ones(8), torch.ones(8)], _opts())
        bits = torch.tensor([6, 3], dtype=torch.int32) << r
        pg.allreduce([bits], _opts(dist.ReduceOp.BAND))
        return bits
    for bits in _on_groups(body):
        assert bits.tolist() == [6 & 12, 3 & 6]


@pytest.mark.timeout(60)
def test_tensors_a_plan_does_not_cover_take_the_general_path(planned):
    def body(pg, r):
        pg.allreduce([torch.ones(4)], _opts())                   # plans (4, float32, SUM)
        leaf = torch.ones(4, requires_grad=True)                 # reduced in place, detached
        pg.allreduce([leaf], _opts())
        z = torch.full((2,), complex(1, r))                      # as (re, im) pairs
        pg.allreduce([z], _opts())
        return leaf.detach(), z
    for leaf, z in _on_groups(body):
        assert torch.equal(leaf, torch.full((4,), 2.0))
        assert torch.equal(z, torch.full((2,), complex(2, 1)))
    assert planned == [(4, torch.float32, rc.ReduceOp.SUM)] * 2


@pytest.mark.timeout(60)
def test_an_async_call_on_a_plan_yields_its_tensors_and_a_new_tune_expires_plans(planned):
    both = threading.Barrier(2)

    def body(pg, r):
        t = torch.full((5,), float(r))
        for _ in range(2):
            work = pg.allreduce([t], _opts(async_op=True))
            assert work.get_future().wait() == [t]
        if both.wait() == 0:
            costmodel.generation += 1                          # what a new tune does (forget())
        both.wait()
        pg.allreduce([t], _opts())
        return t
    generation = costmodel.generation
    try:
        for t in _on_groups(body):
            assert torch.equal(t, torch.full((5,), 4.0))       # (0 + 1), then doubled twice
    finally:
        costmodel.generation = generation
    assert len(planned) == 4                                   # per rank: first call, after the tune
