"""Where a collective's time goes, from a RINGFLOW_TRACE folder: waiting, reducing, the rest.

For every rank's trace (trace-rank<R>.json) and every collective span, sums the waits ("wait
rank P" spans) and the reductions ("reduce slice" spans) inside it; the rest is posting
messages and Python. Prints, per rank, verb and size, the median call and each part's share
of all calls' time.

    RINGFLOW_TRACE=/tmp/tl RINGFLOW_TRANSPORT=torch torchrun --nproc_per_node=2 -m ringflow.bench \\
        -b 1M -e 4M -f 4 -n 20 -w 2 --modes ip --algorithm ring --builtin none
    python benchmarks/collectives/trace_shares.py /tmp/tl
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

VERBS = ("all_reduce", "reduce_scatter", "all_gather", "broadcast", "reduce")


def shares(events: list[dict]) -> dict:
    """{(verb, bytes): [total, waiting, reducing, calls]} in microseconds, plus medians."""
    spans = sorted((e for e in events if e.get("ph") == "X"), key=lambda e: e["ts"])
    calls = [e for e in spans if e["name"].split(" #")[0] in VERBS]
    out: dict = defaultdict(lambda: {"total": 0.0, "wait": 0.0, "reduce": 0.0, "durs": []})
    for c in calls:
        t0, t1 = c["ts"], c["ts"] + c["dur"]
        inner = [e for e in spans if t0 <= e["ts"] <= t1 and e is not c]
        row = out[(c["name"].split(" #")[0], (c.get("args") or {}).get("bytes"))]
        row["total"] += c["dur"]
        row["durs"].append(c["dur"])
        row["wait"] += sum(e["dur"] for e in inner if e["name"].startswith("wait"))
        row["reduce"] += sum(e["dur"] for e in inner if e["name"].startswith("reduce slice"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    for path in sorted(p.parse_args().folder.glob("trace-rank*.json")):
        for (verb, nbytes), r in shares(json.loads(path.read_text())["traceEvents"]).items():
            rest = r["total"] - r["wait"] - r["reduce"]
            print(f"{path.stem} {verb} {nbytes} B: {len(r['durs'])} calls, median "
                  f"{statistics.median(r['durs']):.0f} us; waiting {r['wait'] / r['total']:.0%}, "
                  f"reducing {r['reduce'] / r['total']:.0%}, posting and the rest "
                  f"{rest / r['total']:.0%}")


if __name__ == "__main__":
    main()
