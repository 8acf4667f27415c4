"""A world of one in this process: training, stopping and resuming is bitwise the same as not
stopping, for every --parallel strategy; plus the pieces resume relies on."""
import json

import pytest
import torch

from ringflow.parallel.sampler import ShardedBatches
from ringflow.train import checkpoint as ckpt
from ringflow.train import loop
from ringflow.train.ema import EMA

TINY = ["--preset", "tiny", "--steps", "6"]


def _weights(out, step=6):
    folder = ckpt.step_dir(out / "checkpoints", step)
    return [ckpt.read(folder, f) for f in ("model.safetensors", "ema.safetensors")]


def _same(a, b):
    return all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
               for x, y in zip(a, b))


@pytest.mark.parametrize("parallel", ["ddp", "zero2", "fsdp", "torch-ddp-hook"])
def test_stop_and_resume_is_bitwise(tmp_path, parallel):
    flags = TINY + ["--parallel", parallel, "--grad-accum", "2"]
    assert loop.main(flags + ["--out", str(tmp_path / "whole")]) == 0
    assert loop.main(flags + ["--out", str(tmp_path / "split"), "--steps", "4"]) == 0
    assert loop.main(flags + ["--out", str(tmp_path / "split"), "--resume"]) == 0
    assert _same(_weights(tmp_path / "whole"), _weights(tmp_path / "split"))
    rows = [json.loads(r) for r in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]    # step 4 logged once, nothing repeated


def test_run_folder_holds_what_a_user_looks_for(tmp_path):
    assert loop.main(TINY + ["--out", str(tmp_path)]) == 0
    for name in ("config.json", "metrics.jsonl", "loss.png", "samples/final.png"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "config.json").read_text())["steps"] == 6
    assert [p.name for p in ckpt.list_steps(tmp_path / "checkpoints")] == \
        ["step-00000006", "step-00000003"]
    state = ckpt.read(ckpt.step_dir(tmp_path / "checkpoints", 6), "state.json")
    assert state["step"] == 6 and state["sampler"] == {"epoch": 0, "batch": 6}


def test_sampler_gives_ranks_disjoint_slices_of_one_global_batch():
    ranks = [ShardedBatches(100, 24, r, 4, seed=3) for r in range(4)]
    single = ShardedBatches(100, 24, 0, 1, seed=3)
    for _ in range(9):                                # crosses two epoch boundaries
        parts = [b.next() for b in ranks]
        assert torch.equal(torch.cat(parts), single.next())
        assert len(set(torch.cat(parts).tolist())) == 24
    again = ShardedBatches(100, 24, 2, 4, seed=3)
    again.load_state_dict(ranks[2].state_dict())
    assert torch.equal(again.next(), ranks[2].next())


def test_ema_warms_up_then_tracks():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.9)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(200):
        ema.update(net)
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.model.weight, torch.ones(1, 2))
    assert not ema.model.weight.requires_grad


def test_non_finite_gradient_skips_that_update_and_training_goes_on(tmp_path, monkeypatch):
    calls, real_build = {"n": 0}, loop.build_run

    def build_run(*args, **kwargs):               # poison the 3rd backward's gradient
        run = real_build(*args, **kwargs)

        def poison(grad):
            calls["n"] += 1
            return grad * float("nan") if calls["n"] == 3 else grad
        next(run.net.parameters()).register_hook(poison)
        return run

    monkeypatch.setattr(loop, "build_run", build_run)
    assert loop.main(TINY + ["--out", str(tmp_path)]) == 0
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["skipped_steps"] for r in rows) == 1
    assert all(torch.isfinite(t).all() for w in _weights(tmp_path) for t in w.values())
    assert all(r["loss"] == r["loss"] for r in rows)     # no NaN reached the log


def _poison_loss_from(monkeypatch, first_bad: int):
    """From the ``first_bad``-th loss on, every loss (so every gradient) is NaN."""
    calls, real_build = {"n": 0}, loop.build_run

    def build_run(*args, **kwargs):
        run = real_build(*args, **kwargs)
        real_loss = run.objective.loss

        def loss(*a, **kw):
            calls["n"] += 1
            value = real_loss(*a, **kw)
            return value * float("nan") if calls["n"] >= first_bad else value
        run.objective.loss = loss                  # LossModule calls it through the instance
        return run
    monkeypatch.setattr(loop, "build_run", build_run)


def test_non_finite_loss_steps_in_a_row_stop_the_run_with_the_reason(tmp_path, monkeypatch,
                                                                     capsys):
    _poison_loss_from(monkeypatch, 3)
    rc = loop.main(TINY + ["--steps", "20", "--max-nonfinite-steps", "4", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "ringflow.train: error: stopped at step 6: the loss was not finite for 4 steps in a " \
           "row (steps 3-6" in err, err
    assert "the last finite loss was " in err and " at step 2 " in err, err
    assert "--max-nonfinite-steps" in err and "Traceback" not in err
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["skipped_steps"], "loss" in r) for r in rows] == \
        [(2, 0, True), (4, 2, False)]               # a window of skipped steps logs no loss


def test_a_shorter_non_finite_streak_only_skips(tmp_path, monkeypatch):
    _poison_loss_from(monkeypatch, 3)              # steps 3-6 of 6: one short of the limit
    assert loop.main(TINY + ["--max-nonfinite-steps", "5", "--out", str(tmp_path)]) == 0
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["skipped_steps"] for r in rows) == 4


def _corrupt(folder):
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))


def test_an_only_corrupt_checkpoint_starts_over_and_says_so(tmp_path, capsys):
    assert loop.main(TINY + ["--steps", "3", "--out", str(tmp_path)]) == 0
    _corrupt(ckpt.step_dir(tmp_path / "checkpoints", 3))
    capsys.readouterr()
    assert loop.main(TINY + ["--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"ringflow.train: no valid checkpoint in {tmp_path / 'checkpoints'}, starting from " \
           "step 0\n  rejected " in err, err
    assert "step-00000003: model.safetensors does not match its checksum (corrupt)" in err
    assert "falling back" not in err and "resumed from" not in err
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]          # the first attempt's log restarted
    # --resume must has nothing to load: an error with the same reasons, not a fresh start
    _corrupt(ckpt.step_dir(tmp_path / "checkpoints", 6))
    _corrupt(ckpt.step_dir(tmp_path / "checkpoints", 3))
    assert loop.main(TINY + ["--resume", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ringflow.train: error: --resume must: no valid checkpoint in" in err
    assert err.count("does not match its checksum") == 2, err
