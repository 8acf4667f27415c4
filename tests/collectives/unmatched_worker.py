"""Worker: one unmatched-collective case on a real launcher; each rank prints its outcome.

Run by tests/collectives/test_unmatched_launched.py:
    torchrun --nproc_per_node=2 tests/collectives/unmatched_worker.py extra 64
    mpirun -np 2 python tests/collectives/unmatched_worker.py extra 64
"""
import json
import sys

import ringflow
from tests.collectives.unmatched_cases import run_case


def main() -> None:
    case, numel = sys.argv[1], int(sys.argv[2])
    algorithm = sys.argv[3] if len(sys.argv) > 3 else "auto"
    comm = ringflow.init()
    out = run_case(case, comm, numel, algorithm)
    out["transport"] = comm.transport.name
    print("RESULT " + json.dumps(out), flush=True)
    try:
        ringflow.shutdown()
    except Exception as e:                      # noqa: BLE001 - reported, the outcome stands
        print(f"RESULT-SHUTDOWN {type(e).__name__}: {e}", flush=True)


if __name__ == "__main__":
    main()
