"""ringflow.train, except that rank 1 dies abruptly during step $CRASH_AT of the first attempt.

Under ``torchrun --max-restarts=1`` the job must restart and resume from the last checkpoint.

    CRASH_AT=5 torchrun --nproc_per_node=2 --max-restarts=1 tests/train/crash_worker.py --out X
"""
import os
import sys

from ringflow.train import loop

CRASH_AT = int(os.environ["CRASH_AT"])
_step = loop.train_step


def dying_step(run, autocast):
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first_attempt and run.comm.rank == 1 and run.step + 1 == CRASH_AT:
        os._exit(17)                        # no cleanup, no goodbye: like a killed process
    return _step(run, autocast)


loop.train_step = dying_step
sys.exit(loop.main(sys.argv[1:]))
