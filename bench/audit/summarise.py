#!/usr/bin/env python3
"""Summarise a bench/audit/patient-access.sh run: psql's output (blocks
opened by `@@ label argument`, rows, then psql's `Time: … ms`) into one
JSON line per statement and a markdown section for docs/benchmarks.md."""

import argparse
import json
import re
import statistics
import sys

TIME = re.compile(r"^Time: ([0-9.]+) ms")


def parse(path):
    blocks, cur = [], None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("@@ "):
            _, label, arg = line.split(" ", 2)
            cur = {"label": label, "arg": arg, "rows": [], "ms": None}
            blocks.append(cur)
            continue
        if cur is None:
            continue
        m = TIME.match(line)
        if m:
            cur["ms"] = float(m.group(1))
        elif line != "":
            cur["rows"].append(line)
    return blocks


def fmt_ms(v):
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def mmm(values, f=str):
    values = sorted(values)
    if not values:
        return "–"
    if len(values) == 1:
        return f(values[0])
    return f"{f(values[0])} / {f(statistics.median(values))} / {f(values[-1])}"


def human_bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--fill-json", required=True)
    ap.add_argument("--fill-time", default="")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--date", default="")
    ap.add_argument("--cache", default="")
    ap.add_argument("--rss-ready-kib", type=int, default=0)
    ap.add_argument("--rss-peak-kib", type=int, default=0)
    ap.add_argument("--ready-s", type=float, default=0.0)
    ap.add_argument("--table", default="")
    ap.add_argument("--query-s", type=float, default=0.0)
    ap.add_argument("--load", default="")
    ap.add_argument("--server-cpu-s", type=float, default=0.0)
    ap.add_argument("--index", default="")
    ap.add_argument("--index-time", default="")
    ap.add_argument("--index-bytes", type=int, default=0)
    ap.add_argument("--index-files", type=int, default=0)
    ap.add_argument("--jsonl", required=True)
    ap.add_argument("--explain", required=True)
    a = ap.parse_args()

    fill = json.loads(a.fill_json.strip().splitlines()[-1])
    blocks = parse(a.out)
    with open(a.jsonl, "w", encoding="utf-8") as out:
        out.write(json.dumps({"kind": "fill", **fill, "time": a.fill_time}) + "\n")
        for b in blocks:
            rec = {"kind": "query", "label": b["label"], "arg": b["arg"], "ms": b["ms"]}
            if b["label"] == "explain":
                rec["plan"] = b["rows"]
            else:
                rec["rows"] = len(b["rows"])
                rec["values"] = b["rows"][:3] if len(b["rows"]) <= 3 else None
            out.write(json.dumps(rec) + "\n")
    by = {}
    for b in blocks:
        by.setdefault(b["label"], []).append(b)
    with open(a.explain, "w", encoding="utf-8") as f:
        for b in by.get("explain", []):
            f.write("\n".join(b["rows"]) + "\n")

    def cols(b):
        return b["rows"][0].split("|") if b["rows"] else []

    n = fill["statements"]
    lines = []
    p = lines.append
    p(f"## `audit.patient_access` over {n:,} statements (`bench/audit/patient-access.sh`)")
    p("")
    p(
        f"Measured {a.date} (commit `{a.commit}`), bench-release build, on one machine (2 cores, "
        "23 GiB RAM): the auditor over TLS with psql (`\\timing`, so each time is one statement's "
        "round trip on an open connection), `lakeward serve` with the demo data and "
        "the generated history as its audit table."
    )
    p("")
    shares = fill.get("shares", {})
    p(
        f"**History** (`lakeward-baseline audit-fill`, seed {fill['seed']}): {n:,} statements = "
        f"{fill['records']:,} chained records over {fill['years']:g} years and {fill['patients']:,} "
        f"patients; {fill['point']:,} point reads ({fill['point_multi']:,} of them of 2–3 patients), "
        f"{fill['cohort']:,} cohorts (log-uniform 10–5,000 patients), {fill['aggregate']:,} aggregates "
        f"over all patients but a random {shares.get('aggregate_gap', 0) * 100:g} %; "
        f"{fill['patient_refs']:,} (statement, patient) pairs. Written in {fill['seconds']:,.0f} s "
        f"({a.fill_time or 'no /usr/bin/time'}); "
        f"{fill['commits']} commit(s), {fill['parquet_files']} Parquet files, "
        f"**{human_bytes(fill['table_bytes'])} on disk**, of which the patient sets are "
        f"{human_bytes(fill['set_text_bytes'])} of base64 before compression "
        f"({human_bytes(fill['set_text_aggregate_bytes'])} the aggregates')."
    )
    p("")
    if a.index:
        p(
            f"**Patient index** (`lakeward audit index`, once, as after an upgrade): {a.index.strip()} "
            f"({a.index_time or 'no /usr/bin/time'}); {a.index_files:,} Parquet files, "
            f"**{human_bytes(a.index_bytes)} on disk**."
        )
        p("")
    p(
        f"Server: ready {a.ready_s:.1f} s after start, RSS {a.rss_ready_kib / 1024:,.0f} MiB; "
        f"peak RSS over the run {a.rss_peak_kib / 1024:,.0f} MiB. Page cache before the cold query: {a.cache}. "
        f"The {sum(1 for b in blocks)} statements below took {a.query_s:,.0f} s of wall time and "
        f"{a.server_cpu_s:,.0f} s of the server's CPU time; load average (1, 5, 15 min) before / after: {a.load}."
    )
    p("")
    p("| query | runs | rows (min / median / max) | ms (min / median / max) |")
    p("|---|---:|---:|---:|")

    def row(label, title, rows_of=lambda b: len(b["rows"])):
        bs = by.get(label, [])
        if not bs:
            return
        p(
            f"| {title} | {len(bs)} | {mmm([rows_of(b) for b in bs], lambda v: f'{v:,.0f}')} | "
            f"{mmm([b['ms'] for b in bs if b['ms'] is not None], fmt_ms)} |"
        )

    row("cold", "`SELECT * … WHERE patient_id = X`, cold (first statement after start)")
    row("warm", "`SELECT * … WHERE patient_id = X`, warm, random patients")
    row("recent", "`… WHERE patient_id = X AND ts >= now() - interval '90 days'`")
    row("returned", "`… WHERE patient_id = X AND disclosure = 'returned'`")
    row(
        "in3",
        "`SELECT count(*) … WHERE patient_id IN (3 ids)` (rows = the count)",
        lambda b: int(b["rows"][0]) if b["rows"] else 0,
    )
    p("")

    p("### Where the time goes")
    p("")
    total = by.get("all_records", [])
    if total and total[0]["rows"]:
        c = cols(total[0])
        p(
            f"`audit.access_log` holds {int(c[0]):,} records; {int(c[1]):,} carry a returned set, "
            f"{int(c[2]):,} an aggregated set."
        )
        p("")
    p(
        "Per patient: the completion records whose bounds hold it (`patient_id_min <= X AND "
        "patient_id_max >= X`), counted over `audit.access_log` reading only the bound columns "
        "(the log rows `audit.patient_access` reads before matching them with the index), with "
        "SETS_COST=1 also the patient set text they hold (what answering without the index "
        "decodes), then `count(*)` of `audit.patient_access` (rows not sent)."
    )
    p("")
    p(
        "| patient | records in bounds | of them aggregated sets | set text read | count, bounds only ms "
        "| count + set text ms | patient_access count(*) ms | patient_access rows |"
    )
    p("|---:|---:|---:|---:|---:|---:|---:|---:|")
    pats = [b["arg"] for b in by.get("bounds", [])]
    for pat in pats:
        b1 = next(b for b in by["bounds"] if b["arg"] == pat)
        b2 = next((b for b in by.get("bounds_sets", []) if b["arg"] == pat), None)
        b3 = next((b for b in by.get("rows_only", []) if b["arg"] == pat), None)
        recs = int(b1["rows"][0]) if b1["rows"] else 0
        agg = text = "–"
        if b2 and b2["rows"]:
            c = cols(b2)
            agg = f"{int(c[2]):,}"
            text = human_bytes(int(c[3]) + int(c[4]))
        p(
            f"| {int(pat):,} | {recs:,} | {agg} | {text} | {fmt_ms(b1['ms'])} | "
            f"{fmt_ms(b2['ms'] if b2 else None)} | {fmt_ms(b3['ms'] if b3 else None)} | "
            f"{format(int(b3['rows'][0]), ',') if b3 and b3['rows'] else '–'} |"
        )
    p("")
    ex = by.get("explain", [])
    if ex:
        p(f"EXPLAIN ANALYZE of one lookup ({fmt_ms(ex[0]['ms'])} ms):")
        p("")
        p("```")
        for r in ex[0]["rows"]:
            p(r.split("|", 1)[-1] if "|" in r else r)
        p("```")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
