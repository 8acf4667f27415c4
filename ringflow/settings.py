"""Every RINGFLOW_* environment variable: its name, default and meaning, and the one reader.

    from ringflow import settings
    timeout = settings.get("RINGFLOW_TIMEOUT")       # 300.0 unless the variable says otherwise

Variables are read when asked (a communicator or transport is made), never at import, so a test
or a launcher may set them late. An empty value means unset. A value that does not parse is an
error naming the variable and what it expects. The README's table is checked against this list
(tests/test_settings.py).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping


def _flag(text: str) -> bool:
    return text not in ("0", "false", "False", "no")


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    default: Any                 # what get() returns when the variable is unset or empty
    expects: str                 # what a value looks like, for the README and for errors
    meaning: str
    parse: Callable[[str], Any] = str


SETTINGS: dict[str, Setting] = {s.name: s for s in [
    Setting("RINGFLOW_TRANSPORT", "auto", "auto | torch | mpi | shm | local",
            "transport of ringflow.init() and the trainer: auto picks shm for one node of CPU "
            "ranks under torchrun, mpi under mpirun, torch elsewhere, local for one rank"),
    Setting("RINGFLOW_TIMEOUT", 300.0, "seconds > 0",
            "bound on every wait of a collective and on the rendezvous", _positive_float),
    Setting("RINGFLOW_ALGORITHM", "", "name, or verb=name,...",
            "forces an algorithm for every verb (ring) or per verb (all_reduce=rd,broadcast=tree)"),
    Setting("RINGFLOW_DEBUG", False, "0 | 1",
            "compare a fingerprint of every collective across ranks before its data moves",
            _flag),
    Setting("RINGFLOW_CACHE", None, "folder",
            "where tunes and metric classifiers are cached (default ~/.cache/ringflow)"),
    Setting("RINGFLOW_FLIGHT_DIR", None, "folder",
            "also write each rank's flight recorder there as JSON when a collective fails"),
    Setting("RINGFLOW_TRACE", None, "folder",
            "write each rank's timeline there as a Chrome/Perfetto trace, one JSON file per "
            "rank (merge them: python -m ringflow.collectives.trace folder)"),
    Setting("RINGFLOW_SLICE_BYTES", None, "bytes >= 0",
            "ring pipeline slice size (0: whole chunks; default: the transport's own)",
            _non_negative_int),
    Setting("RINGFLOW_SPIN_US", None, "microseconds >= 0",
            "how long a waiter spins before it sleeps (default: 2000 while every rank of the "
            "node has a core, else 50; staged beside gloo 50; on the shm transport 50 while "
            "every rank has a core, else 0)", _non_negative_float),
    Setting("RINGFLOW_SHM_DIR", None, "folder",
            "where shared-memory segments are made (default /dev/shm)"),
    Setting("RINGFLOW_SHM_RING_BYTES", 8 << 20, "bytes > 0",
            "each shared-memory message ring's size", _non_negative_int),
    Setting("RINGFLOW_SHM_SLICE_BYTES", 2 << 20, "bytes > 0",
            "ring pipeline slice size on the shared-memory transport", _non_negative_int),
    Setting("RINGFLOW_SHM_STAGE_BYTES", 2 << 20, "bytes, multiple of 64",
            "each half of a rank's staging area for staged collectives (0: none)",
            _non_negative_int),
    Setting("RINGFLOW_MPI_CUDA_AWARE", None, "0 | 1",
            "whether MPI may read device memory (default: ask ompi_info)", _flag),
]}


def get(name: str, env: Mapping[str, str] | None = None) -> Any:
    """The value of ``name`` (a key of SETTINGS) from ``env`` (default os.environ)."""
    setting = SETTINGS[name]          # a KeyError here is a typo in ringflow, not in user input
    text = (os.environ if env is None else env).get(name, "").strip()
    if not text:
        return setting.default
    try:
        return setting.parse(text)
    except ValueError as e:
        raise ValueError(f"{name}={text!r} is not valid ({e}); expected {setting.expects}: "
                         f"{setting.meaning}") from None


def cache_dir() -> str:
    """Where tunes and metric classifiers are cached: $RINGFLOW_CACHE, else ~/.cache/ringflow."""
    return get("RINGFLOW_CACHE") or os.path.expanduser("~/.cache/ringflow")


def markdown_table() -> str:
    """The README's table of variables."""
    rows = ["| variable | value | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS.values():
        default = ("unset" if s.default in (None, "") else
                   f"`{int(s.default)}`" if isinstance(s.default, bool) else f"`{s.default}`")
        expects = s.expects.replace("|", "\\|")
        rows.append(f"| `{s.name}` | {expects} | {default} | {s.meaning} |")
    return "\n".join(rows)
