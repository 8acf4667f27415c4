"""Faults in the data: a NaN on one rank, and ranks with different numbers of batches."""
from __future__ import annotations

import pytest
import torch

from ringflow.parallel.guards import all_finite, even_batches
from ringflow.collectives.threads import run_ranks

T = 2.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_on_one_rank_is_seen_by_all_and_all_skip_the_same_step(bad):
    """Rank 2's gradient goes bad at step 3 only: every rank skips step 3 and no other."""
    def body(comm):
        w = torch.zeros(5)
        skipped = []
        for step in range(6):
            grad = torch.full((5,), 0.1 * (comm.rank + 1))
            if comm.rank == 2 and step == 3:
                grad[1] = bad
            if all_finite([grad, None], group=comm):
                w -= grad           # (a real loop all-reduces the gradient first)
            else:
                skipped.append(step)
        return skipped, w
    outs = run_ranks(3, body, timeout=T, outcomes=True)
    assert all(o.error is None for o in outs), [o.error for o in outs]
    assert [o.value[0] for o in outs] == [[3]] * 3
    assert all(torch.isfinite(o.value[1]).all() for o in outs)


@pytest.mark.timeout(60)
def test_all_finite_ignores_integer_and_empty_tensors_and_refuses_junk():
    def body(comm):
        ok = all_finite([torch.ones(0), torch.arange(3), torch.ones(2)], group=comm)
        with pytest.raises(TypeError, match="takes tensors"):
            all_finite([1.0], group=comm)
        return ok
    assert [o.value for o in run_ranks(2, body, timeout=T, outcomes=True)] == [True, True]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sized", [True, False])
def test_uneven_inputs_end_the_epoch_together_without_a_hang(sized):
    """Ranks hold 5, 3 and 7 batches; each step all-reduces (a DataParallel backward would)."""
    from ringflow import collectives as rc

    def body(comm):
        mine = [torch.full((4,), float(i)) for i in (5, 3, 7)[comm.rank] * [1]]
        source = mine if sized else iter(mine)
        steps = 0
        for _ in range(2):                      # two epochs: the guard leaves nothing behind
            for batch in even_batches(source if sized else iter(mine), group=comm):
                rc.all_reduce(batch.clone(), group=comm)
                steps += 1
        return steps
    outs = run_ranks(3, body, timeout=T, outcomes=True)
    assert [o.error for o in outs] == [None] * 3
    assert [o.value for o in outs] == [6, 6, 6]          # 3 (the shortest) per epoch, on all
    assert max(o.seconds for o in outs) < T
