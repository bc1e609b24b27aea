#!/usr/bin/env python3
"""Rewrite the Delta tables of a `lakeward datagen` data dir as another writer
would have written them: the Python `deltalake` package with its defaults
(`write_deltalake`, no partitioning, no sorting, its own file and row-group
sizes), the rows shuffled so nothing is ordered by lakeward's keys.

  python3 bench/foreign/rewrite.py --src DATA --dst FOREIGN [--seed 7]

Every `<schema>/<table>` folder with a `_delta_log` under SRC is read at its
latest version and written to the same folder under DST. The `audit` schema
(lakeward's own hash-chained audit log, written by the demo) and every file
outside a Delta table (TLS certificate, token, pseudonym and audit keys, the
audit WAL) are copied byte for byte, so `lakeward serve` serves DST exactly
like SRC. The Arrow schema of every table, the Delta schema (types and
nullability), the protocol, the table's name and description are checked to be unchanged,
and the row count. Prints one JSON line per table: files, bytes, row groups.
Needs bench/foreign/requirements.txt.
"""

import argparse
import json
import os
import shutil
import sys
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

COPY_AS_IS = {"audit"}  # schemas copied byte for byte, not rewritten
# Tables up to this many rows are shuffled in memory; larger ones through
# spill files of about this many rows each.
IN_MEMORY_ROWS = int(os.environ.get("REWRITE_IN_MEMORY_ROWS", 12_000_000))


def delta_tables(root):
    out = []
    for schema in sorted(os.listdir(root)):
        sdir = os.path.join(root, schema)
        if not os.path.isdir(sdir):
            continue
        for table in sorted(os.listdir(sdir)):
            if os.path.isdir(os.path.join(sdir, table, "_delta_log")):
                out.append((schema, table))
    return out


def delta_fields(dt):
    return json.loads(dt.schema().to_json())["fields"]


def file_arrow_schema(dt):
    files = dt.file_uris()
    return pq.read_schema(files[0]).remove_metadata() if files else None


def rewrite(src, dst, schema, table, seed):
    sp, dp = os.path.join(src, schema, table), os.path.join(dst, schema, table)
    dt = DeltaTable(sp)
    meta = dt.metadata()
    if meta.partition_columns:
        raise SystemExit(f"{schema}.{table}: partitioned tables are not handled")
    # A seeded shuffle per table: the same rows in the same (random) order on
    # every run with the same seed.
    rng = np.random.default_rng([seed, zlib.crc32(f"{schema}.{table}".encode())])
    rows = sum(pq.read_metadata(f.removeprefix("file://")).num_rows for f in dt.file_uris())
    if rows <= IN_MEMORY_ROWS:
        data = dt.to_pyarrow_table()
        data = data.take(pa.array(rng.permutation(data.num_rows)))
        write_deltalake(dp, data, name=meta.name, description=meta.description)
    else:
        # Too large to shuffle in memory (10,000,000 patients: 228 million
        # observations): an out-of-core shuffle. Every row goes to one of
        # `buckets` spill files picked at random, then each bucket is
        # shuffled in memory and streamed to the writer, one Delta commit.
        buckets = -(-rows // IN_MEMORY_ROWS)
        spill = dp + ".spill"
        shutil.rmtree(spill, ignore_errors=True)
        os.makedirs(spill)
        writers = [None] * buckets
        for batch in dt.to_pyarrow_dataset().to_batches():
            pick = rng.integers(0, buckets, batch.num_rows)
            for b in range(buckets):
                part = batch.filter(pa.array(pick == b))
                if part.num_rows == 0:
                    continue
                if writers[b] is None:
                    writers[b] = pq.ParquetWriter(os.path.join(spill, f"{b}.parquet"), part.schema)
                writers[b].write_batch(part)
        for w in writers:
            if w is not None:
                w.close()
        first = pq.read_schema(os.path.join(spill, "0.parquet"))

        def shuffled():
            for b in range(buckets):
                f = os.path.join(spill, f"{b}.parquet")
                if not os.path.exists(f):
                    continue
                t = pq.read_table(f)
                os.remove(f)
                t = t.take(pa.array(rng.permutation(t.num_rows)))
                yield from t.to_batches(max_chunksize=1 << 20)

        reader = pa.RecordBatchReader.from_batches(first, shuffled())
        write_deltalake(dp, reader, name=meta.name, description=meta.description)
        shutil.rmtree(spill, ignore_errors=True)

    out = DeltaTable(dp)
    problems = []
    if delta_fields(out) != delta_fields(dt):
        problems.append(f"Delta schema changed: {delta_fields(dt)} -> {delta_fields(out)}")
    if not pa.schema(out.schema().to_arrow()).equals(pa.schema(dt.schema().to_arrow())):
        problems.append("Arrow schema of the Delta schema changed")
    a, b = file_arrow_schema(dt), file_arrow_schema(out)
    if a is not None and not a.equals(b):
        problems.append(f"Parquet files' Arrow schema changed:\n{a}\n->\n{b}")
    if (out.metadata().name, out.metadata().description) != (meta.name, meta.description):
        problems.append("name or description changed")
    if out.protocol() != dt.protocol():
        problems.append(f"protocol changed: {dt.protocol()} -> {out.protocol()}")
    if out.metadata().partition_columns:
        problems.append("partitioned")
    n = sum(pq.read_metadata(f).num_rows for f in out.file_uris())
    if n != rows:
        problems.append(f"row count {rows} -> {n}")
    if problems:
        raise SystemExit(f"{schema}.{table}: " + "; ".join(problems))

    def layout(t):
        files = t.file_uris()
        return {
            "files": len(files),
            "bytes": sum(os.path.getsize(f.removeprefix("file://")) for f in files),
            "row_groups": sum(pq.read_metadata(f).num_row_groups for f in files),
        }

    return {
        "table": f"{schema}.{table}",
        "rows": rows,
        "protocol": [out.protocol().min_reader_version, out.protocol().min_writer_version],
        "datagen": layout(dt),
        "foreign": layout(out),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="data dir written by lakeward datagen")
    ap.add_argument("--dst", required=True, help="new data dir (must not exist)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if os.path.exists(args.dst):
        raise SystemExit(f"{args.dst} exists; remove it first")
    tmp = args.dst.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)

    tables = delta_tables(args.src)
    in_tables = {os.path.join(args.src, s, t) for s, t in tables}
    for s, t in tables:
        if s in COPY_AS_IS:
            shutil.copytree(os.path.join(args.src, s, t), os.path.join(tmp, s, t))
        else:
            print(json.dumps(rewrite(args.src, tmp, s, t, args.seed)), flush=True)
    # Everything else (keys, certificate, audit WAL), as it is.
    for dirpath, dirnames, filenames in os.walk(args.src):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in in_tables]
        for name in filenames:
            s = os.path.join(dirpath, name)
            d = os.path.join(tmp, os.path.relpath(s, args.src))
            os.makedirs(os.path.dirname(d), exist_ok=True)
            shutil.copy2(s, d)
    os.rename(tmp, args.dst)


if __name__ == "__main__":
    sys.exit(main())
