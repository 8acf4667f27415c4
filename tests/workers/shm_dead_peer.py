"""Worker: the last rank dies (no cleanup) right after setup; the others must fail fast.

    RINGFLOW_TRANSPORT=shm torchrun --nproc_per_node=3 tests/workers/shm_dead_peer.py

The survivors run an all-reduce with a 30 s timeout and must get a CollectiveError
(not a timeout) within a few seconds: the transport notices the dead pid or the
closed transport of a peer that already gave up. Survivors print "DEAD PEER OK <s>".
"""
from __future__ import annotations

import os
import sys
import time

import torch

import ringflow
from ringflow import collectives as rc
from ringflow.collectives import CollectiveError, CollectiveTimeout


def main() -> int:
    comm = ringflow.init(timeout=30)
    print(f"PID {os.getpid()}", flush=True)
    if comm.rank == comm.size - 1:
        os._exit(0)                          # a crash: no atexit, no close, state left "open"
    start = time.monotonic()
    try:
        rc.all_reduce(torch.ones((1 << 20) + 3))
    except CollectiveTimeout as e:
        print(f"rank {comm.rank}: timed out instead of noticing the dead peer: {e}", flush=True)
        return 1
    except CollectiveError as e:
        took = time.monotonic() - start
        ok = took < 10 and ("exited" in str(e.__cause__) or "closed" in str(e.__cause__))
        print(f"{'DEAD PEER OK' if ok else 'DEAD PEER SLOW'} {took:.2f}s rank {comm.rank}: "
              f"{e.__cause__}", flush=True)
        return 0 if ok else 1
    print(f"rank {comm.rank}: all_reduce succeeded without rank {comm.size - 1}?!", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
