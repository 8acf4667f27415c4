"""An emulated cluster on one machine: H hosts (network namespaces, every link shaped with tc tbf),
one torchrun agent per host (static rendezvous), ``ringflow-bench`` inside; rank 0's table here.

    python benchmarks/cluster/cluster.py --hosts 2 --ranks-per-host 1 --rate 2gbit \\
        -b 1M -e 64M --algorithm auto,ring
    python benchmarks/cluster/cluster.py --hosts 2 --ranks-per-host 2 --collective all \\
        --algorithm all -b 4K -e 256K -c 1 -n 2 -w 1
    python benchmarks/cluster/cluster.py --cleanup      # namespaces left by a run killed with -9

Flags it does not know go to ringflow-bench unchanged (-b -e -c --collective --algorithm --json
--plot ...: rank 0 writes the files, in this working directory);
``--link-rate`` is set from ``--rate`` so the table has a busbw/link column. Needs root and
iproute2: without them it says why and exits 2. Namespaces and links are removed on every exit
path (Ctrl-C and SIGTERM included); a run that outlives ``--timeout`` is killed and fails.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ringflow.bench import args as bench_cli, hosts

PORT = 29500                 # inside fresh namespaces every port is free
GRACE = 20.0                 # seconds the other agents get once one has failed


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="ringflow-bench across H emulated hosts (network namespaces, tbf-shaped "
                    "links, torchrun multi-node). Unknown flags go to ringflow-bench.",
        allow_abbrev=False)     # an abbreviation must not swallow one of ringflow-bench's flags
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--ranks-per-host", type=int, default=1)
    p.add_argument("--rate", default="2gbit", help="every link's rate, tc's units (2gbit)")
    p.add_argument("--burst", default=hosts.BURST, help="tbf bucket")
    p.add_argument("--latency", default=hosts.LATENCY, help="tbf queue bound")
    p.add_argument("--mtu", type=int, help="every link's MTU (default: the veth's 1500; 9000: "
                   "jumbo frames, whose headers cost 0.7 %% of the rate instead of 4.4 %%)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds the run may take before its agents are killed")
    p.add_argument("--script", metavar="FILE.py",
                   help="run this torchrun program on the hosts instead of ringflow-bench (the "
                        "unknown flags go to it), e.g. benchmarks/collectives/pipeline_sweep.py")
    p.add_argument("--prefix", default=hosts.PREFIX,
                   help="namespace names start with this (default %(default)s), so that "
                        "engineers sharing a machine tell their runs apart")
    p.add_argument("--cleanup", action="store_true",
                   help="only remove namespaces left by runs that no longer exist")
    return p


def parse(argv=None) -> tuple[argparse.Namespace, list[str]]:
    parser = build_parser()
    a, bench = parser.parse_known_args(argv)
    if a.hosts < 2 or a.ranks_per_host < 1:
        parser.error(f"--hosts must be >= 2 and --ranks-per-host >= 1, got {a.hosts} and "
                     f"{a.ranks_per_host}")
    try:
        hosts.parse_rate(a.rate)
    except ValueError as e:
        parser.error(f"--rate: {e}")
    try:
        hosts.check_prefix(a.prefix)
    except ValueError as e:
        parser.error(f"--prefix: {e}")
    if a.mtu is not None and not 68 <= a.mtu <= 65535:
        parser.error(f"--mtu must be 68..65535 bytes, got {a.mtu}")
    if a.script is None:
        bench_cli.parse(["--link-rate", a.rate, *bench])  # a bad flag fails here, not on H hosts
    elif not Path(a.script).is_file():
        parser.error(f"--script {a.script}: no such file")
    return a, bench


def torchrun(net, a, host: int, port: int, argv: list[str]) -> list[str]:
    """Host ``host``'s agent: static rendezvous at host 0's address, gloo on its own link."""
    return net.command(host, [
        sys.executable, "-m", "torch.distributed.run", f"--nnodes={a.hosts}",
        f"--nproc_per_node={a.ranks_per_host}", f"--node_rank={host}",
        f"--master_addr={net.addr[0]}", f"--master_port={port}", f"--local_addr={net.addr[host]}",
        *(["-m", "ringflow.bench", "--link-rate", a.rate] if a.script is None else [a.script]),
        *argv])


def start(net, a, port: int, argv: list[str], logdir: Path) -> list[subprocess.Popen]:
    """One agent per host, each in its own process group; host 0's stdout (rank 0's table)
    to ``out0.log``, everything else to the logs."""
    procs = []
    for h in range(a.hosts):
        env = {**os.environ, **net.env(h), "PYTHONUNBUFFERED": "1"}
        env.setdefault("OMP_NUM_THREADS", "1")
        out = open(logdir / f"out{h}.log", "w")
        err = open(logdir / f"err{h}.log", "w")
        procs.append(subprocess.Popen(torchrun(net, a, h, port, argv), env=env, stdout=out,
                                      stderr=err, start_new_session=True))
        out.close()
        err.close()
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each agent's group (torchrun passes it to its workers), SIGKILL after 5 s.
    Workers run in sessions of their own: what survives dies with the namespaces."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        live = [p for p in procs if p.poll() is None]
        for p in live:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(p.poll() is None for p in live) and time.monotonic() < deadline:
            time.sleep(0.1)


class Echo:
    """Copy what a log gains to our stdout (rank 0's rows as they come)."""

    def __init__(self, path: Path):
        self.path, self.pos = path, 0

    def __call__(self) -> None:
        with open(self.path) as f:
            f.seek(self.pos)
            text = f.read()
        self.pos += len(text.encode())
        sys.stdout.write(text)
        sys.stdout.flush()


def wait(procs: list[subprocess.Popen], seconds: float, echo: Echo) -> str | None:
    """Wait for every agent; None when all exit 0, else why not (agents killed on a timeout,
    or once one failed and the others outlive GRACE)."""
    deadline, failed = time.monotonic() + seconds, None
    while any(p.poll() is None for p in procs):
        echo()
        now = time.monotonic()
        bad = [h for h, p in enumerate(procs) if p.poll() not in (None, 0)]
        if bad and failed is None:
            failed = now
        if now > deadline or (failed is not None and now - failed > GRACE):
            stop(procs)
            echo()
            return (f"host {bad[0]}'s agent failed and the others were killed {GRACE:.0f}s later"
                    if bad else f"the run took more than {seconds:.0f}s (--timeout): killed")
        time.sleep(0.2)
    echo()
    bad = [(h, p.returncode) for h, p in enumerate(procs) if p.returncode]
    return None if not bad else ", ".join(f"host {h}'s agent exited {rc}" for h, rc in bad)


def tails(logdir: Path, lines: int = 30) -> str:
    parts = []
    for log in sorted(logdir.glob("*.log")):
        text = log.read_text().splitlines()[-lines:]
        if text:
            parts.append(f"--- {log.name} ---\n" + "\n".join(text))
    return "\n".join(parts)


def run(a, bench: list[str]) -> str | None:
    """One launch on fresh hosts; None or why it failed (with the logs' tails)."""
    with hosts.Hosts(a.hosts, a.rate, a.burst, a.latency, a.mtu, a.prefix) as net, \
            tempfile.TemporaryDirectory(prefix="ringflow-cluster-") as tmp:
        print(f"# cluster: {net.describe()}; {a.ranks_per_host} rank(s) per host", flush=True)
        logdir = Path(tmp)
        procs = start(net, a, PORT, bench, logdir)
        try:
            why = wait(procs, a.timeout, Echo(logdir / "out0.log"))
        finally:
            stop(procs)
        return f"{why}\n{tails(logdir)}" if why else None


def main(argv=None) -> None:
    a, bench = parse(argv)
    if a.cleanup:
        print(f"removed: {' '.join(hosts.cleanup(a.prefix)) or 'nothing'}")
        return
    why = hosts.available()
    if why is not None:
        fail(2, f"cannot make the emulated hosts: {why}")
    try:
        why = run(a, bench)
    except KeyboardInterrupt:
        fail(130, "interrupted; hosts removed")
    except hosts.HostsError as e:            # an ip/tc command refused: what was made is gone
        fail(2, f"cannot make the emulated hosts: {e}")
    if why:
        fail(1, why)


def fail(status: int, why: str) -> None:
    print(f"cluster: {why}", file=sys.stderr, flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
