"""The alpha-beta model, its fit, the tune cache and the selector's choices (no launcher needed)."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from ringflow import collectives as rc
from ringflow.collectives import costmodel, select
from ringflow.collectives.threads import run_ranks


def test_fit_recovers_alpha_beta_from_noisy_synthetic_times():
    rng = np.random.default_rng(0)
    sizes = np.array([4 << 10 << (2 * i) for i in range(7)], float)
    alpha, beta = 50e-6, 1 / 3e9
    times = (alpha + beta * sizes) * rng.uniform(0.97, 1.03, sizes.size)
    a, b = costmodel.fit_line(sizes, times)
    assert a == pytest.approx(alpha, rel=0.1) and b == pytest.approx(beta, rel=0.1)


def test_fit_refuses_a_single_size():
    with pytest.raises(ValueError, match="distinct sizes"):
        costmodel.fit_line([1024, 1024], [1e-5, 1e-5])


def model(**kw) -> costmodel.Model:
    base = costmodel.Model(alpha=50e-6, beta=1 / 2e9, gamma=1 / 6e9, local_size=4)
    return dataclasses.replace(base, **kw)


def test_model_prefers_few_rounds_small_and_ring_large():
    md = model()
    small = {a: costmodel.predict(md, "all_reduce", a, 4, 4096) for a in ("ring", "rd", "rhd")}
    big = {a: costmodel.predict(md, "all_reduce", a, 4, 64 << 20) for a in ("ring", "rd", "rhd")}
    assert min(small, key=small.get) == "rd"
    assert big["ring"] < big["rd"] and big["rhd"] <= big["ring"] * 1.01
    assert costmodel.predict(md, "all_reduce", "native", 4, 4096) is None   # untuned: no line


def test_measured_points_override_the_formula_where_they_exist():
    """The formula ranks rhd first at 4 MiB; tune measured it slower than ring there."""
    mib = 1 << 20
    md = model(measured={"all_reduce/rhd": [[mib, 2e-3], [4 * mib, 9e-3]],
                         "all_reduce/ring": [[mib, 1e-3], [4 * mib, 4e-3]]})
    plain = model()
    assert costmodel.predict(plain, "all_reduce", "rhd", 4, 4 * mib) <= \
        costmodel.predict(plain, "all_reduce", "ring", 4, 4 * mib)
    assert costmodel.predict(md, "all_reduce", "rhd", 4, 4 * mib) == pytest.approx(9e-3)
    assert costmodel.predict(md, "all_reduce", "ring", 4, 2 * mib) == pytest.approx(2e-3)  # log-log
    # beyond the points: the formula's shape, scaled to the nearest point
    f = lambda m: costmodel.formula(md, "all_reduce", "ring", 4, m)  # noqa: E731
    assert costmodel.predict(md, "all_reduce", "ring", 4, 64 * mib) == \
        pytest.approx(4e-3 * f(64 * mib) / f(4 * mib))
    assert costmodel.predict(md, "all_reduce", "rd", 4, mib) == \
        costmodel.predict(plain, "all_reduce", "rd", 4, mib)            # unmeasured: the formula


def test_two_level_pays_less_across_nodes_than_flat_ring_latency():
    md = model(local_size=2)
    flat = costmodel.predict(md, "all_reduce", "ring", 8, 1 << 10)
    two = costmodel.predict(md, "all_reduce", "two_level", 8, 1 << 10)
    assert two < flat                      # 2(L-1) + log steps beat 2(n-1) ring steps


def with_cache(tmp_path, monkeypatch, n: int, fields: dict):
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path))
    costmodel.forget()
    path = costmodel.cache_path("local", n, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields))
    return path


def choices(n: int, sizes) -> list[list[str]]:
    return run_ranks(n, lambda comm: [select.choose(comm, "all_reduce", s)[0] for s in sizes])


def test_auto_follows_the_tune_file_and_every_rank_agrees(tmp_path, monkeypatch):
    with_cache(tmp_path, monkeypatch, 4, {"alpha": 100e-6, "beta": 1 / 2e9, "gamma": 1 / 8e9})
    got = choices(4, [1 << 10, 256 << 20])
    assert all(g == got[0] for g in got)
    assert got[0][0] == "rd" and got[0][1] in ("ring", "rhd")
    costmodel.forget()


def test_native_is_a_candidate_only_where_the_transport_has_it(tmp_path, monkeypatch):
    with_cache(tmp_path, monkeypatch, 2, {"alpha": 1e-3, "beta": 1e-9, "gamma": 1e-10,
                                         "native": {"all_reduce": [1e-6, 1e-12]}})
    assert run_ranks(2, lambda c: "native" in select.available(c, "all_reduce")) == [False, False]
    assert choices(2, [4096])[0] == ["rd"]        # the cheap native line is ignored: not available
    costmodel.forget()


def test_ringflow_algorithm_env_forces_and_validates(monkeypatch):
    monkeypatch.setenv("RINGFLOW_ALGORITHM", "rhd")
    assert choices(3, [1 << 10])[0] == ["rhd"]
    monkeypatch.setenv("RINGFLOW_ALGORITHM", "broadcast=naive,all_reduce=ring")
    assert choices(3, [1 << 10])[0] == ["ring"]
    assert select.forced("broadcast") == "naive" and select.forced("reduce") is None
    monkeypatch.setenv("RINGFLOW_ALGORITHM", "all_reduce=bogus")
    with pytest.raises(ValueError, match="not an algorithm of all_reduce"):
        select.forced("all_reduce")


def test_last_choice_is_recorded_and_result_is_right(monkeypatch):
    monkeypatch.setenv("RINGFLOW_ALGORITHM", "all_reduce=rd")

    def body(comm):
        t = torch.full((5,), float(comm.rank))
        rc.all_reduce(t, group=comm)
        return t, select.last["all_reduce"]
    outs = run_ranks(3, body)
    assert all(name == "rd" and torch.equal(t, torch.full((5,), 3.0)) for t, name in outs)


def test_cache_is_written_atomically_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path))
    path = costmodel.cache_path("torch-gloo", 2, 2)
    costmodel.save(model(native={"all_reduce": [1e-4, 1e-9]}), path)
    assert json.loads(path.read_text())["native"]["all_reduce"] == [1e-4, 1e-9]
    assert [p.name for p in tmp_path.iterdir()] == ["tune-torch-gloo-n2-l2.json"]


# ---- auto without a tune: priors from the transport and the topology ---------------------------
class _Transport:
    """What the prior reads of a transport: its name, device, staging and backend verbs (MPI's
    reduce every dtype but bfloat16, as transport/mpi.py's)."""

    def __init__(self, name: str, stages: bool):
        self.name, self.device, self.may_stage = name, "cpu", stages
        self._half = 2 << 20 if stages else 0

    def staging(self):
        return dataclasses.make_dataclass("Stage", ["half"])(self._half) if self._half else None

    def native_reduces(self, dtype) -> bool:
        return not (self.name == "mpi" and dtype == torch.bfloat16)

    def native_all_reduce(self, t, op):
        raise AssertionError("the prior's test never runs a collective")

    native_reduce_scatter = native_all_gather = native_all_reduce


def fake_comm(name, n, local, stages):
    return type("Comm", (), dict(transport=_Transport(name, stages), size=n, local_size=local,
                                 slice_bytes=None, is_world=True, auto_memo=None,
                                 algorithm_env=""))()


def prior_picks(tmp_path, monkeypatch, name, n, local, stages, sizes, dtype=None) -> list[str]:
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path / "no-tune-here"))
    costmodel.forget()
    comm = fake_comm(name, n, local, stages)
    assert costmodel.load(comm).source == "default"
    return [select.ranked(comm, "all_reduce", s, dtype=dtype)[0][0] for s in sizes]


