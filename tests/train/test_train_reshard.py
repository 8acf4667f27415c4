"""ZeRO (and fsdp) optimizer state written by n ranks, resumed on m: merge_shards in-process (threads),
then the trainer itself, 2 ranks -> 1 and 1 -> 2. After resharding, the optimizer's gathered
state must equal the gathered state of the run that wrote the shards."""
import copy

import pytest
import torch
import torch.nn.functional as F

from ringflow.collectives.threads import run_ranks
from ringflow.parallel import ZeroOptimizer, zero_state
from ringflow.train import loop
from tests.launchers import run_torchrun
from tests.parallel.matrix import batch, make_net
from tests.train import zero_worker

TINY = ["--preset", "tiny"]


def _zero(net, comm):
    """Two param groups (matrices decay, vectors do not): groups must survive resharding."""
    params = list(net.parameters())
    groups = [{"params": [p for p in params if p.dim() > 1]},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    return ZeroOptimizer(groups, torch.optim.AdamW, group=comm, lr=1e-3, weight_decay=0.1)


def assert_same_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys() and a["state"]
    for i, st in a["state"].items():
        assert st.keys() == b["state"][i].keys()
        for k, v in st.items():
            assert torch.equal(v, b["state"][i][k]), (i, k)


def test_shards_of_2_ranks_reshard_onto_1_and_3_ranks():
    def write(comm):
        net = make_net(7)
        opt = _zero(net, comm)
        for step in range(2):
            x, y, t = batch(step, 2 * comm.size)
            rows = slice(2 * comm.rank, 2 * comm.rank + 2)
            F.mse_loss(net(x[rows], y[rows]), t[rows]).backward()
            opt.step()
            opt.zero_grad()
        return copy.deepcopy(opt.sharded_state_dict()), opt.state_dict(), net.state_dict()
    (s0, gathered, weights), (s1, _, _) = run_ranks(2, write)

    def resume(comm):
        net = make_net(0)
        net.load_state_dict(weights)
        opt = _zero(net, comm)
        opt.load_state_dict(zero_state.merge_shards(opt, [s0, s1]))
        return opt.state_dict()
    for m in (1, 3):
        for again in run_ranks(m, resume):
            assert_same_state(again, gathered)

    def out_of_order(comm):
        with pytest.raises(ValueError, match=r"ranks 0..1 of a world of 2 in rank order"):
            zero_state.merge_shards(_zero(make_net(0), comm), [s1, s0])
    run_ranks(1, out_of_order)


def _gathered(out, name):
    return torch.load(out / name, weights_only=True)


def _resume_in_process(monkeypatch, flags, capsys):
    zero_worker.install(monkeypatch.setattr)
    assert loop.main(flags) == 0
    return capsys.readouterr().err


@pytest.mark.launched
@pytest.mark.timeout(400)
def test_trainer_resumes_zero2_of_2_ranks_on_1(tmp_path, monkeypatch, capsys):
    run_torchrun(2, "tests/train/zero_worker.py", *TINY, "--parallel", "zero2", "--steps", "3",
                 "--out", str(tmp_path), timeout=240)
    err = _resume_in_process(monkeypatch, TINY + ["--parallel", "zero2", "--steps", "4",
                                                  "--out", str(tmp_path)], capsys)
    assert "resharded the --parallel zero2 optimizer state of 2 rank(s) in step-00000003 " \
           "onto 1" in err, err
    assert_same_state(_gathered(tmp_path, "resumed.pt"),
                      _gathered(tmp_path, "gathered-step-3.pt"))
    assert (tmp_path / "checkpoints" / "step-00000004").is_dir()      # and training went on


@pytest.mark.launched
@pytest.mark.timeout(400)
def test_trainer_resumes_zero1_of_1_rank_on_2(tmp_path, monkeypatch, capsys):
    _resume_in_process(monkeypatch, TINY + ["--parallel", "zero1", "--steps", "3",
                                            "--out", str(tmp_path)], capsys)
    _, log = run_torchrun(2, "tests/train/zero_worker.py", *TINY, "--parallel", "zero1",
                          "--steps", "4", "--out", str(tmp_path), timeout=240)
    assert "resharded the --parallel zero1 optimizer state of 1 rank(s)" in log, log
    assert_same_state(_gathered(tmp_path, "resumed.pt"),
                      _gathered(tmp_path, "gathered-step-3.pt"))
    assert (tmp_path / "checkpoints" / "step-00000004").is_dir()


@pytest.mark.launched
@pytest.mark.timeout(400)
def test_trainer_resumes_fsdp_of_2_ranks_on_1(tmp_path, monkeypatch, capsys):
    """Fully sharded: model, EMA and optimizer state saved by name, loaded on another world."""
    run_torchrun(2, "tests/train/zero_worker.py", *TINY, "--parallel", "fsdp", "--steps", "3",
                 "--out", str(tmp_path), timeout=240)
    _resume_in_process(monkeypatch, TINY + ["--parallel", "fsdp", "--steps", "4",
                                            "--out", str(tmp_path)], capsys)
    assert_same_state(_gathered(tmp_path, "resumed.pt"),
                      _gathered(tmp_path, "gathered-step-3.pt"))
    assert (tmp_path / "checkpoints" / "step-00000004").is_dir()
