"""ringflow.train (ZeRO or fsdp) that also saves the optimizer's gathered (consolidated) state: beside every
checkpoint (``gathered-step-N.pt``) and right after resuming (``resumed.pt``), in --out.

    torchrun --nproc_per_node=2 tests/train/zero_worker.py --parallel zero2 --out X
    install(monkeypatch.setattr)      # the same in this process, for a world of one
"""
import sys
from pathlib import Path

import torch

from ringflow.train import loop


def _save_gathered(run, name: str) -> None:
    # a collective: every rank calls, rank 0 saves (fsdp: by parameter name)
    state = run.model.optim_state_dict(run.opt) if run.cfg.parallel == "fsdp" else \
        run.opt.state_dict()
    if run.comm.rank == 0:
        torch.save(state, Path(run.cfg.out) / name)


def install(setattr_=setattr) -> None:
    build_run, save_checkpoint = loop.build_run, loop.save_checkpoint

    def build_and_dump(*args, **kwargs):
        run = build_run(*args, **kwargs)
        if run.step:                      # resumed
            _save_gathered(run, "resumed.pt")
        return run

    def save_and_dump(run):
        save_checkpoint(run)
        _save_gathered(run, f"gathered-step-{run.step}.pt")
    setattr_(loop, "build_run", build_and_dump)
    setattr_(loop, "save_checkpoint", save_and_dump)


if __name__ == "__main__":
    install()
    sys.exit(loop.main(sys.argv[1:]))
