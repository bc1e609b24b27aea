#!/usr/bin/env python3
"""Patient access accounting on against off, from `bench/run.sh --only
accounting` records in results.jsonl: per data layout, workload and client count, the
median over the rounds of each round's median latency (and throughput),
with accounting on (`patients`) and off (`none-benchmark-only`), the
difference and the verdict against the targets (analytic ≤ 5 %, point
lookups ≤ 0.1 ms).

    bench/accounting-summary.py RESULTS_JSONL

Prints a markdown table on stdout.
"""
import json
import re
import statistics
import sys

TAG = re.compile(r"^lakeward-accounting-(patients|none-benchmark-only)-r(\d+)$")


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[0]
    runs = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            m = TAG.match(r.get("system", ""))
            if not m or r.get("failed") or r.get("median_ms") is None:
                continue
            key = (r.get("layout", "datagen"), r["workload"], int(r.get("clients", 1)))
            runs.setdefault(key, {}).setdefault(m.group(1), []).append(r)
    if not runs:
        print("no accounting records", file=sys.stderr)
        return 1
    out = [
        "| layout | workload | clients | rounds | median ms, off | median ms, on | difference | "
        "per s, off | per s, on | target | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for (layout, workload, clients), by in sorted(runs.items()):
        on, off = by.get("patients", []), by.get("none-benchmark-only", [])
        if not on or not off:
            continue
        m_on = statistics.median(r["median_ms"] for r in on)
        m_off = statistics.median(r["median_ms"] for r in off)
        t_on = statistics.median(r["per_s"] or 0 for r in on)
        t_off = statistics.median(r["per_s"] or 0 for r in off)
        point = workload == "point"
        diff = m_on - m_off
        if point:
            target = "≤ 0.1 ms"
            ok = diff <= 0.1
            shown = f"{diff:+.3f} ms"
        else:
            target = "≤ 5 %"
            ok = diff <= 0.05 * m_off
            shown = f"{diff:+.1f} ms ({diff / m_off * 100:+.1f} %)"
        out.append(
            f"| {layout} | {workload} | {clients} | {min(len(on), len(off))} | {m_off:.2f} | {m_on:.2f} | "
            f"{shown} | {t_off:,.1f} | {t_on:,.1f} | {target} | {'met' if ok else 'NOT met'} |"
        )
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
