"""Atomic, verified checkpoints that every rank writes and reads together.

A checkpoint is a folder ``OUT/checkpoints/step-00000100/``:

    model.safetensors  ema.safetensors      weights (rank 0)
    optim.pt | optim.rank{r}.pt             optimizer: consolidated, or one ZeRO shard per rank
    rng.rank{r}.pt                          every rank's RNG states
    state.json                              step, sampler position, world size, config (rank 0)
    MANIFEST.json                           sha256 of every file above, written last

Writing: every rank writes its files into ``.tmp-step-...`` (each file fsynced), a barrier,
rank 0 checksums them into MANIFEST.json, renames the folder into place, fsyncs the parent and
prunes to the last K, another barrier. A crash leaves a ``.tmp-`` folder, never a half
checkpoint. Reading: rank 0 verifies the newest checkpoint against its manifest, goes on to
older ones if it fails (saying why each was rejected), and broadcasts the chosen step. ``.pt``
files are loaded with ``weights_only=True``: loading never runs pickled code.

    ckpt.save(run / "checkpoints", step, comm, files={"model.safetensors": sd, ...}, keep_last=3)
    found = ckpt.find_latest(run / "checkpoints", comm)     # Path | None, same on every rank
    tensors = ckpt.read_tensors(found / "model.safetensors")
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import collectives as rc

MANIFEST = "MANIFEST.json"
PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (missing file, checksum mismatch, wrong world size)."""


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"{PREFIX}{step:08d}"


def encode(name: str, value) -> bytes:
    """A checkpoint file's bytes: tensor dicts as safetensors, .json as JSON, else torch.save."""
    if name.endswith(".safetensors"):
        # clone: safetensors refuses tensors that share storage (views, tied weights)
        return st_save({k: v.detach().to("cpu", copy=True).contiguous() for k, v in value.items()})
    if name.endswith(".json"):
        return json.dumps(value, indent=1, sort_keys=True).encode()
    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


def write_synced(path: Path, data: bytes) -> None:
    """Write and fsync, so a rename after it never publishes a file the disk has not seen."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(root, step: int, comm, files: dict, keep_last: int = 3) -> Path:
    """Collective: every rank passes the files it owns ({name: value}); returns the folder.

    Names ending .safetensors take {str: Tensor}, .json a JSON-able value, anything else
    (.pt) a structure of tensors and plain Python values for ``torch.save``.
    """
    root, final = Path(root), step_dir(root, step)
    tmp = root / f".tmp-{final.name}"
    if comm.rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)      # left by a crash mid-save
        tmp.mkdir()
    rc.barrier(group=comm)
    for name, value in files.items():
        write_synced(tmp / name, encode(name, value))
    rc.barrier(group=comm)
    if comm.rank == 0:
        _publish(tmp, final)
        prune(root, keep_last)
    rc.barrier(group=comm)
    return final


def _publish(tmp: Path, final: Path) -> None:
    sums = {p.name: sha256(p) for p in sorted(tmp.iterdir())}
    write_synced(tmp / MANIFEST, json.dumps(sums, indent=1, sort_keys=True).encode())
    fsync_dir(tmp)
    if final.exists():                              # re-saving the same step replaces it
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(final.parent)


def list_steps(root) -> list[Path]:
    """Published checkpoint folders, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]), reverse=True)


def prune(root, keep_last: int) -> None:
    for old in list_steps(root)[max(keep_last, 1):]:
        shutil.rmtree(old, ignore_errors=True)


def verify(folder: Path) -> None:
    """Raise CheckpointError unless every file in the manifest is present with its checksum."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST} (partial checkpoint)")
    try:
        sums = json.loads(manifest.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{folder}: {MANIFEST} is not valid JSON ({e})") from None
    for name, digest in sums.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{folder}: {name} is missing")
        if sha256(path) != digest:
            raise CheckpointError(f"{folder}: {name} does not match its checksum (corrupt)")


def newest_valid(root, rejected: list | None = None) -> Path | None:
    """The newest checkpoint that verifies (None: none does).

    Why each newer one was rejected is appended to ``rejected`` when the caller passes a list
    (and reports it); otherwise it is a warning that says what was used instead, if anything.
    """
    reasons = []
    for folder in list_steps(root):
        try:
            verify(folder)
            break
        except CheckpointError as e:
            reasons.append(str(e))
    else:
        folder = None
    if rejected is not None:
        rejected.extend(reasons)
    elif reasons:
        instead = f"falling back to the older {folder.name}" if folder else "none is left"
        warnings.warn(f"rejected checkpoint(s) in {root}: " + "; ".join(reasons) +
                      f"; {instead}", stacklevel=2)
    return folder


def find_latest(root, comm, rejected: list | None = None) -> Path | None:
    """Collective: rank 0 picks the newest valid checkpoint, every rank gets the same answer
    (``rejected``: see ``newest_valid``; filled on rank 0 only)."""
    step = -1
    if comm.rank == 0:
        found = newest_valid(root, rejected)
        step = -1 if found is None else int(found.name[len(PREFIX):])
    step = torch.tensor([step], dtype=torch.int64, device=comm.device)   # NCCL moves GPU tensors
    rc.broadcast(step, src=0, group=comm)
    step = int(step.item())
    return None if step < 0 else step_dir(root, step)


def read(folder: Path, name: str):
    """One file of a checkpoint: tensors, JSON, or a weights_only torch.load."""
    path = Path(folder) / name
    if not path.is_file():
        raise CheckpointError(f"{folder}: {name} is missing (was it written by another world "
                              "size or --parallel mode?)")
    if name.endswith(".safetensors"):
        return st_load(path.read_bytes())
    if name.endswith(".json"):
        return json.loads(path.read_text())
    return torch.load(path, map_location="cpu", weights_only=True)
