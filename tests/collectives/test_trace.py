"""RINGFLOW_TRACE: each rank's timeline is valid Chrome/Perfetto JSON whose spans nest as the ring
runs (collective > step > wait, waits naming the peer), DataParallel's buckets are ready, launched
and done in that order, the merge lines the ranks up in one file, and off nothing is recorded."""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ringflow import collectives as rc
from ringflow.collectives import ring, trace
from ringflow.collectives.threads import run_ranks
from ringflow.parallel import DataParallel
from tests.launchers import ROOT, run_torchrun
from tests.parallel.matrix import batch, make_net

pytestmark = pytest.mark.timeout(120)
NUMEL, SLICE = 4096, 1024          # 16 KiB, 2 chunks of 8 KiB, 8 slices of 1 KiB per step


def load(folder, rank: int) -> dict:
    doc = json.loads((folder / f"trace-rank{rank}.json").read_text())
    assert doc["otherData"]["rank"] == rank and doc["otherData"]["dropped_events"] == 0
    return doc


def spans(doc: dict, prefix: str) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and e["name"].startswith(prefix)]


def named(doc: dict, name: str) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["name"] == name]


def inside(inner: dict, outer: dict) -> bool:
    """``inner`` lies within ``outer`` on the same thread (how Perfetto nests them)."""
    end = inner["ts"] + inner.get("dur", 0)
    return (inner["tid"] == outer["tid"] and outer["ts"] <= inner["ts"]
            and end <= outer["ts"] + outer["dur"] + 1e-3)


