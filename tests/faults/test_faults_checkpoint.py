"""Checkpoint faults: a kill mid-save, truncated or corrupted files, another model's checkpoint."""
from __future__ import annotations

import os
import signal
import warnings

import pytest
import torch

from ringflow.collectives.communicator import Communicator
from ringflow.train import checkpoint as ckpt
from ringflow.train import config
from ringflow.train.resume import check_config
from ringflow.transport.local import LocalTransport


def _files(step: int) -> dict:
    return {"model.safetensors": {"w": torch.full((64, 64), float(step))},
            "optim.pt": {"step": step, "m": torch.ones(8) * step},
            "state.json": {"step": step}}


@pytest.fixture
def comm():
    c = Communicator(LocalTransport.group(1)[0], timeout=5)
    yield c
    c.close()


def _load(folder) -> float:
    ckpt.verify(folder)
    return float(ckpt.read(folder, "model.safetensors")["w"][0, 0])


def _save_then_die(root, where: str) -> None:
    """In a forked child: save step 2 and SIGKILL itself at ``where`` (no cleanup can run)."""
    comm = Communicator(LocalTransport.group(1)[0], timeout=5)
    real_write = ckpt.write_synced

    def write(path, data):
        if where == "mid-file":               # half of the first file reaches the disk
            real_write(path, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(path, data)

    def rename(a, b):                         # manifest written, folder not yet published
        os.kill(os.getpid(), signal.SIGKILL)
    ckpt.write_synced = write
    if where == "before-rename":
        ckpt.os.rename = rename
    ckpt.save(root, 2, comm, _files(2))
    os._exit(0)                               # not reached


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["mid-file", "before-rename"])
def test_kill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path, comm, where):
    ckpt.save(tmp_path, 1, comm, _files(1))
    pid = os.fork()                           # a child that dies like kill -9, without an import
    if pid == 0:
        try:
            _save_then_die(tmp_path, where)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert [p.name for p in ckpt.list_steps(tmp_path)] == ["step-00000001"]
    assert (tmp_path / ".tmp-step-00000002").exists()          # the debris is never listed
    assert _load(ckpt.newest_valid(tmp_path)) == 1.0
    ckpt.save(tmp_path, 2, comm, _files(2))                    # and the next save cleans it up
    assert not (tmp_path / ".tmp-step-00000002").exists() and _load(ckpt.newest_valid(tmp_path)) == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "delete a file", "drop manifest"])
def test_damaged_checkpoint_is_detected_and_skipped(tmp_path, comm, damage):
    for step in (1, 2):
        ckpt.save(tmp_path, step, comm, _files(step))
    newest = ckpt.step_dir(tmp_path, 2)
    target = newest / "model.safetensors"
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) - 100])
    elif damage == "flip a byte":
        target.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    elif damage == "delete a file":
        (newest / "optim.pt").unlink()
    else:
        (newest / ckpt.MANIFEST).unlink()
    words = {"truncate": "does not match its checksum", "flip a byte": "does not match its checksum",
             "delete a file": "optim.pt is missing", "drop manifest": "partial checkpoint"}[damage]
    with pytest.raises(ckpt.CheckpointError, match=words):
        ckpt.verify(newest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = ckpt.find_latest(tmp_path, comm)
    assert found == ckpt.step_dir(tmp_path, 1) and _load(found) == 1.0
    assert any("falling back" in str(w.message) for w in caught)


def test_checkpoint_of_another_model_config_is_refused_with_the_diff(tmp_path, comm):
    trained = config.parse(["--model", "dit", "--data", "digits", "--out", str(tmp_path)])
    ckpt.save(tmp_path, 1, comm, {"state.json": {"step": 1, "config": config.to_dict(trained)}})
    other = config.parse(["--model", "unet", "--data", "digits", "--out", str(tmp_path),
                          "--steps", "50"])
    with pytest.raises(ckpt.CheckpointError) as info:
        check_config(ckpt.step_dir(tmp_path, 1), other)
    msg = str(info.value)
    assert "model: checkpoint has 'dit', this run has 'unet'" in msg, msg
    assert "steps" not in msg                       # changing the step budget is a resume
    check_config(ckpt.step_dir(tmp_path, 1), config.parse(
        ["--model", "dit", "--data", "digits", "--out", str(tmp_path), "--steps", "50"]))
