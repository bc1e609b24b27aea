#!/usr/bin/env python3
"""One COPY export, timed, with a server's resident memory sampled meanwhile.

    bench/copy-rss.py --client adbc --uri URI --sql SQL [--pid PID] [--samples FILE] [labels...]
    bench/copy-rss.py --client psql --conn CONNINFO --sql SQL [--pid PID] [--samples FILE] [labels...]

--client adbc: the ADBC PostgreSQL driver (adbc_driver_postgresql.dbapi):
  cursor.execute(SQL); cursor.fetch_arrow_table(). The driver reads a
  SELECT through `COPY (SQL) TO STDOUT (FORMAT binary)` and decodes the
  binary rows into Arrow record batches; the whole table is held by the
  client at the end, as a dataframe user would hold it.
--client psql: `psql -c "\\copy (SQL) TO '/dev/null'"`, COPY in text format,
  each row written by psql to /dev/null.

The timer covers the statement (ADBC: execute and fetch, after connect;
psql: the whole process, connection included: a few milliseconds). While it
runs, VmRSS of PID (the server) is read from /proc every 100 ms. Prints one
JSON line for bench/run.sh's results.jsonl: rows, seconds, rows_per_s and,
with --pid, the RSS before, the sampled peak, the median, the last sample
and VmHWM; --samples writes every sample (seconds since start, KiB).
Extra `key=value` arguments are copied into the record.
"""

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


class Sampler(threading.Thread):
    def __init__(self, pid, every=0.1):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop.is_set():
            try:
                kib = status_kib(self.pid, "VmRSS")
            except OSError:
                break
            self.samples.append((time.monotonic() - self.t0, kib))
            self.stop.wait(self.every)


def run_adbc(uri, sql):
    import adbc_driver_postgresql.dbapi as dbapi

    with dbapi.connect(uri) as conn:
        with conn.cursor() as cur:
            t0 = time.monotonic()
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            secs = time.monotonic() - t0
    return table.num_rows, secs, {"arrow_bytes": table.nbytes, "columns": table.num_columns}


def run_psql(conn, sql):
    t0 = time.monotonic()
    p = subprocess.run(
        ["psql", conn, "-X", "-v", "ON_ERROR_STOP=1", "-c", f"\\copy ({sql}) TO '/dev/null'"],
        capture_output=True,
        text=True,
    )
    secs = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"psql failed: {p.stderr.strip()}")
    # psql prints "COPY n".
    words = p.stdout.split()
    rows = int(words[-1]) if len(words) >= 2 and words[-2] == "COPY" else None
    return rows, secs, {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["adbc", "psql"], required=True)
    ap.add_argument("--uri", help="ADBC: a libpq URI")
    ap.add_argument("--conn", help="psql: a connection string")
    ap.add_argument("--sql", required=True)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--samples")
    ap.add_argument("labels", nargs="*")
    a = ap.parse_args()

    rec = dict(kv.split("=", 1) for kv in a.labels)
    sampler = None
    if a.pid:
        rec["base_rss_kib"] = status_kib(a.pid, "VmRSS")
        sampler = Sampler(a.pid)
        sampler.start()
    try:
        if a.client == "adbc":
            rows, secs, extra = run_adbc(a.uri, a.sql)
        else:
            rows, secs, extra = run_psql(a.conn, a.sql)
    finally:
        if sampler:
            sampler.stop.set()
            sampler.join()
    rec.update(extra)
    rec.update(client=a.client, rows=rows, seconds=round(secs, 3),
               rows_per_s=round(rows / secs) if rows and secs else None)
    if sampler and sampler.samples:
        kib = [k for _, k in sampler.samples if k is not None]
        rec.update(
            peak_rss_kib=max(kib),
            median_rss_kib=int(statistics.median(kib)),
            last_rss_kib=kib[-1],
            hwm_kib=status_kib(a.pid, "VmHWM"),
            rss_samples=len(kib),
        )
        # The profile in ten slices of the run: the peak of each.
        n = len(kib)
        rec["rss_profile_mib"] = [
            round(max(kib[i * n // 10:max((i + 1) * n // 10, i * n // 10 + 1)]) / 1024)
            for i in range(min(10, n))
        ]
        if a.samples:
            with open(a.samples, "w") as fh:
                fh.write("seconds,vmrss_kib\n")
                for t, k in sampler.samples:
                    fh.write(f"{t:.3f},{k}\n")
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
