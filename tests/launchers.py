"""Run a worker script under torchrun or mpirun with a hard timeout (a hang fails the test fast).

    _, out = run_torchrun(3, "tests/collectives/conformance_worker.py", timeout=120)

The worker asserts and exits non-zero on failure; its output comes back in the error.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra: dict | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    env.update(extra or {})
    return env


def run_cmd(cmd: list[str], timeout: float, env: dict | None = None, check: bool = True):
    """Run ``cmd``; on timeout kill the whole process group and fail with its output."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        raise AssertionError(f"timed out after {timeout}s (hang?): {' '.join(cmd)}\n{out[-6000:]}")
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {' '.join(cmd)}\n{out[-6000:]}")
    return proc.returncode, out


def run_torchrun(nproc: int, script: str, *args: str, timeout: float = 120, env: dict | None = None,
                 check: bool = True, extra: tuple[str, ...] = ()):
    """The torch transport unless ``env`` names one (auto would pick shm on this one node)."""
    env = {"RINGFLOW_TRANSPORT": "torch", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *extra, script, *args]
    return run_cmd(cmd, timeout, env, check)


def _find_mpirun() -> str | None:
    exe = shutil.which("mpirun") or str(Path(sys.executable).parent / "mpirun")
    return exe if Path(exe).exists() else None


def mpi_missing() -> str | None:
    """Why tests marked ``mpi`` cannot run here, with what to install; None when they can."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py not installed: install the 'mpi' extra (pip install -e '.[mpi]')"
    if _find_mpirun() is None:
        return "mpirun not found: install the 'mpi' extra (pip install -e '.[mpi]')"
    return None


def mpirun_path() -> str:
    exe = _find_mpirun()
    if exe is None:
        raise AssertionError("mpirun not found: install the 'mpi' extra (pip install -e '.[mpi]')")
    return exe


def run_mpirun(nproc: int, script: str, *args: str, timeout: float = 120, env: dict | None = None,
               check: bool = True):
    cmd = [mpirun_path(), "--allow-run-as-root", "--oversubscribe", "-np", str(nproc),
           sys.executable, script, *args]
    return run_cmd(cmd, timeout, env, check)
