"""End to end on CPU with 2 processes: torchrun, mpirun, a resume across launchers, a rank that
dies under ``torchrun --max-restarts``, and sharded evaluation of the result.

One torchrun run of 6 steps is the reference; the other runs must reproduce its weights bit
for bit (same world size, per-rank seeds, sampler position and RNG states restored).
"""
import json

import pytest
import torch

from ringflow.train import checkpoint as ckpt
from tests.launchers import run_mpirun, run_torchrun

TINY = ("--preset", "tiny", "--steps", "6")
pytestmark = pytest.mark.launched


def _train_torchrun(out, *flags):
    return run_torchrun(2, "ringflow.train", *TINY, "--out", str(out), *flags, timeout=240,
                        extra=("-m",))[1]


def _weights(out):
    folder = ckpt.step_dir(out / "checkpoints", 6)
    return [ckpt.read(folder, f) for f in ("model.safetensors", "ema.safetensors")]


def _assert_same_weights(a, b):
    for x, y in zip(_weights(a), _weights(b)):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), f"{k} differs"


def _steps_logged(out):
    return [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    log = _train_torchrun(out)
    return out, log


@pytest.mark.timeout(300)
def test_torchrun_two_ranks_trains_and_only_rank0_speaks(reference):
    out, log = reference
    assert _steps_logged(out) == [2, 4, 6]
    assert log.count("done: 6 steps") == 1            # rank 1 printed nothing
    assert "rng.rank1.pt" in {p.name for p in ckpt.step_dir(out / "checkpoints", 6).iterdir()}
    assert (out / "samples" / "final.png").is_file() and (out / "loss.png").is_file()


@pytest.mark.mpi
@pytest.mark.timeout(400)
def test_mpirun_then_torchrun_resume_is_bitwise(reference, tmp_path):
    run_mpirun(2, "-m", "ringflow.train", *TINY, "--steps", "3", "--out", str(tmp_path),
               timeout=240)
    assert json.loads((tmp_path / "checkpoints" / "step-00000003" / "state.json").read_text()
                      )["world_size"] == 2
    log = _train_torchrun(tmp_path, "--resume")
    assert "resumed from" in log and "step-00000003" in log
    _assert_same_weights(reference[0], tmp_path)
    assert _steps_logged(tmp_path) == [2, 3, 4, 6]


@pytest.mark.timeout(400)
def test_killed_rank_restarts_and_resumes_without_lost_or_repeated_steps(reference, tmp_path):
    # rank 1 dies abruptly in step 5 (after the checkpoint of step 3 and the log line of step 4)
    _, log = run_torchrun(2, "tests/train/crash_worker.py", *TINY, "--out", str(tmp_path),
                          timeout=300, env={"CRASH_AT": "5"}, extra=("--max-restarts=1",))
    assert "(exitcode: 17)" in log
    assert "resumed from" in log and "step-00000003" in log
    _assert_same_weights(reference[0], tmp_path)
    assert _steps_logged(tmp_path) == [2, 4, 6]      # step 4's line from the dead attempt dropped


@pytest.mark.timeout(300)
def test_evaluate_writes_metrics(reference, tmp_path, monkeypatch):
    from ringflow.train import evaluate
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path))
    out = tmp_path / "eval.json"
    rc = evaluate.main([str(reference[0]), "--num-samples", "40", "--sample-steps", "3",
                        "--classifier-epochs", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert rc == 0 and result["checkpoint"] == "step-00000006" and result["num_samples"] == 40
    assert {"fd", "kid", "accuracy"} <= set(result) and 0 <= result["accuracy"] <= 1
    assert (reference[0] / "samples" / "eval.png").is_file()
