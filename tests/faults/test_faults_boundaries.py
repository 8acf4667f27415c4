"""Bad input at the other public boundaries: wrappers, the training CLI, data, and start-up
(launcher variables half set, MASTER_ADDR missing, MASTER_PORT taken): a clear error saying what
to do, raised by ringflow, never a hang or a bare traceback from deep inside torch.
"""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from ringflow import data
from ringflow.collectives.communicator import Communicator
from ringflow.parallel import DataParallel, ZeroOptimizer
from ringflow.transport.local import LocalTransport
from tests.faults.procs import launch_bare


@pytest.fixture
def comm():
    c = Communicator(LocalTransport.group(1)[0], timeout=2)
    yield c
    c.close()


def test_wrappers_refuse_bad_groups_and_settings(comm):
    with pytest.raises(TypeError, match="ringflow Communicator"):
        DataParallel(torch.nn.Linear(2, 2), group="world")
    with pytest.raises(ValueError, match="stage must be 1"):
        ZeroOptimizer(torch.nn.Linear(2, 2).parameters(), torch.optim.SGD, group=comm, stage=3,
                      lr=0.1)


def test_data_boundary_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a built-in name"):
        data.load_dataset(str(tmp_path / "nope"))
    bad = tmp_path / "points.npy"
    np.save(bad, np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        data.load_dataset(str(bad))


@pytest.mark.parametrize("argv,words", [
    (["--steps", "-5"], "steps"),
    (["--model", "no-such-net"], "no-such-net"),
    (["--lr", "fast"], "lr"),
])
def test_training_cli_rejects_bad_arguments_with_a_message(argv, words, tmp_path, capsys):
    from ringflow.train import loop
    try:
        code = loop.main([*argv, "--out", str(tmp_path / "run")])
    except SystemExit as e:          # argparse's own refusal (type errors) exits 2 with usage
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err[-2000:]


STARTUP = """
import ringflow
try:
    ringflow.init(timeout=5)
except (RuntimeError, ValueError) as e:
    print("REFUSED:", type(e).__name__, e, flush=True)
    raise SystemExit(7)
"""


def _start(tmp_path, env: dict) -> str:
    script = tmp_path / "start.py"
    script.write_text(STARTUP)
    (code, out), = launch_bare(1, [str(script)], env, timeout=60)
    assert code == 7, out[-3000:]
    return out


@pytest.mark.launched
@pytest.mark.timeout(90)
def test_master_port_in_use_is_named(tmp_path):
    with socket.socket() as busy:                     # someone else's server holds the port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = _start(tmp_path, {"WORLD_SIZE": "2", "MASTER_PORT": str(port)})
    assert "could not start the torch transport" in out and "port may be taken" in out, out


@pytest.mark.launched
@pytest.mark.timeout(90)
def test_missing_master_addr_is_named(tmp_path):
    out = _start(tmp_path, {"WORLD_SIZE": "2", "MASTER_ADDR": None})
    assert "needs MASTER_ADDR and MASTER_PORT" in out and "export them" in out, out
