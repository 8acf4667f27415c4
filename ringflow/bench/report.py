"""Rows like nccl-tests', the footer (peak busbw, ratios to the built-in) and the JSON record.

A row per (size, implementation); the last column is busbw(impl) / busbw(builtin)
for the in-place run (out-of-place where there is no in-place form), both
measured in the same run.
"""
from __future__ import annotations

import json

import numpy as np

HEADER = (
    "#                                                          out-of-place                       "
    "in-place\n"
    "#       size        count      type  redop   root  algorithm        time   algbw   busbw  "
    "#wrong      time   algbw   busbw  #wrong   pred(us)  vs-builtin\n"
    "#        (B)   (elements)                                           (us)  (GB/s)  (GB/s)"
    "              (us)  (GB/s)  (GB/s)")


def header(link: bool = False) -> str:
    """HEADER, with the busbw/link column when the link's rate is known."""
    if not link:
        return HEADER
    top, names, units = HEADER.split("\n")
    return "\n".join([top, names + "  busbw/link", units])


def _cells(res: dict | None) -> str:
    if res is None:
        return f"{'n/a':>9} {'':>7} {'':>7} {'':>7}"
    bad = "-" if res.get("wrong") is None else str(res["wrong"])
    return f"{res['time_us']:9.1f} {res['algbw']:7.2f} {res['busbw']:7.2f} {bad:>7}"


def ratio_mode(row: dict) -> str:
    """The mode ratios are quoted in: in-place when the collective has it."""
    return "ip" if row.get("ip") is not None else "oop"


def line(row: dict) -> str:
    """One printed row."""
    root = row["root"]
    pred = "-" if row["pred_us"] is None else f"{row['pred_us']:.1f}"
    ratio = "-" if row.get("ratio") is None else f"{row['ratio']:.2f}x"
    link = "" if "link" not in row else f" {row['link']:11.2f}"
    return (f"{row['size']:12d} {row['count']:12d} {row['type']:>9} {row['redop']:>6} {root:>6}  "
            f"{row['label']:<12} {_cells(row.get('oop'))} {_cells(row.get('ip'))} "
            f"{pred:>10} {ratio:>11}{link}")


def add_ratios(rows: list[dict]) -> None:
    """Set row['ratio'] = busbw / busbw of the (first) builtin row of the same size, same run."""
    base = {}
    for r in rows:                                  # the first builtin of each size is the base
        if r["label"].startswith("builtin"):
            base.setdefault(r["size"], r)
    for r in rows:
        b = base.get(r["size"])
        mode = ratio_mode(r)
        if b is not None and b.get(mode) and r.get(mode):
            r["ratio"] = b[mode]["time_us"] / r[mode]["time_us"]


def avg_busbw(rows: list[dict]) -> str:
    """nccl-tests' closing line: bus bandwidth averaged over every size and mode measured."""
    values = [r[m]["busbw"] for r in rows for m in ("oop", "ip") if r.get(m)]
    return f"{np.mean(values):.4f}" if values else "n/a"


def add_link_share(rows: list[dict], link_Bps: float) -> None:
    """Set row['link'] = busbw / the link's rate (bytes/s), in the mode ratios are quoted in."""
    for r in rows:
        res = r.get(ratio_mode(r))
        if res:
            r["link"] = res["busbw"] * 1e9 / link_Bps


def footer(rows: list[dict]) -> list[str]:
    """Peak busbw per implementation, and min/median ratio to the builtin; then nccl-tests'
    "Avg bus bandwidth" per implementation ("auto" counts every algorithm it ran)."""
    out = []
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label and r.get(ratio_mode(r))]
        if not mine:
            continue
        best = max(mine, key=lambda r: r[ratio_mode(r)]["busbw"])
        text = (f"# {label:<12} peak busbw {best[ratio_mode(best)]['busbw']:.2f} GB/s at "
                f"{human(best['size'])}")
        if "link" in best:
            text += f" ({best['link']:.2f} of the link)"
        ratios = [r["ratio"] for r in mine if r.get("ratio") is not None]
        if ratios and not label.startswith("builtin"):
            worst = min(mine, key=lambda r: r.get("ratio") or np.inf)
            text += (f"; vs builtin: median {np.median(ratios):.2f}x, min {min(ratios):.2f}x "
                     f"at {human(worst['size'])}")
        out.append(text)
    out += auto_versus_best(rows)
    wrong = sum(r[m]["wrong"] or 0 for r in rows for m in ("oop", "ip") if r.get(m))
    checked = any(r[m].get("wrong") is not None for r in rows for m in ("oop", "ip") if r.get(m))
    out.append(f"# Out of bounds values : {wrong} {'OK' if wrong == 0 else 'FAILED'}" if checked
               else "# Out of bounds values : not checked (-c 0)")
    for name in dict.fromkeys(r["label"].split(":", 1)[0] for r in rows):
        mine = [r for r in rows if r["label"].split(":", 1)[0] == name]
        out.append(f"# Avg bus bandwidth    : {avg_busbw(mine)}  ({name})")
    return out


def auto_versus_best(rows: list[dict]) -> list[str]:
    """Per size where auto ran beside others: what auto picked, and its time as a share of the
    fastest row's (auto's own included, the built-in too): 1.00 when auto picked the best."""
    out = []
    for size in dict.fromkeys(r["size"] for r in rows):
        here = [r for r in rows if r["size"] == size and r.get(ratio_mode(r))]
        auto = next((r for r in here if r["label"].startswith("auto:")), None)
        if auto is None or len(here) < 2:
            continue
        best = min(here, key=lambda r: r[ratio_mode(r)]["time_us"])
        share = best[ratio_mode(best)]["time_us"] / auto[ratio_mode(auto)]["time_us"]
        out.append(f"# auto at {human(size)}: picked {auto['label'][5:]}, {share:.2f} of the "
                   f"best ({best['label']})")
    return out


def human(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def write_json(path: str, meta: dict, rows: list[dict]) -> None:
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
