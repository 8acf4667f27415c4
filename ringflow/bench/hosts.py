"""H emulated hosts on one machine: network namespaces joined by a veth pair (two hosts) or through
a bridge (more), every host's link rate-limited both ways with ``tc tbf``.

Everything made lives inside namespaces named ``rfc<pid>h<i>`` (and ``rfc<pid>sw`` for the
bridge; ``Hosts(prefix=)`` replaces ``rfc``): links are created straight into them, so deleting
the namespaces deletes every link, nothing is left in the root namespace, and a killed run's
leftovers are known by their dead pid (``cleanup(prefix)``, which looks at its prefix only).
Addresses are 10.232.<pid % 250 + 1>.<i + 1>/24, apart from tests/faults/netns.py's 10.231.x.y.
Needs root, iproute2 and tc; ``available()`` says why not.
netem (delay, loss) is not in this kernel: the link is emulated by its rate alone (tbf).

    with Hosts(2, rate="2gbit") as net:          # removed on exit, Ctrl-C and SIGTERM included
        subprocess.Popen(net.command(0, ["python", "-m", "torch.distributed.run", ...]),
                         env={**os.environ, **net.env(0)})
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess

PREFIX = "rfc"                  # the default; Hosts(prefix=) keeps one engineer's runs apart


def name_pattern(prefix: str = PREFIX) -> re.Pattern:
    """Namespace names of runs under ``prefix``: group 1 is the run's pid."""
    return re.compile(rf"^{re.escape(prefix)}(\d+)(h\d+|sw|probe)$")


NAME = name_pattern()


def check_prefix(prefix: str) -> None:
    """Refuse a prefix that would not make a namespace name whose pid can be read back."""
    if not re.fullmatch(r"[a-z]([a-z0-9]{0,6}[a-z])?", prefix):
        raise ValueError(f"prefix {prefix!r}: use 1-8 lowercase letters or digits, starting and "
                         "ending with a letter (the run's pid follows it), e.g. rfc or k14d")
RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}   # tc's, SI
# tbf's bucket and queue, as measured in ../shared/MACHINE-FACTS.md ("Emulated hosts")
BURST, LATENCY = "256kb", "50ms"


class HostsError(RuntimeError):
    """An ip or tc command was refused (its own error in the message)."""


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and out.returncode:
        raise HostsError(f"'{' '.join(cmd)}' failed: {out.stderr.strip() or out.returncode}")
    return out