SIZES = [4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20]


def test_prior_on_one_node_reads_peers_in_place(tmp_path, monkeypatch):
    for name, n in (("shm", 2), ("torch/gloo", 2), ("torch/gloo", 4)):
        assert prior_picks(tmp_path, monkeypatch, name, n, n, True, SIZES) == ["staged"] * 5, name
    # 4 ranks over shm read 4 stages each: the ring family's messages are cheap there, and it
    # wins from 16 MiB (SHM_STAGE_READ); over gloo they pay TCP and staged still wins
    assert prior_picks(tmp_path, monkeypatch, "shm", 4, 4, True, SIZES) == \
        ["staged"] * 3 + ["rhd"] * 2
    # eight ranks read eight stages each: the ring's 2(n-1)/n of the data wins at large sizes
    assert prior_picks(tmp_path, monkeypatch, "shm", 8, 8, True, [64 << 20]) != ["staged"]


def test_prior_across_hosts_keeps_to_the_ring_family(tmp_path, monkeypatch):
    two_by_one = prior_picks(tmp_path, monkeypatch, "torch/gloo", 2, 1, False, SIZES)
    assert two_by_one[:2] == ["rd", "rd"] and two_by_one[3:] == ["ring", "ring"]
    two_by_two = prior_picks(tmp_path, monkeypatch, "torch/gloo", 4, 2, False, SIZES)
    assert two_by_two[0] == "rd" and two_by_two[2:] == ["two_level"] * 3
    md = costmodel.load(type("C", (), dict(transport=_Transport("torch/gloo", False), size=4,
                                           local_size=2, slice_bytes=None))())
    assert not costmodel.allowed(md, "rhd", 4) and costmodel.allowed(md, "two_level", 4)
    assert costmodel.allowed(dataclasses.replace(md, source="tune.json"), "rhd", 4)   # a tune decides
    assert costmodel.allowed(dataclasses.replace(md, local_size=4), "rhd", 4)  # one node: all


