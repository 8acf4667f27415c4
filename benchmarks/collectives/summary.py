"""Summarise ringflow-bench JSON runs into the markdown table of benchmarks/results/collectives.md.

    .venv/bin/python benchmarks/collectives/summary.py benchmarks/results/raw > tables.md

Files are grouped by (transport, ranks, collective); a cell is the median over
launches of the busbw, and a ratio is the median over launches of
busbw(ringflow) / busbw(built-in) measured in the same launch.
"""
from __future__ import annotations

import collections
import json
import statistics
import sys
from pathlib import Path

# (transport, builtin label) -> busbw ratio the issue asks for, for (1-128 MiB, 4-64 KiB latency)
TARGETS = {("torch-gloo", "builtin:gloo"): 1.0, ("mpi", "builtin:mpi"): 0.9,
           ("shm", "builtin:gloo"): 3.0, ("shm", "builtin:mpi"): 0.7}
LATENCY_TARGET = 1 / 1.5          # time <= 1.5x the built-in, as a busbw ratio
MIB = 1 << 20
PICKS: dict = {}                  # (size, algorithm auto ran) seen in the current table


def human(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // 1024} KiB"


def load(folder: Path) -> dict:
    """{(transport, ranks, collective): [(run name, rows), ...]}"""
    groups = collections.defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        meta = data["meta"]
        key = (meta["transport"].replace("/", "-"), meta["ranks"], meta["collective"])
        groups[key].append((path.stem, data["rows"]))
    return groups


def mode_of(row: dict) -> str:
    return "ip" if row.get("ip") else "oop"


def cells(runs) -> tuple[dict, dict]:
    """busbw[(size, label)] -> [per launch], ratio[(size, label, base)] -> [per launch]."""
    bw, ratio = collections.defaultdict(list), collections.defaultdict(list)
    for _, rows in runs:
        by_size = collections.defaultdict(dict)
        for r in rows:
            res = r[mode_of(r)]
            label = r["label"]
            if label.startswith("auto:"):            # one "auto" row; what it ran is noted
                PICKS[(r["size"], label.split(":", 1)[1])] = True
                label = "auto"
            by_size[r["size"]][label] = (res["busbw"], res["time_us"])
        for size, labels in by_size.items():
            for label, (v, t) in labels.items():
                bw[(size, label)].append(v if size >= MIB else t)
                for base, (b, bt) in labels.items():
                    if base.startswith("builtin") and not label.startswith("builtin"):
                        ratio[(size, label, base)].append(bt / t)   # = busbw ratio
    return bw, ratio


def table(key, runs) -> tuple[list[str], dict]:
    PICKS.clear()
    bw, ratio = cells(runs)
    sizes = sorted({s for s, _ in bw})
    labels = sorted(dict.fromkeys(l for _, l in bw), key=lambda l: l.startswith("builtin"))
    ours = [l for l in labels if not l.startswith("builtin")]
    bases = [l for l in labels if l.startswith("builtin")]
    pairs = [(l, b) for l in ours for b in bases]
    launches = len({name.rsplit("-L", 1)[-1] for name, _ in runs})
    head = (["size"] + labels + [f"{l} / {b.split(':')[1]}" for l, b in pairs] +
            (["auto ran"] if "auto" in labels else []))
    lines = [f"### {key[2]}, transport {key[0]}, {key[1]} ranks ({launches} launch(es); "
             "median time in us below 1 MiB, median busbw in GB/s from 1 MiB; ratios = busbw "
             "ratio in the same run)",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    med = {}
    for s in sizes:
        row = [human(s)]
        fmt = "{:.2f}" if s >= MIB else "{:.0f}"
        row += [fmt.format(statistics.median(bw[(s, l)])) if bw.get((s, l)) else "-" for l in labels]
        for l, b in pairs:
            vals = ratio.get((s, l, b))
            med[(s, l, b)] = statistics.median(vals) if vals else None
            row.append(f"{med[(s, l, b)]:.2f}x" if vals else "-")
        if "auto" in labels:
            row.append(", ".join(sorted(a for (size, a) in PICKS if size == s)) or "-")
        lines.append("| " + " | ".join(row) + " |")
    return lines + [""], med


def verdicts(key, med: dict) -> list[str]:
    """Per target: the worst size of the best ringflow algorithm per size, and of the ring alone."""
    out = []
    for (tr, base), want in TARGETS.items():
        if tr != key[0]:
            continue
        for name, lo, hi, goal in (("1-128 MiB", MIB, 128 * MIB, want),
                                   ("4-64 KiB latency", 4096, 65536, LATENCY_TARGET)):
            best = {}
            for (s, label, b), v in med.items():
                if b == base and lo <= s <= hi and v is not None and v > best.get(s, ("", 0))[1]:
                    best[s] = (label, v)
            if not best:
                continue
            worst = min(best, key=lambda s: best[s][1])

            def low(alg):
                vals = {s: v for (s, l, b), v in med.items()
                        if l == alg and b == base and lo <= s <= hi and v is not None}
                return (min(vals.values()), human(min(vals, key=vals.get))) if vals else None
            auto, ring = low("auto"), low("ring")
            judged = auto or (best[worst][1], human(worst))
            ok = "MET" if judged[0] >= goal else "missed"
            out.append(f"- {key[2]}, {key[1]} ranks, {tr} vs {base}, {name}: need >= {goal:.2f}x; "
                       + (f"auto: worst {auto[0]:.2f}x at {auto[1]} -> **{ok}**; " if auto else
                          f"best algorithm per size: worst {judged[0]:.2f}x -> **{ok}**; ")
                       + (f"ring alone: worst {ring[0]:.2f}x at {ring[1]}; " if ring else "")
                       + f"best per size: worst {best[worst][1]:.2f}x at {human(worst)} "
                       f"({best[worst][0]})")
    return out


def main(folder: str) -> None:
    groups = load(Path(folder))
    summary = []
    for key in sorted(groups, key=lambda k: (k[2], k[0], k[1])):
        lat = [(n, r) for n, r in groups[key]]
        lines, med = table(key, lat)
        print("\n".join(lines))
        summary += verdicts(key, med)
    print("### Targets\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/raw")
