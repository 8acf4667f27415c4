"""The emulated cluster (benchmarks/cluster/cluster.py over ringflow.bench.hosts).

Without namespaces: ``available()`` names the reason and the CLI prints it and exits 2.
With them: 2 hosts x 2 ranks on a 2 Gbit/s tbf link run every verb with every algorithm that
applies, results checked exactly (-c 1); neither a finished run nor SIGINT/SIGTERM mid-run
(3 hosts: the bridge) leaves a namespace or a process behind.
"""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ringflow.bench import hosts
from ringflow.collectives import select
from tests.launchers import ROOT, _env

CLI = ROOT / "benchmarks" / "cluster" / "cluster.py"
# not run by --algorithm all: the oracle, the builtin's own row, half-precision only; and
# staged needs every rank on one node
NOT_ACROSS_HOSTS = ("naive", "native", "fp32acc", "staged")
EXTRA = {"all_to_all": {"pairwise"}, "sendrecv": {"p2p"}}      # verbs outside select's registry


def load_cli():
    spec = importlib.util.spec_from_file_location("cluster_cli", CLI)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_available_says_not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "not root" in hosts.available()


def test_available_says_which_tool_is_missing(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(hosts.shutil, "which", lambda tool: None if tool == "tc" else "/bin/ip")
    assert "'tc' is not installed (apt-get install -y iproute2)" == hosts.available()


def test_cli_prints_the_reason_and_exits_2_without_namespaces(monkeypatch, capsys):
    cli = load_cli()
    monkeypatch.setattr(cli.hosts, "available", lambda: "not root: the reason")
    with pytest.raises(SystemExit) as e:
        cli.main(["--hosts", "2", "-b", "4K", "-e", "4K"])
    assert e.value.code == 2
    assert "cannot make the emulated hosts: not root: the reason" in capsys.readouterr().err


def test_cli_rejects_bad_flags_before_making_hosts(capsys):
    with pytest.raises(SystemExit):
        load_cli().parse(["--rate", "fast"])
    with pytest.raises(SystemExit):
        load_cli().parse(["--collective", "scan"])      # ringflow-bench's own check
    assert "error" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_cli().parse(["--mtu", "20"])
    assert "--mtu must be 68..65535" in capsys.readouterr().err


def test_a_prefix_names_the_namespaces_and_a_bad_one_is_refused(capsys):
    """--prefix keeps engineers' runs on one machine apart (their names, their cleanup)."""
    pid = os.getpid()
    assert hosts.Hosts(2, prefix="k14d").ns == [f"k14d{pid}h0", f"k14d{pid}h1"]   # nothing made yet
    assert hosts.name_pattern("k14d").match("k14d123h1").group(1) == "123"
    assert hosts.name_pattern("k14d").match("rfc123h1") is None
    for bad in ("", "9x", "k1", "K14d", "toolongname", "a-b"):
        with pytest.raises(ValueError, match="prefix"):
            hosts.Hosts(2, prefix=bad)
    with pytest.raises(SystemExit):
        load_cli().parse(["--prefix", "k1"])
    assert "--prefix" in capsys.readouterr().err


def test_rates_are_tc_units():
    assert hosts.parse_rate("2gbit") == 2e9 and hosts.parse_rate("500mbit") == 5e8
    for bad in ("2gb", "fast", "-1gbit", "0gbit"):
        with pytest.raises(ValueError):
            hosts.parse_rate(bad)


def need_netns() -> None:
    why = hosts.available()
    if why is not None:
        pytest.skip(f"network namespaces cannot be made here: {why}")


def namespaces_of(pid: int) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    return [n for n in names if (m := hosts.NAME.match(n)) and int(m.group(1)) == pid]


def processes_naming(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (left-over agents or ranks)."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_text():
                out.append(int(entry.name))
        except OSError:
            pass
    return out


def start_cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CLI), *args], cwd=ROOT, env=_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, seconds: float) -> str:
    """Its output; on a hang SIGTERM (its cleanup path), then SIGKILL, and fail."""
    try:
        return proc.communicate(timeout=seconds)[0]
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out = proc.communicate()[0]
        raise AssertionError(f"cluster.py hung for {seconds}s\n{out[-6000:]}")