def test_prior_on_one_mpi_node_takes_mpis_own_call_where_it_takes_the_dtype(tmp_path, monkeypatch):
    """MPI's all-reduce: microseconds small, page faults large (MPI_ONE_NODE_ALL_REDUCE)."""
    for n in (2, 3, 4):
        # 4 ranks read 4 stages each: the ring family from 8 MiB, as over shm (SHM_STAGE_READ)
        large = ["staged"] * 2 if n < 4 else ["rhd"] * 2
        f32 = prior_picks(tmp_path, monkeypatch, "mpi", n, n, True, SIZES, torch.float32)
        assert f32 == ["native"] * 3 + large, n
        # MPI has no bfloat16 reduction: ours at every size, never the call that would fail
        bf16 = prior_picks(tmp_path, monkeypatch, "mpi", n, n, True, SIZES, torch.bfloat16)
        assert bf16 == ["staged"] * 3 + large, n
    # MPI's call to 1 MiB, staged from 4 MiB (it lost there in 2 of 3 launches, 2026-12-06)
    assert prior_picks(tmp_path, monkeypatch, "mpi", 2, 2, True, [1 << 20, 2 << 20, 4 << 20],
                       torch.float32) == ["native", "native", "staged"]
    # across nodes MPI's own stays out of the prior (the ring family, as on gloo)
    assert "native" not in prior_picks(tmp_path, monkeypatch, "mpi", 4, 2, False, SIZES,
                                       torch.float32)
    # gloo's own is never the prior's pick on one node: staged reads peers in place
    assert prior_picks(tmp_path, monkeypatch, "torch/gloo", 2, 2, True, SIZES,
                       torch.float32) == ["staged"] * 5


def test_choose_sees_the_dtype_and_a_forced_native_falls_back_where_it_cannot(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path / "no-tune-here"))
    costmodel.forget()
    comm = fake_comm("mpi", 2, 2, True)
    picks = {dt: select.choose(comm, "all_reduce", 4096, dtype=dt)[0]
             for dt in (torch.float32, torch.float16, torch.int32, torch.bfloat16)}
    assert picks == {torch.float32: "native", torch.float16: "native", torch.int32: "native",
                     torch.bfloat16: "staged"}
    # bytes only: the dtype does not matter to MPI's all-gather
    assert "native" in select.available(comm, "all_gather", torch.bfloat16)
    assert "native" not in select.available(comm, "reduce_scatter", torch.bfloat16)
    comm.algorithm_env = "all_reduce=native"          # RINGFLOW_ALGORITHM cannot force a failure
    comm.auto_memo = None
    assert select.choose(comm, "all_reduce", 4096, dtype=torch.bfloat16)[0] == "staged"
    assert select.choose(comm, "all_reduce", 4096, dtype=torch.float32)[0] == "native"


