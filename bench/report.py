#!/usr/bin/env python3
"""Results of bench/run.sh: one JSON object per measurement in results.jsonl,
and the generated part of docs/benchmarks.md rendered from them.

  report.py pgbench  --system S --workload W --role R --mode M --clients C --stdout F --logs PREFIX
  report.py baseline --workload W            (reads `lakeward-baseline` JSON on stdin)
  report.py record   --system S --workload W [--key value ...]
  report.py render   --results F --outdir D --doc docs/benchmarks.md
  report.py layouts  --results F [--results F ...] [--rewrite rewrite-foreign.jsonl]

Every record carries the data layout lakeward read (`layout`: `datagen`, or
`foreign` for bench/run.sh --layout foreign; BENCH_LAYOUT in the
environment, `datagen` when unset). `render` keeps the layout of the run's
meta record; `layouts` prints the point lookups of several runs side by side.
"""

import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys

BEGIN = "<!-- bench/run.sh: begin (generated, do not edit by hand) -->"
END = "<!-- bench/run.sh: end -->"


def emit(rec):
    """Print one results.jsonl record, stamped with the data layout."""
    rec.setdefault("layout", os.environ.get("BENCH_LAYOUT") or "datagen")
    print(json.dumps(rec))


def pct(values, p):
    """Nearest-rank percentile."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-len(v) * p // 1)) - 1))
    return v[k]


def parse_flags(argv):
    out = {}
    i = 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--"):
            raise SystemExit(f"unexpected argument {key}")
        key = key[2:].replace("-", "_")
        val = argv[i + 1] if i + 1 < len(argv) else ""
        i += 2
        if val == "null":
            out[key] = None
            continue
        try:
            out[key] = int(val)
        except ValueError:
            try:
                out[key] = float(val)
            except ValueError:
                out[key] = val
    return out


def cmd_pgbench(f):
    text = open(f.pop("stdout")).read()
    prefix = f.pop("logs")
    lat_ms = []
    for path in glob.glob(prefix + ".*"):
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    lat_ms.append(int(parts[2]) / 1000.0)
    tps = re.search(r"^tps = ([0-9.]+)", text, re.M)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    rec = dict(f)
    rec.update(
        n=len(lat_ms),
        median_ms=statistics.median(lat_ms) if lat_ms else None,
        p99_ms=pct(lat_ms, 0.99),
        per_s=float(tps.group(1)) if tps else None,
        failed=int(failed.group(1)) if failed else 0,
    )
    emit(rec)


def cmd_baseline(f):
    for line in sys.stdin:
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        rec["system"] = "datafusion"
        rec["workload"] = f["workload"]
        rec.setdefault("role", "-")
        rec["mode"] = "in-process"
        emit(rec)


def cmd_record(f):
    if "failed" in f:
        try:
            tail = open(f["failed"]).read().strip().splitlines()[-3:]
        except OSError:
            tail = []
        # pgbench's last lines name the SQLSTATE/message, never data values.
        f["failed"] = " / ".join(tail)[:300]
    if f.get("workload") == "export" and f.get("rows") and f.get("seconds"):
        f["rows_per_s"] = f["rows"] / f["seconds"]
    emit(f)


# --- rendering -----------------------------------------------------------------


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = ""
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "kernel": platform.release(),
        "postgres": sh("/usr/lib/postgresql/15/bin/postgres", "--version"),
        "rustc": sh("rustc", "--version"),
        "commit": sh("git", "rev-parse", "--short", "HEAD"),
    }


def fmt(v, digits=2):
    if v is None:
        return "—"
    if isinstance(v, float):
        if v >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.{digits}f}×"


def render(results, outdir):
    recs = [json.loads(l) for l in open(results) if l.strip()]
    meta = next((r for r in recs if r.get("workload") == "meta"), {})
    # One layout per document (records written before layouts existed have none).
    layout = meta.get("layout", "datagen")
    recs = [r for r in recs if r.get("layout", "datagen") == layout]
    timing = next((r for r in recs if r.get("workload") == "timing"), {})

    def find(**kw):
        for r in recs:
            if all(r.get(k) == v for k, v in kw.items()):
                return r
        return None

    m = machine()
    out = []
    w = out.append
    w(BEGIN)
    w("")
    w("## lakeward against PostgreSQL and plain DataFusion (`bench/run.sh`)")
    w("")
    layout_arg = "" if layout == "datagen" else f" --layout {layout}"
    w(
        f"One run of `bench/run.sh --patients {meta.get('patients', '?')}{layout_arg}` "
        f"(commit `{meta.get('commit') or m['commit']}`), everything on one machine: {m['cpu']}, "
        f"{m['cores']} cores, {m['memory']} RAM, Linux {m['kernel']}; {m['postgres']}; "
        f"{m['rustc']}. lakeward is the bench-release build (release optimisation without link-time optimisation, `Cargo.toml`) with TLS, JWT authentication, "
        "the demo policy and the fsync'd audit log on. PostgreSQL holds the same rows "
        "(copied from the Delta tables) with the same policy written natively "
        "(`bench/postgres/`: per-role security-barrier views for the masks, the site filter "
        "and the consent predicate, which measured faster than row-level security and needs "
        "no grant on the raw tables; pgcrypto HMAC pseudonyms; b-tree indexes on every key), "
        "over TLS with SCRAM passwords. *DataFusion* is the same DataFusion "
        "in-process over the same Delta tables with the same scan and no policy, no wire "
        "protocol and no audit (`lakeward-baseline`): what enforcement and the proxy cost. "
        "*deltalake scan* is plain DataFusion again, reading through deltalake's stock table "
        "provider instead of lakeward's snapshot scan: what a user of DataFusion and "
        "delta-rs would get without lakeward."
    )
    w("")
    if timing:
        build_s, setup_s = timing.get('build_s', 0), timing.get('setup_s', 0)
        build = (
            "no build (a prebuilt binary, `LAKEWARD_BIN`)"
            if build_s == 0
            else f"build {build_s} s"
        )
        setup = (
            "the data and the loaded PostgreSQL cluster of an earlier run in the same `BENCH_DIR`"
            if setup_s <= 5
            else f"data generation and PostgreSQL load {setup_s} s"
        )
        w(
            f"The run took {timing.get('total_s', 0) // 60} min {timing.get('total_s', 0) % 60} s: "
            f"{build}, {setup}, "
            f"workloads the rest. Point lookups ran {meta.get('seconds', '?')} s per "
            f"configuration, the audit comparison in 3 alternating rounds of that length; analytic queries "
            f"{meta.get('runs', '?')} timed runs after one warm-up."
        )
        w("")

    # Targets.
    w("### Targets")
    w("")
    w("| target | measured | |")
    w("|---|---|---|")
    targets = []

    def target(name, measured, ok):
        targets.append((name, measured, "met" if ok else ("missed" if ok is not None else "not measured")))

    queries = ["claims_by_payer_month", "hba1c_cohort", "top_dx_per_site"]
    roles = ["analyst", "clinician", "researcher"]
    over = []
    speed = []
    for q in queries:
        df = find(system="datafusion", workload=q)
        for role in roles:
            lw = find(system="lakeward", workload=q, role=role)
            pg = find(system="postgres", workload=q, role=role)
            if lw and df and lw.get("median_ms") and df.get("median_ms"):
                over.append((q, role, lw["median_ms"] / df["median_ms"] - 1))
            if lw and pg and lw.get("median_ms") and pg.get("median_ms"):
                speed.append((q, role, pg["median_ms"] / lw["median_ms"]))
    for label, limit, rows in [
        ("enforcement ≤ 10 % over plain DataFusion (analytic, analyst and clinician)", 0.10,
         [o for o in over if o[1] != "researcher"]),
        ("≤ 20 % with the opt-in consent filter (researcher)", 0.20,
         [o for o in over if o[1] == "researcher"]),
    ]:
        if rows:
            worst = max(rows, key=lambda o: o[2])
            target(label, f"worst {worst[2] * 100:+.0f} % ({worst[0]}, {worst[1]})", worst[2] <= limit)
    if speed:
        worst = min(speed, key=lambda s: s[2])
        target(
            "analytic ≥ 3× faster than PostgreSQL with the policy written natively",
            f"slowest {worst[2]:.1f}× ({worst[0]}, {worst[1]}); fastest {max(s[2] for s in speed):.1f}×",
            worst[2] >= 3,
        )
    p1 = find(system="lakeward", workload="point", role="analyst", mode="prepared", clients=1)
    if p1 and p1.get("median_ms") is not None:
        target("point lookup, prepared: p50 ≤ 1 ms (analyst, 1 client)", f"{p1['median_ms']:.2f} ms", p1["median_ms"] <= 1.0)
    ratios8 = []
    for role in roles:
        lw = find(system="lakeward", workload="point", role=role, mode="prepared", clients=8)
        pg = find(system="postgres", workload="point", role=role, mode="prepared", clients=8)
        if lw and pg and lw.get("per_s") and pg.get("per_s"):
            ratios8.append((role, lw["per_s"] / pg["per_s"]))
    if ratios8:
        worst = min(ratios8, key=lambda r: r[1])
        target(
            "point lookup, prepared: ≥ 50 % of PostgreSQL's throughput at 8 clients",
            "; ".join(f"{r}: {x * 100:.0f} %" for r, x in ratios8),
            worst[1] >= 0.5,
        )
    exports = [r for r in recs if r.get("system") == "lakeward" and r.get("workload") == "export"]
    if exports:
        slow = min(e.get("rows_per_s") or 0 for e in exports)
        peak = max((e.get("peak_rss_kib") or 0) for e in exports) / 1024
        target("export ≥ 500,000 rows/s", f"{slow:,.0f} rows/s (slowest)", slow >= 500_000)
        target("export RSS ≤ 300 MB and flat", "; ".join(
            f"{e['rows']:,} rows: {(e.get('peak_rss_kib') or 0) / 1024:.0f} MiB peak" for e in exports), peak <= 300)
    a_on = audit_rounds(recs, "fsync")
    a_off = audit_rounds(recs, "none-benchmark-only")
    if a_on and a_off and a_on.get("per_s") and a_off.get("per_s"):
        d = 1 - a_on["per_s"] / a_off["per_s"]
        target("audit on vs off ≤ 5 % throughput (point, 8 clients)", f"{d * 100:+.1f} %", d <= 0.05)
    for name, measured, status in targets:
        w(f"| {name} | {measured} | {status} |")
    w("")

    # Point lookups.
    w("### 1. Point lookups (pgbench, bound parameter)")
    w("")
    w(
        "Analyst and clinician (S01): `clinical.patients WHERE patient_id = :id`, a random id "
        "out of all patients (the clinician finds a row for one in twelve: the others are at "
        "other sites). Researcher: `clinical.encounters WHERE encounter_id = :id`, because the "
        "researcher's `patient_id` is a keyed pseudonym, which no index can look up in either "
        "system. DataFusion: the same statement planned once and bound per execution, no policy."
    )
    w("")
    w("| role | protocol | clients | lakeward p50 / p99 ms | lakeward tps | PostgreSQL p50 / p99 ms | PostgreSQL tps | lakeward / PostgreSQL tps | DataFusion p50 ms | DataFusion tps | deltalake scan p50 ms | deltalake scan tps |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for role in roles:
        for mode in ["prepared", "simple"]:
            for c in [int(x) for x in str(meta.get("clients_list", "1 8 32")).split()]:
                lw = find(system="lakeward", workload="point", role=role, mode=mode, clients=c) or {}
                pg = find(system="postgres", workload="point", role=role, mode=mode, clients=c) or {}
                dfw = "point-encounter" if role == "researcher" else "point"
                df = find(system="datafusion", workload=dfw, clients=c) or {}
                st = find(system="datafusion", workload=dfw + "-stock", clients=c) or {}
                lw_s = f"{fmt(lw.get('median_ms'))} / {fmt(lw.get('p99_ms'))}" if not lw.get("failed") else "failed"
                w(
                    f"| {role} | {mode} | {c} | {lw_s} | {fmt(lw.get('per_s'), 0)} | "
                    f"{fmt(pg.get('median_ms'))} / {fmt(pg.get('p99_ms'))} | {fmt(pg.get('per_s'), 0)} | "
                    f"{ratio(lw.get('per_s'), pg.get('per_s'))} | {fmt(df.get('median_ms'))} | {fmt(df.get('per_s'), 0)} | "
                    f"{fmt(st.get('median_ms'))} | {fmt(st.get('per_s'), 0)} |"
                )
    w("")

    # Analytic.
    w("### 2. Analytic queries (`bench/workloads/*.sql`)")
    w("")
    w(
        "Each query as each role, one client, median and worst of the timed runs. "
        "*PostgreSQL / lakeward* above 1 means lakeward is faster; *over DataFusion* is what "
        "the policy and the wire cost over the same query with no policy."
    )
    w("")
    w("| query | role | lakeward median / max ms | PostgreSQL median / max ms | PostgreSQL / lakeward | DataFusion median ms | lakeward over DataFusion | deltalake scan median ms |")
    w("|---|---|---:|---:|---:|---:|---:|---:|")
    for q in queries:
        df = find(system="datafusion", workload=q) or {}
        st = find(system="datafusion", workload=q + "-stock") or {}
        for role in roles:
            lw = find(system="lakeward", workload=q, role=role) or {}
            pg = find(system="postgres", workload=q, role=role) or {}
            o = "—"
            if lw.get("median_ms") and df.get("median_ms"):
                o = f"{(lw['median_ms'] / df['median_ms'] - 1) * 100:+.0f} %"
            w(
                f"| {q} | {role} | {fmt(lw.get('median_ms'), 1)} / {fmt(lw.get('p99_ms'), 1)} | "
                f"{fmt(pg.get('median_ms'), 1)} / {fmt(pg.get('p99_ms'), 1)} | "
                f"{ratio(pg.get('median_ms'), lw.get('median_ms'), 1)} | {fmt(df.get('median_ms'), 1)} | {o} | "
                f"{fmt(st.get('median_ms'), 1)} |"
            )
    w("")

    # Export.
    w("### 3. Export (`SELECT * FROM clinical.observations LIMIT n` to psql, analyst)")
    w("")
    w("| system | rows | seconds | rows/s | server peak RSS |")
    w("|---|---:|---:|---:|---:|")
    for r in recs:
        if r.get("workload") == "export":
            rss = f"{r['peak_rss_kib'] / 1024:.0f} MiB (idle {r['base_rss_kib'] / 1024:.0f} MiB)" if r.get("peak_rss_kib") and r.get("base_rss_kib") else "—"
            secs = r.get("seconds") or ((r.get("median_ms") or 0) / 1000)
            rows = r.get("rows")
            rps = r.get("rows_per_s")
            w(f"| {r['system']} | {fmt(rows)} | {secs:.2f} | {fmt(rps, 0)} | {rss} |")
    w("")

    # Connect.
    w("### 4. Connection storm (pgbench `-C`: a new TLS connection per statement, 8 clients)")
    w("")
    w("| system | authentication | connections/s | p50 / p99 ms |")
    w("|---|---|---:|---:|")
    for system, auth in [("lakeward", "JWT (ES256) as the password"), ("postgres", "SCRAM-SHA-256 password")]:
        r = find(system=system, workload="connect") or {}
        w(f"| {system} | {auth} | {fmt(r.get('per_s'), 0)} | {fmt(r.get('median_ms'))} / {fmt(r.get('p99_ms'))} |")
    w("")

    # Audit.
    w("### 5. Audit on and off (point lookups, analyst, prepared, 8 clients)")
    w("")
    w("| audit durability | tps (mean of rounds) | p50 / p99 ms (median of rounds) | rounds |")
    w("|---|---:|---:|---:|")
    for mode, label in [("fsync", "fsync (production)"), ("none-benchmark-only", "no fsync (benchmark only)")]:
        r = audit_rounds(recs, mode) or {}
        w(f"| {label} | {fmt(r.get('per_s'), 0)} | {fmt(r.get('median_ms'))} / {fmt(r.get('p99_ms'))} | {r.get('rounds', '—')} |")
    w("")
    fails = [r for r in recs if r.get("failed")]
    if fails:
        w("Runs that failed:")
        w("")
        for r in fails:
            w(f"- {r.get('system')} {r.get('workload')} {r.get('role')} {r.get('mode')} c={r.get('clients')}: `{r['failed']}`")
        w("")
    w(END)
    return "\n".join(out) + "\n"


def audit_rounds(recs, mode):
    """The audit comparison's runs of one durability mode (rounds named
    lakeward-audit-<mode>-r<n>, or one run without a round): mean tps,
    median p50 and p99."""
    base = f"lakeward-audit-{mode}"
    runs = [r for r in recs if r.get("workload") == "point" and not r.get("failed")
            and (r.get("system") == base or re.fullmatch(re.escape(base) + r"-r[0-9]+", r.get("system") or ""))]
    if not runs:
        return None
    return {
        "per_s": statistics.mean(r["per_s"] for r in runs if r.get("per_s")),
        "median_ms": statistics.median(r["median_ms"] for r in runs if r.get("median_ms") is not None),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs if r.get("p99_ms") is not None),
        "rounds": len(runs),
    }


def cmd_layouts(argv):
    """Point lookups of runs with different layouts side by side (markdown):
    per role, protocol and clients, lakeward's p50 and tps per layout and
    PostgreSQL's (from the first run that has it)."""
    results, rewrite = [], None
    i = 0
    while i < len(argv):
        if argv[i] == "--results":
            results.append(argv[i + 1])
        elif argv[i] == "--rewrite":
            rewrite = argv[i + 1]
        else:
            raise SystemExit(f"unexpected argument {argv[i]}")
        i += 2
    recs = [json.loads(l) for f in results for l in open(f) if l.strip()]
    points = [r for r in recs if r.get("workload") == "point" and r.get("system") in ("lakeward", "postgres")]
    layouts = sorted({r.get("layout", "datagen") for r in points if r["system"] == "lakeward"},
                     key=lambda l: (l != "datagen", l))

    def find(**kw):
        for r in points:
            if all(r.get(k, "datagen" if k == "layout" else None) == v for k, v in kw.items()):
                return r
        return {}

    def cell(r):
        if r.get("failed"):
            return "failed | —"
        return f"{fmt(r.get('median_ms'))} | {fmt(r.get('per_s'), 0)}"

    head = "| role | protocol | clients |"
    rule = "|---|---|---:|"
    for l in layouts:
        head += f" lakeward {l} p50 ms | lakeward {l} tps |"
        rule += "---:|---:|"
    head += " PostgreSQL p50 ms | PostgreSQL tps |"
    rule += "---:|---:|"
    if len(layouts) > 1:
        head += f" {layouts[1]} / {layouts[0]} tps |"
        rule += "---:|"
    print(head)
    print(rule)
    keys = sorted({(r["role"], r["mode"], r["clients"]) for r in points},
                  key=lambda k: (k[0], k[1] != "prepared", k[2]))
    for role, mode, c in keys:
        line = f"| {role} | {mode} | {c} |"
        lw = [find(system="lakeward", role=role, mode=mode, clients=c, layout=l) for l in layouts]
        for r in lw:
            line += f" {cell(r)} |"
        line += f" {cell(find(system='postgres', role=role, mode=mode, clients=c))} |"
        if len(layouts) > 1:
            line += f" {ratio(lw[1].get('per_s'), lw[0].get('per_s'))} |"
        print(line)
    if rewrite:
        print()
        print("| table | rows | datagen files / row groups / MiB | foreign files / row groups / MiB |")
        print("|---|---:|---:|---:|")
        for l in open(rewrite):
            t = json.loads(l)
            d, f = t["datagen"], t["foreign"]
            print(f"| {t['table']} | {t['rows']:,} | {d['files']} / {d['row_groups']} / {d['bytes'] / 2**20:.1f}"
                  f" | {f['files']} / {f['row_groups']} / {f['bytes'] / 2**20:.1f} |")


def cmd_render(f):
    text = render(f["results"], f.get("outdir"))
    doc = f["doc"]
    old = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = head + text.rstrip("\n") + tail
    else:
        lines = old.split("\n\n", 1)
        new = lines[0] + "\n\n" + text + ("\n" + lines[1] if len(lines) > 1 else "")
    open(doc, "w").write(new)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    if sys.argv[1] == "layouts":
        return cmd_layouts(sys.argv[2:])
    f = parse_flags(sys.argv[2:])
    {"pgbench": cmd_pgbench, "baseline": cmd_baseline, "record": cmd_record, "render": cmd_render}[sys.argv[1]](f)


if __name__ == "__main__":
    main()
