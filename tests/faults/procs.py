"""Start ranks as plain processes (no agent that would tear survivors down) and read their reports.

torchrun and mpirun SIGTERM every rank as soon as one dies, so they cannot show that a
survivor raises on its own; these "bare" ranks get torchrun's variables and nothing else.

    outs = launch_bare(3, ["tests/workers/faults_worker.py", "--fault", "kill:2:1", ...])
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.launchers import ROOT, _env, free_port


def launch_bare(nproc: int, args: list[str], env: dict | None = None,
                timeout: float = 90) -> list[tuple[int, str]]:
    """Run ``python args...`` as ranks 0..nproc-1 of one torch world; [(exit code, output)]."""
    port, procs, logs = free_port(), [], []
    for rank in range(nproc):
        log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"rf-bare-{port}-{rank}.log", "w+")
        extra = {"RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank),
                 "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port), **(env or {})}
        procs.append(subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(extra),
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
        logs.append(log)
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        raise AssertionError(f"a rank hung: still running {timeout}s after launch\n"
                             + _read(logs)) from None
    outs = []
    for p, log in zip(procs, logs):
        log.seek(0)
        outs.append((p.returncode, log.read()))
        log.close()
        os.unlink(log.name)
    return outs


def _read(logs) -> str:
    text = []
    for log in logs:
        log.seek(0)
        text.append(log.read()[-3000:])
    return "\n----\n".join(text)


def reports(folder: Path) -> dict[int, dict]:
    """rank -> the JSON a faults_worker rank wrote (status, time, checksum)."""
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in Path(folder).glob("rank*.json")}