def test_every_rank_of_an_mpi_node_makes_the_same_choice(tmp_path, monkeypatch):
    """The choice reads only the arguments, the group size and the transport's fixed facts:
    ranks (threads here, each with its own communicator and memo) agree at every size."""
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path / "no-tune-here"))
    costmodel.forget()
    sizes = [1 << k for k in range(0, 28, 3)]

    def body(rank):
        comm = fake_comm("mpi", 4, 4, True)
        return [select.choose(comm, "all_reduce", s, dtype=dt)[0]
                for s in sizes for dt in (torch.float32, torch.bfloat16)]
    outs = run_ranks(4, lambda c: body(c.rank))
    assert all(o == outs[0] for o in outs) and {"native", "staged"} <= set(outs[0])


def test_the_probe_keeps_mpis_own_call_on_an_idle_node_and_drops_it_on_a_busy_one(tmp_path,
                                                                                  monkeypatch):
    """costmodel.adopt_probe with the probe's figures: as the prior expects (idle), and MPI's
    call 20x slower than that against staged (busy: 12-34 ms at 16 KiB measured here)."""
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path / "no-tune-here"))
    sizes = (16 << 10, 1 << 20)

    def picks_after(native_s, staged_s):
        costmodel.forget()
        comm = fake_comm("mpi", 2, 2, True)
        costmodel.adopt_probe(comm, {"native": [[b, t] for b, t in zip(sizes, native_s)],
                                     "staged": [[b, t] for b, t in zip(sizes, staged_s)]})
        assert costmodel.load(comm).probe["native"][0] == [16 << 10, native_s[0]]
        return [select.choose(comm, "all_reduce", s, dtype=torch.float32)[0] for s in SIZES]
    assert picks_after((20e-6, 200e-6), (30e-6, 550e-6)) == ["native"] * 3 + ["staged"] * 2
    assert picks_after((3e-3, 12e-3), (0.2e-3, 0.6e-3)) == ["staged"] * 5
    # a choice memoised before the probe is not kept after it
    costmodel.forget()
    comm = fake_comm("mpi", 2, 2, True)
    assert select.choose(comm, "all_reduce", 4096, dtype=torch.float32)[0] == "native"
    costmodel.adopt_probe(comm, {"native": [[b, 1.0] for b in sizes],
                                 "staged": [[b, 1e-4] for b in sizes]})
    assert select.choose(comm, "all_reduce", 4096, dtype=torch.float32)[0] == "staged"
    costmodel.forget()


def test_auto_makes_one_choice_for_every_call_below_small_bytes(tmp_path, monkeypatch):
    """A probe that puts MPI's call and staged level at small sizes (their curves then cross
    twice below 64 KiB) still gives every call under SMALL_BYTES the choice made for SMALL_BYTES:
    ranks whose calls differ by a dtype's width run one algorithm, which names the mismatch."""
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path / "no-tune-here"))
    costmodel.forget()
    comm = fake_comm("mpi", 2, 2, True)
    # what the probe found in one launch of 2026-12-07 (across_hosts/2026-12-07-one-node/probes.txt)
    costmodel.adopt_probe(comm, {"native": [[16 << 10, 23e-6], [1 << 20, 159e-6]],
                                 "staged": [[16 << 10, 26e-6], [1 << 20, 185e-6]]})
    small = [1, 1000, 4000, 8000, 12 << 10, select.SMALL_BYTES]
    picks = {select.choose(comm, "all_reduce", b, dtype=torch.float32)[0] for b in small}
    assert len(picks) == 1, picks
    # the model alone would have split them: the choice is the clamp's doing
    ranked = {select.ranked(comm, "all_reduce", b, dtype=torch.float32)[0][0]
              for b in (1000, 4000, 8000)}
    assert len(ranked) == 2, ranked
    costmodel.forget()
