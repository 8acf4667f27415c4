"""The conformance matrix over the local transport (N ranks as threads): world sizes 1-4 in-process.

Every collective x registered algorithm x op x dtype x size {0, 1, n-1, n+1, 1000, 2^20+3}
(2^20+3 in float32/SUM only), checked bitwise against the exact answer; see conformance.py.
"""
import pytest

from ringflow.collectives.threads import run_ranks
from tests.collectives.conformance import run_matrix


@pytest.mark.timeout(180)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_local_transport_matrix(n):
    reports = run_ranks(n, run_matrix, timeout=60)
    for r in reports:
        assert not r.failures, r.summary()
    assert reports[0].checks > 1500                    # the matrix really ran
    assert len({r.digest for r in reports}) == 1, "ranks disagree on results that must match"
