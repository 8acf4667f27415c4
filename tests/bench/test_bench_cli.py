"""ringflow-bench: flag parsing, nccl-tests row format, and a real 2-rank run with --check."""
import json
import re

import pytest
import torch

from ringflow.bench import args as cli
from ringflow.bench.cases import BUSBW_FACTOR, case_for, expected
from ringflow.bench.report import HEADER, add_link_share, add_ratios, footer, header, line
from tests.launchers import run_torchrun


def test_sizes_with_units_and_steps():
    assert cli.parse_bytes("4K") == 4096 and cli.parse_bytes("1M") == 1 << 20
    assert cli.parse_bytes("2G") == 2 << 30 and cli.parse_bytes("128") == 128
    assert cli.parse_bytes("64KiB") == 65536
    a = cli.parse(["-b", "1M", "-e", "8M", "-f", "2", "-n", "3", "-w", "1", "-c", "1", "-o", "max",
                   "-d", "bfloat16", "--collective", "reduce_scatter", "--algorithm", "ring,native"])
    assert a.sizes == [1 << 20, 2 << 20, 4 << 20, 8 << 20]
    assert (a.iters, a.warmup_iters, a.check, a.op, a.dtype) == (3, 1, 1, "max", torch.bfloat16)


@pytest.mark.parametrize("bad", [["-b", "lots"], ["-b", "8M", "-e", "1M"], ["-n", "0"],
                                 ["-o", "avg", "-d", "int32"], ["--collective", "scan"],
                                 ["--collective", "all_reduce,scan"], ["--link-rate", "fast"]])
def test_bad_flags_exit_with_a_message(bad, capsys):
    with pytest.raises(SystemExit):
        cli.parse(bad)
    assert "error" in capsys.readouterr().err


def test_busbw_factors_are_nccl_tests():
    assert BUSBW_FACTOR["all_reduce"](4) == 1.5 and BUSBW_FACTOR["all_gather"](4) == 0.75
    assert BUSBW_FACTOR["broadcast"](4) == 1.0 and BUSBW_FACTOR["sendrecv"](8) == 1.0


def test_case_sizes_and_exact_expected_values():
    c = case_for("all_gather", 1 << 20, torch.float32, "sum", 0, 4, 1)
    assert (c.count, c.size) == (65536, 1 << 20)
    rs = case_for("reduce_scatter", 4096, torch.bfloat16, "avg", 0, 4, 2)
    want = expected(rs)
    assert want.dtype == torch.bfloat16 and want.numel() == rs.count
    assert expected(case_for("reduce", 64, torch.float32, "sum", 0, 2, 1)) is None  # non-root


def row(label, t_us, size=1 << 20):
    res = {"time_us": t_us, "p10_us": t_us, "p90_us": t_us, "algbw": size / t_us / 1e3,
           "busbw": size / t_us / 1e3, "wrong": 0}
    return {"collective": "all_reduce", "size": size, "count": size // 4, "type": "float",
            "redop": "sum", "root": -1, "label": label, "algorithm": label, "pred_us": 90.0,
            "oop": res, "ip": res}


def test_rows_ratio_and_footer():
    rows = [row("ring", 100.0), row("builtin:gloo", 150.0)]
    add_ratios(rows)
    assert rows[0]["ratio"] == pytest.approx(1.5)
    text = line(rows[0])
    assert text.split()[:6] == ["1048576", "262144", "float", "sum", "-1", "ring"]
    assert text.endswith("1.50x")
    foot = footer(rows)
    assert foot[0].startswith("# ring") and "peak busbw" in foot[0] and "1.50x" in foot[0]


def test_link_rate_adds_busbw_as_a_share_of_the_link():
    a = cli.parse(["--link-rate", "2gbit"])
    assert a.link_Bps == 2.5e8 and cli.parse([]).link_Bps is None
    rows = [row("ring", 100.0), row("builtin:gloo", 150.0)]     # ring busbw 10.49 GB/s
    add_ratios(rows)
    add_link_share(rows, 1e10)
    assert rows[0]["link"] == pytest.approx(1.048576)
    assert line(rows[0]).endswith("1.50x        1.05")
    assert header(False) == HEADER and header(True).splitlines()[1].endswith("busbw/link")
    assert "(1.05 of the link)" in footer(rows)[0]


def test_several_collectives_give_a_table_and_files_each():
    a = cli.parse(["--collective", "all", "--json", "out/r.json", "--plot", "p.png"])
    assert a.collectives == cli.COLLECTIVES
    b = cli.one(a, "broadcast")
    assert (b.collective, b.json, b.plot) == ("broadcast", "out/r-broadcast.json", "p-broadcast.png")
    two = cli.parse(["--collective", "reduce, sendrecv"])
    assert two.collectives == ("reduce", "sendrecv") and two.collective == "reduce"
    one = cli.parse(["--collective", "reduce", "--json", "r.json"])
    assert cli.one(one, "reduce").json == "r.json"


@pytest.mark.launched
@pytest.mark.timeout(120)
def test_two_rank_torchrun_bench_checks_and_writes_json(tmp_path):
    out_json = tmp_path / "r.json"
    _, out = run_torchrun(2, "-m", "ringflow.bench", "-b", "4K", "-e", "64K", "-f", "16", "-n",
                          "2", "-w", "1", "-c", "1", "--algorithm", "ring,rd,rhd,auto",
                          "--json", str(out_json), timeout=110,
                          env={"RINGFLOW_CACHE": str(tmp_path)})
    data = json.loads(out_json.read_text())
    labels = {r["label"] for r in data["rows"]}
    assert {"ring", "rd", "rhd", "builtin:gloo"} <= labels and any(l.startswith("auto:") for l in labels)
    for r in data["rows"]:
        for mode in ("oop", "ip"):
            assert r[mode]["wrong"] == 0, (r["label"], mode)
            assert r[mode]["p10_us"] <= r[mode]["time_us"] <= r[mode]["p90_us"]
    assert "peak busbw" in out and "vs-builtin" in out


def test_plot_writes_a_png(tmp_path):
    from ringflow.bench.plot import plot
    rows = [row("ring", 100.0, 1 << 20), row("ring", 300.0, 4 << 20),
            row("builtin:gloo", 150.0, 1 << 20), row("builtin:gloo", 320.0, 4 << 20)]
    path = tmp_path / "p.png"
    plot(rows, str(path), "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.launched
@pytest.mark.timeout(150)
def test_tune_writes_the_model_and_measured_points_that_auto_then_follows(tmp_path):
    _, out = run_torchrun(2, "-m", "ringflow.bench", "--tune", "-b", "4K", "-e", "64K", "-f", "4",
                          "-n", "2", "-w", "1", timeout=140, env={"RINGFLOW_CACHE": str(tmp_path)})
    model = json.loads((tmp_path / "tune-torch-gloo-n2-l2.json").read_text())
    assert model["alpha"] > 0 and model["beta"] > 0 and "all_reduce" in model["native"]
    for key in ("all_reduce/ring", "all_reduce/rd", "all_reduce/native", "reduce_scatter/ring",
                "all_gather/direct", "broadcast/tree", "reduce/native"):
        assert [b for b, _ in model["measured"][key]] == [4096, 16384, 65536], key
    # at a measured size auto picks the algorithm measured fastest there
    points = {k.split("/")[1]: dict(v) for k, v in model["measured"].items()
              if k.startswith("all_reduce/")}
    best = min(points, key=lambda alg: points[alg][65536])
    assert re.search(rf"all_reduce +64 KiB: {best} ", out), out[-3000:]
