"""Two "hosts" on one machine: network namespaces joined by a veth pair, each with its own address.

Only namespaces and addresses this helper creates are touched (10.231.<k>.1/.2 on a private
/30, deleted on exit). Needs root and iproute2; ``available()`` says why not otherwise.

    with TwoHosts() as net:
        net.run(0, ["python", "-m", "torch.distributed.run", ...])   # inside host 0
        net.cut()                                                   # pull the cable
"""
from __future__ import annotations

import os
import shutil
import subprocess


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def available() -> str | None:
    """None if namespaces can be made here, else the reason (the command's own error)."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed (apt-get install -y iproute2)"
    probe = f"rfprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode:
        return f"'ip netns add' failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class TwoHosts:
    """Namespaces ``ns[0]``, ``ns[1]`` with addresses ``addr[0]``, ``addr[1]`` on veth ``dev``."""

    def __init__(self):
        k = os.getpid() % 250 + 1
        self.ns = [f"rfa{os.getpid()}", f"rfb{os.getpid()}"]
        self.dev = [f"rfva{k}", f"rfvb{k}"]
        self.addr = [f"10.231.{k}.1", f"10.231.{k}.2"]

    def __enter__(self) -> "TwoHosts":
        for ns in self.ns:
            _ip("netns", "add", ns)
        try:
            _ip("link", "add", self.dev[0], "type", "veth", "peer", "name", self.dev[1])
            for ns, dev, addr in zip(self.ns, self.dev, self.addr):
                _ip("link", "set", dev, "netns", ns)
                _ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for ns in self.ns:                     # deleting a namespace deletes its veth end too
            _ip("netns", "del", ns, check=False)

    def env(self, host: int) -> dict:
        """Variables that make gloo use this host's own interface and address."""
        return {"GLOO_SOCKET_IFNAME": self.dev[host], "TP_SOCKET_IFNAME": self.dev[host]}

    def command(self, host: int, cmd: list[str]) -> list[str]:
        """``cmd`` run inside host ``host``'s namespace."""
        return ["ip", "netns", "exec", self.ns[host], *cmd]

    def cut(self) -> None:
        """Take the link down: packets stop, no connection is reset (like a pulled cable)."""
        _ip("-n", self.ns[0], "link", "set", self.dev[0], "down")
