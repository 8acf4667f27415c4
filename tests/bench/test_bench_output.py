"""What ringflow-bench prints, as a nccl-tests user expects it: checks on by default, nccl-tests'
closing lines, redop/root as nccl-tests shows them, where files went, and a readable plot."""
import json

import pytest
from matplotlib.ticker import FixedLocator

from ringflow.bench import args as cli
from ringflow.bench.report import footer
from tests.launchers import run_torchrun
from tests.bench.test_bench_cli import row


def test_check_is_on_by_default_and_can_be_turned_off():
    assert cli.parse([]).check == 1
    assert cli.parse(["-c", "0"]).check == 0


def test_footer_has_nccl_tests_closing_lines():
    rows = [row("auto:ring", 100.0, 1 << 20), row("auto:rhd", 200.0, 4 << 20),
            row("builtin:gloo", 150.0, 1 << 20)]
    foot = footer(rows)
    assert "# Out of bounds values : 0 OK" in foot
    avg = [f for f in foot if f.startswith("# Avg bus bandwidth    : ")]
    assert [f.split("(")[-1] for f in avg] == ["auto)", "builtin)"]   # auto: one line for all picks
    auto = float(avg[0].split(":")[1].split()[0])
    assert auto == pytest.approx(((1 << 20) / 100.0 / 1e3 + (4 << 20) / 200.0 / 1e3) / 2, rel=1e-4)
    rows[0]["oop"] = dict(rows[0]["oop"], wrong=3)
    assert "# Out of bounds values : 3 FAILED" in footer(rows)


def test_footer_says_what_auto_picked_and_how_far_from_the_best():
    rows = [row("auto:rhd", 200.0, 1 << 20), row("ring", 150.0, 1 << 20), row("staged", 100.0, 1 << 20),
            row("builtin:gloo", 300.0, 1 << 20), row("auto:ring", 50.0, 4 << 20),
            row("ring", 55.0, 4 << 20), row("auto:ring", 10.0, 8 << 20)]
    lines = [f for f in footer(rows) if f.startswith("# auto at")]
    assert lines == ["# auto at 1 MiB: picked rhd, 0.50 of the best (staged)",
                     "# auto at 4 MiB: picked ring, 1.00 of the best (auto:ring)"]


def test_plot_one_auto_line_sized_ticks_and_visible_model(tmp_path):
    import matplotlib.pyplot as plt
    from ringflow.bench import plot as plot_mod
    rows = [row("auto:ring", 100.0, 1 << 20), row("auto:rhd", 300.0, 4 << 20),
            row("builtin:gloo", 150.0, 1 << 20), row("builtin:gloo", 320.0, 4 << 20)]
    rows[0]["pred_us"] = 1e-3                   # an untuned model predicting absurd bandwidth
    seen = {}
    real_savefig = plt.Figure.savefig

    def grab(fig, *a, **k):
        ax = fig.axes[0]
        seen["lines"] = [l.get_label() for l in ax.get_lines()]
        seen["ylim"] = ax.get_ylim()
        seen["ticks"] = [t.get_text() for t in ax.get_xticklabels()]
        seen["locator"] = ax.xaxis.get_major_locator()
        return real_savefig(fig, *a, **k)
    plt.Figure.savefig = grab
    try:
        plot_mod.plot(rows, str(tmp_path / "p.png"), "t")
    finally:
        plt.Figure.savefig = real_savefig
    assert seen["lines"].count("auto") == 1 and "auto (model)" in seen["lines"]
    best = max(r["ip"]["busbw"] for r in rows)
    assert seen["ylim"][1] == pytest.approx(best * 1.3)
    assert isinstance(seen["locator"], FixedLocator)
    assert list(seen["locator"].tick_values(0, 1)) == [1 << 20, 4 << 20]


@pytest.mark.launched
@pytest.mark.timeout(120)
def test_broadcast_rows_say_none_and_root_and_files_are_named(tmp_path):
    out_json, out_png = tmp_path / "b.json", tmp_path / "b.png"
    _, out = run_torchrun(2, "-m", "ringflow.bench", "--collective", "broadcast", "-r", "1",
                          "-b", "4K", "-e", "4K", "-n", "2", "-w", "1", "--algorithm", "auto",
                          "--json", str(out_json), "--plot", str(out_png), timeout=110,
                          env={"RINGFLOW_CACHE": str(tmp_path)})
    data = json.loads(out_json.read_text())
    assert {(r["redop"], r["root"]) for r in data["rows"]} == {("none", 1)}
    table = [l for l in out.splitlines() if l.strip().startswith("4096")]
    assert table and all(l.split()[3:5] == ["none", "1"] for l in table), table
    assert f"# wrote {out_json}" in out and f"# wrote {out_png}" in out
    assert "--tune" in out                      # no tune in this cache: the hint says what to run
    assert "# Out of bounds values : 0 OK" in out
