"""Medians over launches of ringflow-bench JSON files: the tables of the README's "Across hosts".

    python benchmarks/cluster/summary.py run1.json run2.json run3.json
    python benchmarks/cluster/summary.py --plot h2x2.png run1.json run2.json run3.json

One row per (size, implementation): busbw and busbw/link medians over launches, the median
of the per-launch ratio to the built-in (same launch, interleaved), and each row's time as a
share of the fastest row of its launch, and of the fastest of ringflow's rows (the built-in
left out: what auto chooses from), medians over launches; for auto the algorithms it picked.
"Auto" rows are grouped under "auto" whatever they picked (the pick is listed).
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def human(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"


def mode(row: dict) -> str:
    return "ip" if row.get("ip") else "oop"


def collect(paths: list[str]) -> tuple[dict, dict]:
    """({(size, label): {"busbw": [...], ...}}, meta of the first file)."""
    cells: dict = defaultdict(lambda: defaultdict(list))
    meta = None
    for path in paths:
        doc = json.load(open(path))
        meta = meta or doc["meta"]
        for size in dict.fromkeys(r["size"] for r in doc["rows"]):
            here = [r for r in doc["rows"] if r["size"] == size and r.get(mode(r))]
            best = min(r[mode(r)]["time_us"] for r in here)
            ours = min((r[mode(r)]["time_us"] for r in here
                        if not r["label"].startswith("builtin")), default=None)
            for r in here:
                label = "auto" if r["label"].startswith("auto:") else r["label"]
                cell = cells[(size, label)]
                cell["busbw"].append(r[mode(r)]["busbw"])
                cell["ratio"].append(r.get("ratio"))
                cell["link"].append(r.get("link"))
                cell["share"].append(best / r[mode(r)]["time_us"])
                cell["ours"].append(ours / r[mode(r)]["time_us"] if ours else None)
                cell["pick"].append(r["label"][5:] if label == "auto" else "")
    return cells, meta


def med(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.2f}" if values else "-"


def table(cells: dict) -> list[str]:
    out = ["| size | implementation | busbw GB/s | busbw / link | vs gloo | share of best | "
           "share of ringflow's best | auto picked |",
           "|---|---|---|---|---|---|---|---|"]
    for (size, label), c in cells.items():
        picks = "/".join(dict.fromkeys(c["pick"])) if label == "auto" else ""
        out.append(f"| {human(size)} | {label} | {med(c['busbw'])} | {med(c['link'])} | "
                   f"{med(c['ratio'])} | {med(c['share'])} | {med(c['ours'])} | {picks} |")
    return out


def median_rows(cells: dict, first: str) -> list[dict]:
    """The rows of launch ``first`` with each row's busbw replaced by its median over launches
    (``cells`` from ``collect``; what ringflow-bench --plot draws, for several launches)."""
    rows = [r for r in json.load(open(first))["rows"] if r.get(mode(r))]
    for r in rows:
        label = "auto" if r["label"].startswith("auto:") else r["label"]
        r[mode(r)]["busbw"] = statistics.median(cells[(r["size"], label)]["busbw"])
    return rows


def main() -> None:
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--plot"]:
        out, args = args[1], args[2:]
    cells, meta = collect(args)
    title = (f"{meta['transport']}, {meta['ranks']} ranks ({meta['local_size']} per host), "
             f"{meta['datatype']} {meta['op']}, medians of {len(args)} launches")
    print(title)
    print("\n".join(table(dict(sorted(cells.items(), key=lambda kv: kv[0][0])))))
    if out:
        from ringflow.bench.plot import plot
        plot(median_rows(cells, args[0]), out, title, meta.get("link_rate_Bps"))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
