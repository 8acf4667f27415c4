"""Two hosts: two torchrun agents (2 nodes x 2 ranks) in two network namespaces joined by a veth
pair; they train and all-reduce correctly, and pulling the link gives the timeout error, no hang.

Without namespaces (not root, no iproute2) the same two agents run over loopback instead.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.faults import netns
from tests.launchers import ROOT, _env, free_port

T = 3
WORKER = "tests/faults/twohost_worker.py"
pytestmark = [pytest.mark.launched, pytest.mark.netns]


def _agents(node_cmd, envs, logs):
    procs = []
    for host in (0, 1):
        procs.append(subprocess.Popen(node_cmd(host), cwd=ROOT, env=_env(envs[host]),
                                      stdout=logs[host], stderr=subprocess.STDOUT,
                                      start_new_session=True))
    return procs


def _torchrun(host: int, master: str, port: int, local: str | None, *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2",
           f"--node_rank={host}", f"--master_addr={master}", f"--master_port={port}"]
    return cmd + ([f"--local_addr={local}"] if local else []) + [WORKER, *args]


def _wait(procs, logs, seconds: float, until=None) -> str:
    """Wait for every agent to exit (or ``until(text)``); kill all and fail on a hang."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = "".join(open(log.name).read() for log in logs)
        if (until and until(text)) or all(p.poll() is not None for p in procs):
            return text
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, 9)
    raise AssertionError(f"hang: agents still running after {seconds}s\n{text[-4000:]}")


@pytest.mark.timeout(240)
def test_two_hosts_train_then_a_cut_link_times_out_on_every_rank(tmp_path):
    why = netns.available()
    logs = [open(tmp_path / f"host{h}.log", "w") for h in (0, 1)]
    env = {"RINGFLOW_TIMEOUT": str(T), "OMP_NUM_THREADS": "1"}
    if why is not None:                      # loopback: two agents, no cable to pull
        port = free_port()
        procs = _agents(lambda h: _torchrun(h, "127.0.0.1", port, None), [env, env], logs)
        text = _wait(procs, logs, 150)
        assert text.count("TWOHOST OK") == 4 and all(p.returncode == 0 for p in procs), text[-3000:]
        pytest.skip(f"two agents passed on loopback; network namespaces unavailable: {why}")
    with netns.TwoHosts() as net:
        port = 29400 + os.getpid() % 500     # inside fresh namespaces every port is free
        procs = _agents(lambda h: net.command(h, _torchrun(h, net.addr[0], port, net.addr[h],
                                                           "--wait-cut")),
                        [{**env, **net.env(h)} for h in (0, 1)], logs)
        text = _wait(procs, logs, 150, until=lambda s: s.count("TWOHOST OK") == 4)
        assert text.count("TWOHOST OK") == 4, text[-4000:]
        net.cut()
        cut = time.monotonic()
        text = _wait(procs, logs, 90)
    assert text.count("CUT rank") == 4, text[-4000:]
    assert text.count("CollectiveTimeout") >= 4 and f"timed out after {T:.1f}s" in text
    assert all(p.returncode != 0 for p in procs)
    assert time.monotonic() - cut < 90
    for line in (ln for ln in text.splitlines() if ln.startswith("CUT rank")):
        assert float(line.split(" after ")[1].split("s:")[0]) < T + 6, line
