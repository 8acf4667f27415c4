"""ringflow.train, except that rank 1 dies abruptly during step $CRASH_AT of the first attempt.

Under ``torchrun --max-restarts=1`` the job must restart and resume from the last checkpoint.

    CRASH_AT=5 torchrun --nproc_per_node=2 --max-restarts=1 tests/train/crash_worker.py --out X
"""
import os
import sys

import ringflow.train as train

CRASH_AT = int(os.environ["CRASH_AT"])
_step = train.train_step


def dying_step(run, autocast):
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first_attempt and run.comm.rank == 1 and run.step + 1 == CRASH_AT:
        os._exit(17)                        # no cleanup, no goodbye: like a killed process
    return _step(run, autocast)


train.train_step = dying_step
sys.exit(train.main(sys.argv[1:]))
