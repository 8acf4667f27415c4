"""Checkpoints: atomic save by every rank, verified load, fallback, pruning, no pickled code."""
import json
import os
import pickle
import warnings

import pytest
import torch

from ringflow.train import checkpoint as ckpt
from ringflow.collectives.threads import run_ranks


def _save_steps(root, steps, keep_last=3, world=2):
    """Every rank saves its shard and rank 0 the weights, at each step; returns rank 0's folders."""
    def body(comm):
        out = []
        for s in steps:
            shard = {"step": s, "m": torch.full((3,), float(comm.rank))}
            files = {f"optim.rank{comm.rank}.pt": shard}
            if comm.rank == 0:
                files["model.safetensors"] = {"w": torch.arange(4.0) + s, "v": torch.ones(2)[:1]}
                files["state.json"] = {"step": s}
            out.append(ckpt.save(root, s, comm, files, keep_last=keep_last))
        return out
    return run_ranks(world, body)[0]


def test_save_writes_every_rank_and_a_manifest(tmp_path):
    folder = _save_steps(tmp_path, [5])[0]
    assert folder.name == "step-00000005"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["MANIFEST.json", "model.safetensors", "optim.rank0.pt", "optim.rank1.pt",
                     "state.json"]
    assert set(json.loads((folder / "MANIFEST.json").read_text())) == set(names) - {"MANIFEST.json"}
    ckpt.verify(folder)
    assert torch.equal(ckpt.read(folder, "model.safetensors")["w"], torch.arange(4.0) + 5)
    assert torch.equal(ckpt.read(folder, "optim.rank1.pt")["m"], torch.ones(3))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_keeps_the_last_k(tmp_path):
    _save_steps(tmp_path, [1, 2, 3, 4], keep_last=2)
    assert [p.name for p in ckpt.list_steps(tmp_path)] == ["step-00000004", "step-00000003"]


def _latest_on_both_ranks(root):
    return run_ranks(2, lambda comm: ckpt.find_latest(root, comm))


def test_corrupt_or_partial_checkpoints_fall_back_with_a_warning(tmp_path):
    f1, f2, f3 = _save_steps(tmp_path, [1, 2, 3])
    data = bytearray((f3 / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF                                  # one flipped bit in the newest weights
    (f3 / "model.safetensors").write_bytes(bytes(data))
    (f2 / "MANIFEST.json").unlink()                   # a save that died before publishing
    (tmp_path / ".tmp-step-00000004").mkdir()         # and one that died mid-write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = _latest_on_both_ranks(tmp_path)
    assert found == [f1, f1]                          # the same answer on every rank
    text = " ".join(str(w.message) for w in caught)
    assert "does not match its checksum" in text and "no MANIFEST.json" in text


def test_missing_file_is_reported(tmp_path):
    folder = _save_steps(tmp_path, [7])[0]
    os.remove(folder / "optim.rank1.pt")
    with pytest.raises(ckpt.CheckpointError, match="optim.rank1.pt is missing"):
        ckpt.verify(folder)
    assert _latest_on_both_ranks(tmp_path) == [None, None]


class Payload:
    """Unpickling this would run code: loading must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_loading_never_unpickles_code(tmp_path):
    (tmp_path / "optim.pt").write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(pickle.UnpicklingError):
        ckpt.read(tmp_path, "optim.pt")


def test_resaving_a_step_replaces_it(tmp_path):
    _save_steps(tmp_path, [3], world=1)
    folder = _save_steps(tmp_path, [3], world=1)[0]
    ckpt.verify(folder)
    assert len(ckpt.list_steps(tmp_path)) == 1


def test_an_only_corrupt_checkpoint_is_not_a_fallback(tmp_path):
    (folder,) = _save_steps(tmp_path, [4])
    (folder / "MANIFEST.json").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ckpt.newest_valid(tmp_path) is None
    (text,) = [str(w.message) for w in caught]
    assert "step-00000004: no MANIFEST.json" in text and "none is left" in text, text
    assert "falling back" not in text
    rejected = []                                 # a caller that reports the reasons itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ckpt.newest_valid(tmp_path, rejected) is None
    assert len(rejected) == 1 and "no MANIFEST.json (partial checkpoint)" in rejected[0]
