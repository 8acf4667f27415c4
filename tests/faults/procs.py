"""Start ranks as forked processes (no agent that would tear survivors down) and read their reports.

torchrun and mpirun SIGTERM every rank as soon as one dies, so they cannot show that a
survivor raises on its own; these "bare" ranks get torchrun's variables and nothing else.
They are forked from the (torch-importing) caller and run the worker script with runpy,
so a launch costs no interpreter start-up (seconds each on a loaded 2-core box).

    outs = launch_bare(3, ["tests/faults/faults_worker.py", "--fault", "kill:2:1", ...])
"""
from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.launchers import ROOT, free_port


def _child(rank: int, nproc: int, port: int, args: list[str], env: dict, log: str) -> None:
    """Become rank ``rank``: output to ``log``, torchrun's variables, run the script; never return."""
    code = 1
    try:
        os.setsid()                                   # its own group: killable as a whole
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        # the parent's sys.stdout/stderr may be a test runner's capture objects, not fds 1 and 2
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank),
                           "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
        for name, value in env.items():               # None: leave the variable unset
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        import torch
        torch.set_num_threads(1)                      # never touch the parent's thread pool
        os.chdir(ROOT)
        sys.argv = list(args)
        runpy.run_path(args[0], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported in the rank's log
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def launch_bare(nproc: int, args: list[str], env: dict | None = None,
                timeout: float = 90) -> list[tuple[int, str]]:
    """Run script ``args[0]`` (argv ``args``) as ranks 0..nproc-1 of one torch world.

    ``env`` adds variables (None unsets one); the transport is torch unless it names one. Returns [(exit code, or -signal if killed; output)]
    per rank. A rank still running after
    ``timeout`` is a hang: every rank is killed and the test fails with their output.
    """
    port, pids, logs = free_port(), [], []
    folder = tempfile.mkdtemp(prefix="rf-bare-")
    for rank in range(nproc):
        logs.append(os.path.join(folder, f"rank{rank}.log"))
        pid = os.fork()
        if pid == 0:
            _child(rank, nproc, port, args, {"RINGFLOW_TRANSPORT": "torch", **(env or {})},
                   logs[-1])
        pids.append(pid)
    codes = _reap(pids, time.monotonic() + timeout)
    outs = [Path(log).read_text() if os.path.exists(log) else "" for log in logs]
    if None in codes:
        raise AssertionError(f"a rank hung: still running {timeout}s after launch\n"
                             + "\n----\n".join(o[-3000:] for o in outs))
    return list(zip(codes, outs))


def _reap(pids: list[int], deadline: float) -> list[int | None]:
    codes: list[int | None] = [None] * len(pids)
    while None in codes and time.monotonic() < deadline:
        for i, pid in enumerate(pids):
            if codes[i] is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[i] = os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    for i, pid in enumerate(pids):
        if codes[i] is None:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return codes


def reports(folder: Path) -> dict[int, dict]:
    """rank -> the JSON a faults_worker rank wrote (status, time, checksum)."""
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in Path(folder).glob("rank*.json")}
