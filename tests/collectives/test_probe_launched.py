"""auto's start-up probe over real MPI ranks of one node (collectives/probe.py): it runs at
init without a tune file, every rank ends with the same figures and the same choices, and
bfloat16 (which MPI cannot reduce) never goes to MPI's own call."""
import ast
import re
from pathlib import Path

import pytest

from ringflow.collectives import costmodel
from tests.launchers import run_mpirun

WORKER = str(Path(__file__).with_name("probe_worker.py"))


@pytest.mark.timeout(120)
@pytest.mark.launched
@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_probe_runs_at_init_and_every_rank_chooses_alike(ranks, tmp_path):
    _, out = run_mpirun(ranks, WORKER, timeout=100, env={"RINGFLOW_CACHE": str(tmp_path)})
    lines = {int(m.group(1)): m.group(2) for m in re.finditer(r"rank (\d+) (probe .*)", out)}
    assert sorted(lines) == list(range(ranks)), out[-3000:]
    assert len(set(lines.values())) == 1, lines          # same figures, same picks
    assert "['native', 'staged']" in lines[0], lines[0]   # it ran: both candidates timed
    picks = ast.literal_eval(re.search(r"picks (\[.*\])", lines[0]).group(1))
    assert set(picks) <= {"native", "staged"}, picks      # one node: the two the probe weighs
    assert "native" not in picks[3:], picks               # bfloat16: never MPI's own call


@pytest.mark.timeout(120)
@pytest.mark.launched
@pytest.mark.mpi
def test_a_tune_file_replaces_the_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path))
    costmodel.save(costmodel.Model(alpha=40e-6, beta=1 / 2e9, gamma=1 / 6e9),
                   costmodel.cache_path("mpi", 2, 2))
    _, out = run_mpirun(2, WORKER, timeout=100, env={"RINGFLOW_CACHE": str(tmp_path)})
    assert out.count("probe [] {}") == 2, out[-3000:]