def ring_calls(comm) -> float:
    t = torch.ones(NUMEL) * (comm.rank + 1)
    rc.all_reduce(t, group=comm, algorithm="ring")
    out = torch.empty(NUMEL // comm.size)
    rc.reduce_scatter_tensor(out, torch.ones(NUMEL), group=comm, algorithm="ring")
    return t[0].item()


def test_thread_ranks_write_spans_that_nest_collective_step_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("RINGFLOW_TRACE", str(tmp_path))
    monkeypatch.setenv("RINGFLOW_SLICE_BYTES", str(SLICE))
    monkeypatch.setattr(ring, "PAIR_EXCHANGE_BYTES", 0)     # the pipelined ring's spans, 2 ranks
    assert run_ranks(2, ring_calls) == [3.0, 3.0]
    for rank in (0, 1):
        doc = load(tmp_path, rank)
        (call,) = spans(doc, "all_reduce #0")
        assert call["args"]["algorithm"] == "ring" and call["args"]["bytes"] == 4 * NUMEL
        assert call["args"]["state"] == "done" and call["pid"] == rank
        steps = [s for s in spans(doc, "reduce-scatter step ") + spans(doc, "all-gather step ")
                 if inside(s, call)]
        assert [s["name"] for s in steps] == ["reduce-scatter step 0", "all-gather step 0"]
        assert steps[0]["args"]["slices"] == 8 and steps[0]["args"]["bytes"] == 2 * NUMEL
        waits = [w for w in spans(doc, "wait rank ") if inside(w, call)]
        assert waits and all(w["name"] == f"wait rank {1 - rank}" and w["args"]["peer"] == 1 - rank
                             for w in waits)
        assert any(inside(w, steps[0]) for w in waits)
        posts = [p for p in named(doc, "post slice 7") if inside(p, call)]
        assert len(posts) == 2 and posts[0]["args"]["send_bytes"] == SLICE    # both halves
        assert len([r for r in spans(doc, "reduce slice ") if inside(r, steps[0])]) == 8
        (rs,) = spans(doc, "reduce_scatter_tensor #1")
        assert rs["args"]["algorithm"] == "ring"
        threads = [e["args"]["name"] for e in named(doc, "thread_name")]
        assert f"local-rank{rank}" in threads


def test_data_parallel_buckets_ready_then_launched_then_done(tmp_path, monkeypatch):
    monkeypatch.setenv("RINGFLOW_TRACE", str(tmp_path))

    def fn(comm):
        dp = DataParallel(make_net(1), group=comm, bucket_cap_mb=0.01, first_bucket_mb=0.002)
        x, y, t = batch(0, 8)
        F.mse_loss(dp(x[comm.rank::2], y[comm.rank::2]), t[comm.rank::2]).backward()
        return len(dp.reducer.buckets)
    nbuckets = run_ranks(2, fn)[0]
    assert nbuckets > 2
    doc = load(tmp_path, 0)
    comm_thread = [e["tid"] for e in named(doc, "thread_name")
                   if e["args"]["name"] == "ringflow-comm"]
    for b in range(nbuckets):
        (ready,), (launched,), (done,) = (named(doc, f"bucket {b} {what}")
                                          for what in ("ready", "launched", "done"))
        assert ready["ts"] <= launched["ts"] <= done["ts"]
        assert done["tid"] in comm_thread and launched["tid"] != done["tid"]
        begin, end = named(doc, f"bucket {b}")                  # the async span, ready to done
        assert (begin["ph"], end["ph"], begin["id"]) == ("b", "e", end["id"])
    reduces = spans(doc, "all_reduce #")
    assert len(reduces) >= nbuckets and all(r["tid"] in comm_thread for r in reduces[-nbuckets:])
    (wait,) = spans(doc, "wait for buckets")
    (last,) = named(doc, f"bucket {nbuckets - 1} done")
    assert wait["ts"] + wait["dur"] >= last["ts"]           # backward returns after the last


def test_off_uses_the_null_tracer_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("RINGFLOW_TRACE", raising=False)
    monkeypatch.setenv("RINGFLOW_SLICE_BYTES", str(SLICE))
    monkeypatch.chdir(tmp_path)

    def fn(comm):
        assert comm.tracer is trace.NULL
        dp = DataParallel(make_net(1), group=comm, bucket_cap_mb=0.01, first_bucket_mb=0.002)
        assert dp.reducer.tracer is trace.NULL
        x, y, t = batch(0, 8)
        F.mse_loss(dp(x[comm.rank::2], y[comm.rank::2]), t[comm.rank::2]).backward()
        return ring_calls(comm)
    # NULL has no span methods, so a call site that records without testing ``on`` first would
    # raise AttributeError in this run: none of them runs when off
    assert not any(hasattr(trace.NULL, m) for m in ("now", "complete", "instant", "async_span"))
    assert run_ranks(2, fn) == [3.0, 3.0]
    assert list(tmp_path.iterdir()) == []


def test_merge_shifts_each_rank_by_its_wall_clock_start(tmp_path):
    for rank, wall in ((0, 5_000_000), (1, 2_000_000)):     # rank 1 started 3 ms earlier
        doc = {"traceEvents": [{"name": "x", "ph": "X", "ts": 10.0, "dur": 1.0, "pid": rank,
                                "tid": 1}],
               "otherData": {"rank": rank, "size": 2, "wall_start_ns": wall}}
        (tmp_path / f"trace-rank{rank}.json").write_text(json.dumps(doc))
    merged = json.loads(trace.merge(tmp_path).read_text())
    assert {e["pid"]: e["ts"] for e in merged["traceEvents"]} == {0: 3010.0, 1: 10.0}
    assert merged["otherData"]["wall_start_ns"] == 2_000_000


def test_merge_of_an_empty_folder_says_what_to_set(tmp_path, capsys):
    assert trace.main([str(tmp_path)]) == 1
    assert f"run with RINGFLOW_TRACE={tmp_path}" in capsys.readouterr().err


@pytest.mark.launched
def test_torchrun_two_ranks_write_one_file_each_and_merge_into_one(tmp_path):
    env = {"RINGFLOW_TRACE": str(tmp_path), "RINGFLOW_TRANSPORT": "shm"}
    run_torchrun(2, "tests/collectives/trace_worker.py", env=env, timeout=120)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace-rank0.json", "trace-rank1.json"]
    merge = subprocess.run([sys.executable, "-m", "ringflow.collectives.trace", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert merge.returncode == 0 and merge.stderr == "", merge.stderr
    events = json.loads((tmp_path / trace.MERGED).read_text())["traceEvents"]
    rows = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert rows == {0: "rank 0", 1: "rank 1"}
    calls = {}
    for e in events:
        if e["ph"] == "X" and e["name"].startswith("all_reduce #"):
            calls.setdefault(e["name"], {})[e["pid"]] = (e["ts"], e["ts"] + e["dur"], e["args"])
    assert len(calls) >= 4 and all(len(by_rank) == 2 for by_rank in calls.values())
    for name, by_rank in calls.items():
        (s0, e0, a0), (s1, e1, a1) = by_rank[0], by_rank[1]
        # neither rank can finish an all-reduce before the other has started it: aligned
        # clocks show the two spans overlapping
        assert s0 <= e1 and s1 <= e0, (name, by_rank)
        assert a0["algorithm"] == a1["algorithm"]
    assert any(e["name"] == "post slice 0" and e["args"]["recv_into"] == "reduced on arrival"
               for e in events)                             # shm reduces as it receives
    assert any(e["name"] == "bucket 0 done" for e in events if e["pid"] == 1)
