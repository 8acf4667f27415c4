"""Every ```python block of README.md runs as written, in a fresh process: on a world of one
(plain python) and, where the README marks the block ``<!-- test_readme: torchrun 2 ... -->``,
also under torchrun with 2 ranks on the default transport. A block marked
``<!-- test_readme: skip: <reason> -->`` is left out; no other mark is accepted."""
import re
import sys

import pytest

from tests.launchers import ROOT, run_cmd, run_torchrun

README = ROOT / "README.md"
# an optional mark on the line right before the fence, then the block
BLOCK = re.compile(r"(?:<!-- test_readme: (?P<mark>[^\n]*?) -->\n)?```python\n(?P<code>.*?)^```",
                   re.S | re.M)
MARKS = re.compile(r"torchrun 2\b.*|skip: \S.*")


def blocks() -> list[tuple[int, str, str]]:
    """(line of the fence, mark, code) of each python block."""
    text = README.read_text()
    return [(text.count("\n", 0, m.start("code")), m.group("mark") or "", m.group("code"))
            for m in BLOCK.finditer(text)]


def runnable(torchrun: bool = False) -> list:
    return [pytest.param(code, id=f"README.md:{line}") for line, mark, code in blocks()
            if not mark.startswith("skip:") and (not torchrun or mark.startswith("torchrun 2"))]


def test_every_block_is_found_and_marked_with_a_known_mark():
    text = README.read_text()
    found = blocks()
    assert len(found) == text.count("```python\n") >= 5, "a python block the pattern misses"
    for line, mark, _ in found:
        assert not mark or MARKS.fullmatch(mark), (
            f"README.md:{line}: unknown mark {mark!r}; use 'torchrun 2 ...' or 'skip: <reason>'")


@pytest.mark.launched
@pytest.mark.timeout(120)
@pytest.mark.parametrize("code", runnable())
def test_block_runs_on_a_world_of_one(code):
    _, out = run_cmd([sys.executable, "-c", code], timeout=100,
                     env={"RINGFLOW_TRANSPORT": "auto"})
    assert "Traceback" not in out, out[-3000:]


@pytest.mark.launched
@pytest.mark.timeout(200)
@pytest.mark.parametrize("code", runnable(torchrun=True))
def test_block_runs_under_torchrun_with_two_ranks(code, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(code)
    # "auto" as a user gets it: shared memory between the two CPU ranks of this node
    _, out = run_torchrun(2, str(script), timeout=180, env={"RINGFLOW_TRANSPORT": "auto"})
    assert "Traceback" not in out, out[-3000:]