def parse_rate(text: str) -> float:
    """A tc rate ('2gbit', '500mbit', '10gbit') in bits per second."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-z]*)\s*", text.lower())
    if not m or m.group(2) not in RATE_UNITS or not re.fullmatch(r"\d+(\.\d+)?", m.group(1)):
        raise ValueError(f"rate {text!r} is not a number with one of {list(RATE_UNITS)} "
                         "(tc's units, powers of 1000: e.g. 2gbit, 500mbit)")
    rate = float(m.group(1)) * RATE_UNITS[m.group(2)]
    if rate <= 0:
        raise ValueError(f"rate {text!r} must be positive")
    return rate


def available() -> str | None:
    """None if shaped namespaces can be made here, else the reason (with the fix)."""
    if os.geteuid() != 0:
        return "not root: network namespaces and tc need root (run as root, or with sudo)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (apt-get install -y iproute2)"
    probe = f"{PREFIX}{os.getpid()}probe"
    try:
        _run("ip", "netns", "add", probe)
        _run("tc", "-n", probe, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "1gbit",
             "burst", BURST, "latency", LATENCY)
    except (HostsError, OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                     # another user's process: alive
        pass
    return True


def _remove(ns: str) -> None:
    """Kill what still runs inside ``ns`` (it would keep the namespace alive), then delete it."""
    pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in map(int, pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _run("ip", "netns", "del", ns, check=False)


def cleanup(prefix: str = PREFIX) -> list[str]:
    """Remove the namespaces of runs under ``prefix`` whose process is gone (killed with
    SIGKILL); their names."""
    names = [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines() if line]
    pattern = name_pattern(prefix)
    stale = [n for n in names if pattern.match(n) and not _alive(int(pattern.match(n).group(1)))]
    for ns in stale:
        _remove(ns)
    return stale


def _raise_exit(signum, frame):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


class Hosts:
    """``n`` hosts: namespace ``ns[i]``, interface ``dev[i]``, address ``addr[i]``; each link at ``rate``.

    Two hosts share one veth pair (each end shaped on its way out); more hosts each have a veth
    to a bridge in namespace ``switch``, shaped at both ends, so every direction of every
    host's link runs at ``rate``.
    """

    def __init__(self, n: int, rate: str = "2gbit", burst: str = BURST, latency: str = LATENCY,
                 mtu: int | None = None, prefix: str = PREFIX):
        check_prefix(prefix)
        if n < 2:
            raise ValueError(f"an emulated cluster needs at least 2 hosts, got {n}")
        if n > 250:
            raise ValueError(f"at most 250 hosts fit the /24, got {n}")
        parse_rate(rate)                        # fail before anything is made
        if mtu is not None and not 68 <= mtu <= 65535:
            raise ValueError(f"mtu must be 68..65535 bytes (1500: Ethernet, 9000: jumbo), got {mtu}")
        self.mtu = mtu                          # None: the veth default (1500)
        pid, k = os.getpid(), os.getpid() % 250 + 1
        self.n, self.rate, self.burst, self.latency = n, rate, burst, latency
        self.ns = [f"{prefix}{pid}h{i}" for i in range(n)]
        self.dev = [f"rfh{i}" for i in range(n)]
        self.addr = [f"10.232.{k}.{i + 1}" for i in range(n)]
        self.switch = None if n == 2 else f"{prefix}{pid}sw"
        self._made: list[str] = []
        self._handlers: dict = {}

    def __enter__(self) -> "Hosts":
        self._trap_signals()
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.remove()
        finally:
            for sig, old in self._handlers.items():
                signal.signal(sig, old)
            self._handlers = {}

    def _trap_signals(self) -> None:
        """SIGTERM/SIGHUP become SystemExit and SIGINT KeyboardInterrupt, so exits unwind here."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                self._handlers[sig] = signal.signal(sig, _raise_exit)
            except ValueError:                  # not the main thread: the caller must clean up
                break

    def _add_ns(self, ns: str) -> None:
        _run("ip", "netns", "add", ns)
        self._made.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")

    def _shape(self, ns: str, dev: str) -> None:
        _run("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", self.rate,
             "burst", self.burst, "latency", self.latency)

    def _build(self) -> None:
        for ns in self.ns + ([self.switch] if self.switch else []):
            self._add_ns(ns)
        if self.switch is None:
            _run("ip", "link", "add", self.dev[0], "netns", self.ns[0], "type", "veth",
                 "peer", "name", self.dev[1], "netns", self.ns[1])
        else:
            _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.switch, "link", "set", "br0", "up")
            for i, ns in enumerate(self.ns):
                port = f"p{i}"
                _run("ip", "link", "add", self.dev[i], "netns", ns, "type", "veth",
                     "peer", "name", port, "netns", self.switch)
                _run("ip", "-n", self.switch, "link", "set", port, "master", "br0")
                self._set_mtu(self.switch, port)
                _run("ip", "-n", self.switch, "link", "set", port, "up")
                self._shape(self.switch, port)              # switch -> host
        for ns, dev, addr in zip(self.ns, self.dev, self.addr):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            self._set_mtu(ns, dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            self._shape(ns, dev)                            # host -> wire

    def _set_mtu(self, ns: str, dev: str) -> None:
        # tbf counts every frame's headers: at 1500 bytes TCP carries at most 1448/1514 = 0.956
        # of the rate, at 9000 0.993
        if self.mtu is not None:
            _run("ip", "-n", ns, "link", "set", "dev", dev, "mtu", str(self.mtu))

    def remove(self) -> None:
        """Delete every namespace made (and so every link), killing what still runs inside.
        Signals are ignored meanwhile, so a second Ctrl-C cannot leave half a cluster behind."""
        held = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                held[sig] = signal.signal(sig, signal.SIG_IGN)
            except ValueError:                  # not the main thread: nothing to hold
                break
        try:
            while self._made:
                _remove(self._made.pop())
        finally:
            for sig, old in held.items():
                signal.signal(sig, old)

    def command(self, host: int, cmd: list[str]) -> list[str]:
        """``cmd`` run inside host ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns[host], *cmd]

    def env(self, host: int) -> dict:
        """Variables that make gloo (and tensorpipe) use this host's own interface."""
        return {"GLOO_SOCKET_IFNAME": self.dev[host], "TP_SOCKET_IFNAME": self.dev[host]}

    def describe(self) -> str:
        link = "a veth pair" if self.switch is None else f"a bridge ({self.switch})"
        return (f"{self.n} hosts {', '.join(self.ns)} at {', '.join(self.addr)}, joined by "
                f"{link}; every link tbf rate {self.rate} burst {self.burst} latency {self.latency}"
                f"{'' if self.mtu is None else f', mtu {self.mtu}'}")