def table(out: str):
    """(collective, label, [#wrong out-of-place, #wrong in-place]) of every printed row."""
    collective = None
    for line in out.splitlines():
        if m := re.match(r"# ringflow-bench (\w+):", line):
            collective = m.group(1)
        elif re.match(r" +\d+ ", line):
            cells, wrong = line.split()[6:], []
            for _ in ("oop", "ip"):             # 4 cells a mode, or a lone n/a
                wrong += [] if cells[0] == "n/a" else [cells[3]]
                cells = cells[1:] if cells[0] == "n/a" else cells[4:]
            yield collective, line.split()[5], wrong


@pytest.mark.netns
@pytest.mark.launched
@pytest.mark.timeout(300)
def test_two_hosts_two_ranks_every_verb_and_algorithm_exact_on_a_shaped_link(tmp_path):
    need_netns()
    proc = start_cli("--hosts", "2", "--ranks-per-host", "2", "--rate", "2gbit",
                     "--collective", "all", "--algorithm", "all", "-b", "4K", "-e", "256K",
                     "-f", "8", "-n", "2", "-w", "1", "-c", "1", "--timeout", "240",
                     env={"RINGFLOW_CACHE": str(tmp_path)})
    out = finish(proc, 270)
    assert proc.returncode == 0, out[-6000:]
    assert namespaces_of(proc.pid) == []
    rows = list(table(out))
    assert rows and all(w == ["0"] * len(w) and w for _, _, w in rows), out[-6000:]
    for verb in ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce",
                 "all_to_all", "sendrecv"):
        want = EXTRA.get(verb) or {a for a in select.ALGORITHMS[verb] if a not in NOT_ACROSS_HOSTS}
        if verb != "sendrecv":
            want |= {"builtin:gloo"}
        labels = [label for c, label, _ in rows if c == verb]
        assert {label: labels.count(label) for label in labels} == dict.fromkeys(want, 3), verb
    assert "busbw/link" in out and "2 rank(s) per host" in out


@pytest.mark.netns
@pytest.mark.launched
@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig,status,running", [(signal.SIGINT, 130, 7), (signal.SIGTERM, 143, 1)])
def test_a_signal_mid_run_leaves_no_namespace_and_no_process(sig, status, running, tmp_path):
    """SIGINT once 3 agents and 3 ranks run inside (7 with the CLI); SIGTERM at once."""
    need_netns()
    marker = str(tmp_path / "marker.json")          # in the command line of the CLI, agents, ranks
    proc = start_cli("--hosts", "3", "-b", "1M", "-e", "1M", "-n", "100000", "--json", marker,
                     env={"RINGFLOW_CACHE": str(tmp_path)})
    assert proc.stdout.readline().startswith("# cluster: 3 hosts")    # the bridge case
    assert len(namespaces_of(proc.pid)) == 4
    deadline = time.monotonic() + 120
    while len(processes_naming(marker)) < running and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    out = finish(proc, 60)
    assert proc.returncode == status, out[-3000:]
    assert namespaces_of(proc.pid) == [] and processes_naming(marker) == []


@pytest.mark.netns
def test_cleanup_removes_what_a_killed_run_left_and_kills_what_runs_inside():
    need_netns()
    gone = subprocess.Popen(["true"])
    gone.wait()                                     # a pid that no longer runs
    left = [f"{hosts.PREFIX}{gone.pid}h0", f"{hosts.PREFIX}{gone.pid}sw"]
    for ns in left:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    inside = subprocess.Popen(["ip", "netns", "exec", left[0], "sleep", "300"])
    try:
        with hosts.Hosts(2):                # a live run's namespaces stay
            assert sorted(hosts.cleanup()) == sorted(left)
            assert len(namespaces_of(os.getpid())) == 2
        assert inside.wait(timeout=10) == -signal.SIGKILL
        assert namespaces_of(gone.pid) == [] and namespaces_of(os.getpid()) == []
    finally:
        for ns in left:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        inside.kill()


@pytest.mark.netns
def test_cleanup_under_a_prefix_leaves_other_prefixes_alone():
    need_netns()
    gone = subprocess.Popen(["true"])
    gone.wait()
    mine, other = f"tst{gone.pid}h0", f"{hosts.PREFIX}{gone.pid}h0"
    try:
        for ns in (mine, other):
            subprocess.run(["ip", "netns", "add", ns], check=True)
        assert hosts.cleanup("tst") == [mine]
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert mine not in names.split() and other in names.split()
    finally:
        for ns in (mine, other):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
