"""Every RINGFLOW_* variable is declared in ringflow/settings.py, read only there, and listed in the
README; values that do not parse, and unknown names, are errors that say what is expected."""
import re
from pathlib import Path

import pytest

from ringflow import settings
from ringflow.collectives import select

ROOT = Path(__file__).resolve().parent.parent


def test_every_variable_named_in_the_package_is_declared():
    named = set()
    for path in (ROOT / "ringflow").rglob("*.py"):
        named |= set(re.findall(r"RINGFLOW_[A-Z_]+[A-Z]", path.read_text()))
    assert named - set(settings.SETTINGS) == set()


def test_only_settings_reads_the_environment_for_them():
    reads = []
    for path in (ROOT / "ringflow").rglob("*.py"):
        if path.name == "settings.py":
            continue
        for line in path.read_text().splitlines():
            if re.search(r"(environ|getenv)\W.*RINGFLOW_", line):
                reads.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert reads == []


def test_readme_lists_every_variable_as_settings_describes_it():
    assert settings.markdown_table() in (ROOT / "README.md").read_text()


def test_empty_means_unset_and_bad_values_name_the_variable():
    assert settings.get("RINGFLOW_TIMEOUT", {"RINGFLOW_TIMEOUT": ""}) == 300.0
    assert settings.get("RINGFLOW_TRANSPORT", {"RINGFLOW_TRANSPORT": " "}) == "auto"
    assert settings.get("RINGFLOW_DEBUG", {"RINGFLOW_DEBUG": "1"}) is True
    with pytest.raises(ValueError, match=r"RINGFLOW_TIMEOUT='-3' is not valid .*seconds > 0"):
        settings.get("RINGFLOW_TIMEOUT", {"RINGFLOW_TIMEOUT": "-3"})
    with pytest.raises(ValueError, match="RINGFLOW_SHM_RING_BYTES='lots'"):
        settings.get("RINGFLOW_SHM_RING_BYTES", {"RINGFLOW_SHM_RING_BYTES": "lots"})


def test_unknown_algorithm_names_raise_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"'foo' is not an algorithm; choose one of \[.*'ring'"):
        select.forced("all_reduce", "foo")
    with pytest.raises(ValueError, match=r"'scan' is not a collective"):
        select.forced("all_reduce", "scan=ring")
    assert select.forced("broadcast", "ring") is None          # ring applies where it exists
    assert select.forced("all_reduce", "ring") == "ring"


def test_unknown_transport_raises_naming_the_known_ones():
    from ringflow import runtime
    from ringflow.launch import LaunchEnv
    with pytest.raises(ValueError, match="use torch, mpi, shm, local or auto"):
        runtime._pick_transport(LaunchEnv("none", 0, 1, 0, 1), "carrier-pigeon")
