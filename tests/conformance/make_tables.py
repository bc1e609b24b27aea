#!/usr/bin/env python3
"""Reader conformance suite: Delta tables written the way Spark/Databricks write them.

lakeward reads Delta tables with delta-rs (deltalake 1.1, Delta kernel) and
DataFusion. Its own tests write tables with delta-rs, so a reader bug that
delta-rs' writer never provokes would go unnoticed. This script is an
independent writer: it builds Delta tables byte by byte the way Apache Spark
(Delta Lake OSS) and Databricks Runtime lay them out - Parquet data files
written with pyarrow, transaction logs written by hand in JSON (and Parquet for
checkpoints) following PROTOCOL.md of delta-io/delta - and records, for every
table, the rows a correct reader must return and a few filtered queries whose
answers it must not change by pruning.

Only pyarrow and the Python standard library are used: the RoaringBitmap
serialisation of deletion vectors, Z85, CRC-32 (zlib.crc32), the
`_last_checkpoint` JSON checksum, Hive path escaping and Java's number
formatting are written out here.

Expected values never come from a Delta reader: they are the rows this script
put into Parquet, minus the rows its own log removes (remove actions, deletion
vectors), projected through the table's final schema (renames, drops,
widening). `--self-check` then re-reads everything from disk with a small,
separate Delta log replayer and DV decoder and compares.

Usage:
    make_tables.py OUT_DIR
        writes OUT_DIR/lake/conformance/<table>/...      tables lakeward must serve
               OUT_DIR/refused/conformance/<table>/...   tables lakeward must refuse
               OUT_DIR/expected.json                     rows, queries, refusals
    make_tables.py --self-check [OUT_DIR]
        builds the suite (into OUT_DIR, or a temporary directory), then decodes
        every deletion vector, re-reads every Parquet file's physical schema and
        replays every table's log independently against expected.json.
    make_tables.py spark-consents SRC_TABLE_DIR DST_TABLE_DIR
        rewrites lakeward's governance.consents table (SRC) as Spark 3.1 with
        legacy settings would have written it: INT96 timestamps, NULL expires_at
        replaced by the 9999-12-31 00:00:00 "never" sentinel, 3 files.

Everything is deterministic: UUIDs are derived from names, clocks are fixed,
so two runs produce byte-identical trees.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import string
import struct
import sys
import tempfile
import unicodedata
import urllib.parse
import uuid
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

# ---------------------------------------------------------------------------
# Determinism
# ---------------------------------------------------------------------------

NAMESPACE = uuid.UUID("6c616b65-7761-7264-2d63-6f6e666f726d")  # fixed, arbitrary


def det_uuid(*parts: Any) -> uuid.UUID:
    """A UUID derived from a name, so reruns produce the same files."""
    return uuid.uuid5(NAMESPACE, "/".join(str(p) for p in parts))


BASE_MS = 1717200000000  # 2024-06-01T00:00:00Z: every table's clock starts near here
EPOCH = dt.datetime(1970, 1, 1)
EPOCH_DATE = dt.date(1970, 1, 1)
SCHEMA = "conformance"


class Failure(Exception):
    """A generation or check failure, reported as one line and exit code 1."""


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Failure(msg)


# ---------------------------------------------------------------------------
# Delta types, Arrow types, PostgreSQL types
# ---------------------------------------------------------------------------


def dec_ps(t: str) -> tuple[int, int]:
    p, s = t[len("decimal("):-1].split(",")
    return int(p), int(s)


def arrow_type(t: str) -> pa.DataType:
    if t.startswith("decimal("):
        return pa.decimal128(*dec_ps(t))
    return {
        "long": pa.int64(), "integer": pa.int32(), "short": pa.int16(), "byte": pa.int8(),
        "float": pa.float32(), "double": pa.float64(), "string": pa.string(),
        "binary": pa.binary(), "boolean": pa.bool_(), "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"), "timestamp_ntz": pa.timestamp("us"),
    }[t]


def pg_type(t: str) -> str:
    if t.startswith("decimal("):
        p, s = dec_ps(t)
        return f"numeric({p},{s})"
    return {
        "long": "bigint", "integer": "integer", "short": "smallint", "byte": "smallint",
        "float": "real", "double": "double precision", "string": "text", "binary": "bytea",
        "boolean": "boolean", "date": "date", "timestamp": "timestamp with time zone",
        "timestamp_ntz": "timestamp without time zone",
    }[t]


def f32(x: float) -> float:
    """The float32 value nearest to x, as a Python float."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:  # rounds past FLT_MAX
        return math.copysign(math.inf, x)


def micros(v: dt.datetime) -> int:
    return (v - EPOCH) // dt.timedelta(microseconds=1)


def from_micros(us: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=us)


# ---------------------------------------------------------------------------
# Number and time formatting (PostgreSQL text output, Java toString)
# ---------------------------------------------------------------------------


def shortest_digits(x: float, bits: int) -> tuple[str, int]:
    """Shortest round-trip decimal digits of |x| (finite, non-zero) and the
    decimal exponent of the first digit (x = d.ddd * 10^exp)."""
    x = abs(x)
    if bits == 64:
        text = repr(x)
    else:
        for p in range(1, 10):
            text = f"{x:.{p - 1}e}"
            if f32(float(text)) == x:
                break
    _, digits, exponent = Decimal(text).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0")
    # Decimal('1.5'): digits (1, 5), exponent -1 -> the first digit's exponent is 0
    return ds, len(digits) - 1 + exponent


def _fixed(ds: str, exp: int, min_frac: int) -> str:
    if exp >= 0:
        whole = ds[: exp + 1].ljust(exp + 1, "0")
        frac = ds[exp + 1:]
    else:
        whole = "0"
        frac = "0" * (-exp - 1) + ds
    if len(frac) < min_frac:
        frac = frac.ljust(min_frac, "0")
    return whole + ("." + frac if frac else "")


def pg_float(x: float, bits: int) -> str:
    """PostgreSQL 12+ float4/float8 output (shortest exact, extra_float_digits=1)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    ds, exp = shortest_digits(x, bits)
    sign = "-" if x < 0 else ""
    limit = 15 if bits == 64 else 6
    if -4 <= exp < limit:
        return sign + _fixed(ds, exp, 0)
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{sign}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def java_float(x: float, bits: int) -> str:
    """Java's Double.toString / Float.toString (as Jackson and Spark's casts print)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    if x == 0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    ds, exp = shortest_digits(x, bits)
    if len(ds) == 1:
        # Java picks the closest decimal of at least two digits (Double.MIN_VALUE is 4.9E-324)
        two = f"{abs(x):.1e}"
        _, digits, e10 = Decimal(two).as_tuple()
        ds, exp = "".join(map(str, digits)).rstrip("0"), len(digits) - 1 + e10
    sign = "-" if x < 0 else ""
    if -3 <= exp < 7:
        return sign + _fixed(ds, exp, 1)
    return f"{sign}{ds[0]}.{ds[1:] or '0'}E{exp}"


def fmt_date(d: dt.date) -> str:
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def fmt_time(v: dt.datetime, trim: bool = True) -> str:
    s = f"{fmt_date(v)} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    if v.microsecond:
        s += ("." + f"{v.microsecond:06d}".rstrip("0")) if trim else f".{v.microsecond:06d}"
    return s


def pg_text(t: str, v: Any) -> str | None:
    """A value in PostgreSQL's text output format (session TimeZone UTC)."""
    if v is None:
        return None
    if t in ("long", "integer", "short", "byte"):
        return str(v)
    if t == "float":
        return pg_float(v, 32)
    if t == "double":
        return pg_float(v, 64)
    if t.startswith("decimal("):
        _, s = dec_ps(t)
        return f"{Decimal(v).quantize(Decimal(1).scaleb(-s)):f}"
    if t == "string":
        return v
    if t == "binary":
        return "\\x" + bytes(v).hex()
    if t == "boolean":
        return "t" if v else "f"
    if t == "date":
        return fmt_date(v)
    if t == "timestamp":
        return fmt_time(v) + "+00"
    if t == "timestamp_ntz":
        return fmt_time(v)
    raise Failure(f"no text format for {t}")


# ---------------------------------------------------------------------------
# JSON as Spark's Jackson writes it
# ---------------------------------------------------------------------------


class Raw(str):
    """A JSON token written as is (a number in Java's spelling)."""


def jdump(o: Any) -> str:
    """Compact JSON, keys in insertion order, non-ASCII unescaped (Jackson's output)."""
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, Raw):
        return str(o)
    if isinstance(o, int):
        return str(o)
    if isinstance(o, float):
        raise Failure("floats must be written as Raw java_float tokens")
    if isinstance(o, str):
        return json.dumps(o, ensure_ascii=False)
    if isinstance(o, dict):
        return "{" + ",".join(f"{jdump(str(k))}:{jdump(v)}" for k, v in o.items()) + "}"
    if isinstance(o, (list, tuple)):
        return "[" + ",".join(jdump(v) for v in o) + "]"
    raise Failure(f"cannot write {type(o).__name__} as JSON")


_UNRESERVED = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")


def _canon_str(s: str) -> str:
    return '"' + "".join(chr(b) if b in _UNRESERVED else "%%%02X" % b for b in s.encode("utf-8")) + '"'


def last_checkpoint_checksum(obj: dict) -> str:
    """PROTOCOL.md "JSON checksum": MD5 of the canonicalised `_last_checkpoint`."""
    entries: list[str] = []

    def walk(n: Any, prefix: list[str]) -> None:
        if isinstance(n, dict):
            for k, v in n.items():
                walk(v, prefix + [_canon_str(k)])
        elif isinstance(n, list):
            for i, v in enumerate(n):
                walk(v, prefix + [str(i)])
        else:
            if n is None:
                text = "null"
            elif n is True:
                text = "true"
            elif n is False:
                text = "false"
            elif isinstance(n, str) and not isinstance(n, Raw):
                text = _canon_str(n)
            else:
                text = str(n)
            path = "+".join(prefix)
            if path != '"checksum"':
                entries.append(f"{path}={text}")

    walk(obj, [])
    return hashlib.md5(",".join(sorted(entries)).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# Paths: Hive escaping of partition directories, URI encoding of log paths
# ---------------------------------------------------------------------------

# Spark's ExternalCatalogUtils.charToEscape on a non-Windows host.
_HIVE_ESCAPE = {chr(c) for c in range(1, 0x20)} | set('"#%\'*/:=?\\\x7f{[]^')
HIVE_DEFAULT_PARTITION = "__HIVE_DEFAULT_PARTITION__"


def hive_escape(s: str) -> str:
    return "".join("%%%02X" % ord(c) if c in _HIVE_ESCAPE else c for c in s)


_URI_PATH_OK = set(string.ascii_letters + string.digits + "_-!.~'()*,;:$&+=/@")


def uri_path(s: str) -> str:
    """Hadoop Path.toUri().toString() of a relative path (java.net.URI quoting)."""
    out = []
    for ch in s:
        if ch in _URI_PATH_OK or (
            ord(ch) > 127 and unicodedata.category(ch) not in ("Cc", "Zs", "Zl", "Zp")
        ):
            out.append(ch)
        else:
            out.extend("%%%02X" % b for b in ch.encode("utf-8"))
    return "".join(out)


# ---------------------------------------------------------------------------
# Deletion vectors: RoaringBitmap portable format, Z85, DV files
# ---------------------------------------------------------------------------

Z85_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
DV_MAGIC = 1681511377  # portable RoaringBitmapArray format
SERIAL_COOKIE_NO_RUNCONTAINER = 12346
SERIAL_COOKIE = 12347
NO_OFFSET_THRESHOLD = 4


def z85_encode(data: bytes) -> str:
    check(len(data) % 4 == 0, "Z85 input must be a multiple of 4 bytes")
    out = []
    for i in range(0, len(data), 4):
        (v,) = struct.unpack(">I", data[i:i + 4])
        chunk = []
        for _ in range(5):
            v, r = divmod(v, 85)
            chunk.append(Z85_CHARS[r])
        out.extend(reversed(chunk))
    return "".join(out)


def z85_decode(text: str) -> bytes:
    check(len(text) % 5 == 0, "Z85 text must be a multiple of 5 characters")
    out = bytearray()
    for i in range(0, len(text), 5):
        v = 0
        for c in text[i:i + 5]:
            idx = Z85_CHARS.find(c)
            check(idx >= 0, f"not a Z85 character: {c!r}")
            v = v * 85 + idx
        out += struct.pack(">I", v)
    return bytes(out)


def _runs(lows: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for x in lows:
        if runs and runs[-1][0] + runs[-1][1] + 1 == x:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((x, 0))  # (start, length - 1)
    return runs


def roaring32_serialize(values: list[int]) -> bytes:
    """Standard RoaringBitmap serialisation, after Java's runOptimize()."""
    groups: dict[int, list[int]] = {}
    for v in sorted(set(values)):
        groups.setdefault(v >> 16, []).append(v & 0xFFFF)
    conts = []
    for key in sorted(groups):
        lows = groups[key]
        card = len(lows)
        runs = _runs(lows)
        kind, size = ("array", 2 * card) if card <= 4096 else ("bitmap", 8192)
        if 2 + 4 * len(runs) < size:
            kind, size = "run", 2 + 4 * len(runs)
        if kind == "array":
            data = struct.pack(f"<{card}H", *lows)
        elif kind == "run":
            data = struct.pack("<H", len(runs)) + b"".join(struct.pack("<HH", s, l) for s, l in runs)
        else:
            words = [0] * 1024
            for x in lows:
                words[x >> 6] |= 1 << (x & 63)
            data = struct.pack("<1024Q", *words)
        conts.append((key, card, kind, data))
    n = len(conts)
    has_run = any(c[2] == "run" for c in conts)
    out = bytearray()
    if has_run:
        out += struct.pack("<I", SERIAL_COOKIE | ((n - 1) << 16))
        flags = bytearray((n + 7) // 8)
        for i, c in enumerate(conts):
            if c[2] == "run":
                flags[i // 8] |= 1 << (i % 8)
        out += flags
    else:
        out += struct.pack("<II", SERIAL_COOKIE_NO_RUNCONTAINER, n)
    for key, card, _, _ in conts:
        out += struct.pack("<HH", key, card - 1)
    if not has_run or n >= NO_OFFSET_THRESHOLD:
        offset = len(out) + 4 * n
        for c in conts:
            out += struct.pack("<I", offset)
            offset += len(c[3])
    for c in conts:
        out += c[3]
    return bytes(out)


def dv_bitmap_bytes(positions: list[int]) -> bytes:
    """magic + RoaringBitmapArray (portable 64-bit: count, then key + 32-bit bitmap)."""
    check(len(positions) > 0, "a deletion vector deletes at least one row")
    buckets: dict[int, list[int]] = {}
    for p in sorted(set(positions)):
        check(0 <= p < 2 ** 63, "row index out of range")
        buckets.setdefault(p >> 32, []).append(p & 0xFFFFFFFF)
    out = bytearray(struct.pack("<I", DV_MAGIC))
    # Delta's array-based writer emits every key from 0 up to the highest.
    top = max(buckets)
    out += struct.pack("<Q", top + 1)
    for key in range(top + 1):
        out += struct.pack("<I", key) + roaring32_serialize(buckets.get(key, []))
    return bytes(out)


def roaring32_deserialize(buf: bytes, pos: int) -> tuple[list[int], int]:
    """Decode one standard 32-bit RoaringBitmap starting at buf[pos]; returns (values, end)."""
    start = pos
    (cookie,) = struct.unpack_from("<I", buf, pos)
    pos += 4
    if cookie & 0xFFFF == SERIAL_COOKIE:
        n = (cookie >> 16) + 1
        flags = buf[pos:pos + (n + 7) // 8]
        pos += (n + 7) // 8
        is_run = [bool(flags[i // 8] >> (i % 8) & 1) for i in range(n)]
    else:
        check(cookie == SERIAL_COOKIE_NO_RUNCONTAINER, f"bad roaring cookie {cookie}")
        (n,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        is_run = [False] * n
    header = [struct.unpack_from("<HH", buf, pos + 4 * i) for i in range(n)]
    pos += 4 * n
    if not any(is_run) or n >= NO_OFFSET_THRESHOLD:
        offsets = [struct.unpack_from("<I", buf, pos + 4 * i)[0] for i in range(n)]
        pos += 4 * n
    else:
        offsets = None
    values: list[int] = []
    for i, (key, card_m1) in enumerate(header):
        if offsets is not None:
            check(start + offsets[i] == pos, "roaring offset header disagrees with layout")
        card = card_m1 + 1
        if is_run[i]:
            (nruns,) = struct.unpack_from("<H", buf, pos)
            pos += 2
            lows = []
            for _ in range(nruns):
                s, l = struct.unpack_from("<HH", buf, pos)
                pos += 4
                lows.extend(range(s, s + l + 1))
        elif card <= 4096:
            lows = list(struct.unpack_from(f"<{card}H", buf, pos))
            pos += 2 * card
        else:
            words = struct.unpack_from("<1024Q", buf, pos)
            pos += 8192
            lows = [w * 64 + b for w, word in enumerate(words) for b in range(64) if word >> b & 1]
        check(len(lows) == card, "roaring container cardinality mismatch")
        values.extend((key << 16) | x for x in lows)
    return values, pos


def dv_decode_bitmap(data: bytes) -> list[int]:
    (magic,) = struct.unpack_from("<I", data, 0)
    check(magic == DV_MAGIC, f"bad deletion vector magic {magic}")
    (count,) = struct.unpack_from("<Q", data, 4)
    pos = 12
    out: list[int] = []
    for _ in range(count):
        (key,) = struct.unpack_from("<I", data, pos)
        vals, pos = roaring32_deserialize(data, pos + 4)
        out.extend((key << 32) | v for v in vals)
    return out


def dv_unique_id(desc: dict) -> str:
    base = desc["storageType"] + desc["pathOrInlineDv"]
    return f"{base}@{desc['offset']}" if desc.get("offset") is not None else base


def dv_read(table_root: str, desc: dict) -> list[int]:
    """Independent reader of one DV descriptor (file `u` or inline `i`)."""
    if desc["storageType"] == "i":
        data = z85_decode(desc["pathOrInlineDv"])[: desc["sizeInBytes"]]
        rows = dv_decode_bitmap(data)
    else:
        check(desc["storageType"] == "u", f"unsupported DV storage {desc['storageType']}")
        enc = desc["pathOrInlineDv"]
        prefix, z = enc[:-20], enc[-20:]
        name = f"deletion_vector_{uuid.UUID(bytes=z85_decode(z))}.bin"
        path = os.path.join(table_root, prefix, name) if prefix else os.path.join(table_root, name)
        with open(path, "rb") as fh:
            blob = fh.read()
        check(blob[0] == 1, f"{path}: DV file version {blob[0]}")
        off = desc.get("offset") or 0
        (size,) = struct.unpack_from(">I", blob, off)
        check(size == desc["sizeInBytes"], f"{path}@{off}: size {size} != sizeInBytes")
        data = blob[off + 4: off + 4 + size]
        (crc,) = struct.unpack_from(">I", blob, off + 4 + size)
        check(crc == zlib.crc32(data), f"{path}@{off}: CRC mismatch")
        rows = dv_decode_bitmap(data)
    check(len(rows) == desc["cardinality"], "DV cardinality mismatch")
    return rows


# ---------------------------------------------------------------------------
# Table model
# ---------------------------------------------------------------------------


@dataclass
class Col:
    """A table column. `key` is the stable identity used in Python rows."""

    key: str
    name: str
    type: str
    nullable: bool = True
    tag: str = "safe"
    cm_id: int | None = None
    phys: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def stats_name(self) -> str:
        return self.phys or self.name


@dataclass
class FileCol:
    """A column as it is physically stored in one Parquet file."""

    key: str
    pname: str
    type: str
    nullable: bool = True
    field_id: int | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class DataFile:
    rel: str            # path on disk, relative to the table root
    path: str           # the log's `path` (URI-encoded)
    size: int
    mtime: int
    rows: list[dict]    # in physical order, keyed by Col.key (partition values included)
    partition_values: dict
    stats: str | None
    cols: list[FileCol]
    int96: bool
    tags: dict | None = None


def schema_string(cols: list[Col]) -> str:
    fields = []
    for c in cols:
        md: dict[str, Any] = {}
        if c.cm_id is not None:
            md["delta.columnMapping.id"] = c.cm_id
            md["delta.columnMapping.physicalName"] = c.phys
        md.update(c.meta)
        fields.append({"name": c.name, "type": c.type, "nullable": c.nullable, "metadata": md})
    return jdump({"type": "struct", "fields": fields})


def spark_row_metadata(cols: list[FileCol]) -> str:
    fields = []
    for c in cols:
        md = dict(c.meta)
        if c.field_id is not None:
            md["parquet.field.id"] = c.field_id
        fields.append({"name": c.pname, "type": c.type, "nullable": c.nullable, "metadata": md})
    return jdump({"type": "struct", "fields": fields})


def arrow_column(t: str, values: list) -> pa.Array:
    if t in ("timestamp", "timestamp_ntz"):
        return pa.array([None if v is None else micros(v) for v in values], pa.int64()).cast(arrow_type(t))
    if t == "date":
        return pa.array([None if v is None else (v - EPOCH_DATE).days for v in values], pa.int32()).cast(pa.date32())
    return pa.array(values, type=arrow_type(t))


def write_parquet(path: str, cols: list[FileCol], rows: list[dict], *, int96: bool = False,
                  row_group_size: int | None = None, page_rows: int | None = None,
                  kv: dict | None = None, spark: bool = True) -> None:
    fields, arrays = [], []
    for c in cols:
        md = {b"PARQUET:field_id": str(c.field_id).encode()} if c.field_id is not None else None
        fields.append(pa.field(c.pname, arrow_type(c.type), nullable=c.nullable, metadata=md))
        arrays.append(arrow_column(c.type, [r.get(c.key) for r in rows]))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    opts: dict[str, Any] = dict(
        compression="snappy", store_schema=False, write_page_index=True,
        store_decimal_as_integer=True, use_deprecated_int96_timestamps=int96,
    )
    if page_rows:
        opts["max_rows_per_page"] = page_rows
    with pq.ParquetWriter(path, table.schema, **opts) as w:
        w.write_table(table, row_group_size=row_group_size or max(1, len(rows)))
        meta = {}
        if spark:
            meta = {"org.apache.spark.version": "3.5.1",
                    "org.apache.spark.sql.parquet.row.metadata": spark_row_metadata(cols)}
        meta.update(kv or {})
        if meta:
            w.add_key_value_metadata(meta)


# ----------------------------- statistics ---------------------------------

STATS_PREFIX = 32


def _utf16(s: str) -> list[int]:
    b = s.encode("utf-16-be")
    return [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]


def _from_utf16(units: list[int]) -> str:
    return b"".join(u.to_bytes(2, "big") for u in units).decode("utf-16-be")


def trunc_min(s: str, n: int = STATS_PREFIX) -> str:
    """Delta's truncateMinStringAgg: n UTF-16 units, never splitting a surrogate pair."""
    u = _utf16(s)
    if len(u) <= n:
        return s
    if 0xD800 <= u[n - 1] <= 0xDBFF and 0xDC00 <= u[n] <= 0xDFFF:
        return _from_utf16(u[: n + 1])
    return _from_utf16(u[:n])


def trunc_max(s: str, n: int = STATS_PREFIX) -> str | None:
    """Delta's truncateMaxStringAgg: prefix plus a tie-breaker (U+007F or U+10FFFF)."""
    u = _utf16(s)
    if len(u) <= n:
        return s
    cur = len(_utf16(trunc_min(s, n)))
    while cur <= 2 * n:
        if cur >= len(u):
            return s
        if cur + 1 < len(u) and u[cur] == 0xDBFF and u[cur + 1] == 0xDFFF:
            cur += 2
        elif u[cur] < 0x7F:
            return _from_utf16(u[:cur]) + "\x7f"
        else:
            return _from_utf16(u[:cur]) + "\U0010ffff"
    return None


def stat_json(t: str, v: Any) -> Any:
    if t in ("long", "integer", "short", "byte"):
        return v
    if t in ("float", "double"):
        text = java_float(v, 32 if t == "float" else 64)
        return text if (math.isnan(v) or math.isinf(v)) else Raw(text)  # Jackson quotes NaN
    if t.startswith("decimal("):
        _, s = dec_ps(t)
        return Raw(f"{Decimal(v).quantize(Decimal(1).scaleb(-s)):f}")
    if t == "date":
        return fmt_date(v)
    if t == "timestamp":
        return f"{fmt_date(v)}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond // 1000:03d}Z"
    if t == "timestamp_ntz":
        return f"{fmt_date(v)}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond // 1000:03d}"
    return v


def _order_key(t: str, v: Any) -> Any:
    if t in ("float", "double"):
        return (1, 0.0) if math.isnan(v) else (0, v)  # Spark: NaN above everything
    return v


def spark_stats(rows: list[dict], cols: list[Col], *, tight: bool | None = None) -> str:
    """Spark's per-file statistics JSON (numRecords, minValues, maxValues, nullCount)."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, Any] = {}
    for c in cols:
        vals = [r.get(c.key) for r in rows]
        present = [v for v in vals if v is not None]
        nulls[c.stats_name] = len(vals) - len(present)
        skipping = c.type not in ("boolean", "binary")
        if not skipping or not present:
            continue
        lo = min(present, key=lambda v: _order_key(c.type, v))
        hi = max(present, key=lambda v: _order_key(c.type, v))
        if c.type == "string":
            lo, hi = trunc_min(lo), trunc_max(hi)
        mins[c.stats_name] = stat_json(c.type, lo)
        if hi is not None:
            maxs[c.stats_name] = stat_json(c.type, hi)
    out: dict[str, Any] = {"numRecords": len(rows), "minValues": mins, "maxValues": maxs,
                           "nullCount": nulls}
    if tight is not None:
        out["tightBounds"] = tight
    return jdump(out)


def with_tight(stats: str, tight: bool) -> str:
    d = json.loads(stats, parse_float=lambda s: Raw(s), parse_int=int)
    d["tightBounds"] = tight
    return jdump(d)


# ----------------------------- partition values ---------------------------


def partition_string(t: str, v: Any, *, iso_ts: bool = False) -> str | None:
    """Spark's Cast(value AS STRING) for a partition value (iso_ts: Delta 3.3+ UTC form)."""
    if v is None or (t == "string" and v == ""):
        return None  # Spark writes an empty string partition as null
    if t == "string":
        return v
    if t in ("long", "integer", "short", "byte"):
        return str(v)
    if t == "boolean":
        return "true" if v else "false"
    if t in ("float", "double"):
        return java_float(v, 32 if t == "float" else 64)
    if t.startswith("decimal("):
        return f"{v:f}"
    if t == "date":
        return fmt_date(v)
    if t == "timestamp":
        if iso_ts:
            return f"{fmt_date(v)}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}Z"
        return fmt_time(v)
    raise Failure(f"no partition value format for {t}")


def partition_dir_value(t: str, v: Any) -> str:
    """The directory form: Cast(value AS STRING) in the session time zone, Hive-escaped."""
    s = partition_string(t, v)
    return HIVE_DEFAULT_PARTITION if s is None else hive_escape(s)


# ----------------------------- the writer ---------------------------------

MAP_T = pa.map_(pa.string(), pa.string())
DV_T = pa.struct([("storageType", pa.string()), ("pathOrInlineDv", pa.string()),
                  ("offset", pa.int32()), ("sizeInBytes", pa.int32()),
                  ("cardinality", pa.int64()), ("maxRowIndex", pa.int64())])
ADD_T = pa.struct([("path", pa.string()), ("partitionValues", MAP_T), ("size", pa.int64()),
                   ("modificationTime", pa.int64()), ("dataChange", pa.bool_()),
                   ("stats", pa.string()), ("tags", MAP_T), ("deletionVector", DV_T),
                   ("baseRowId", pa.int64()), ("defaultRowCommitVersion", pa.int64()),
                   ("clusteringProvider", pa.string())])
REMOVE_T = pa.struct([("path", pa.string()), ("deletionTimestamp", pa.int64()),
                      ("dataChange", pa.bool_()), ("extendedFileMetadata", pa.bool_()),
                      ("partitionValues", MAP_T), ("size", pa.int64()), ("deletionVector", DV_T),
                      ("baseRowId", pa.int64()), ("defaultRowCommitVersion", pa.int64())])
META_T = pa.struct([("id", pa.string()), ("name", pa.string()), ("description", pa.string()),
                    ("format", pa.struct([("provider", pa.string()), ("options", MAP_T)])),
                    ("schemaString", pa.string()), ("partitionColumns", pa.list_(pa.string())),
                    ("configuration", MAP_T), ("createdTime", pa.int64())])
PROTOCOL_T = pa.struct([("minReaderVersion", pa.int32()), ("minWriterVersion", pa.int32()),
                        ("readerFeatures", pa.list_(pa.string())),
                        ("writerFeatures", pa.list_(pa.string()))])
TXN_T = pa.struct([("appId", pa.string()), ("version", pa.int64()), ("lastUpdated", pa.int64())])
DOMAIN_T = pa.struct([("domain", pa.string()), ("configuration", pa.string()), ("removed", pa.bool_())])
CPMETA_T = pa.struct([("version", pa.int64()), ("tags", MAP_T)])
SIDECAR_T = pa.struct([("path", pa.string()), ("sizeInBytes", pa.int64()),
                       ("modificationTime", pa.int64()), ("tags", MAP_T)])


def _items(d: dict | None) -> list | None:
    return None if d is None else list(d.items())


def _struct_value(kind: str, a: dict) -> dict:
    """An action's JSON form as the value of its checkpoint struct column."""
    if kind in ("add", "remove"):
        dv = a.get("deletionVector")
        fields = [f.name for f in (ADD_T if kind == "add" else REMOVE_T)]
        v = {k: a.get(k) for k in fields}
        v["partitionValues"] = _items(a.get("partitionValues"))
        v["deletionVector"] = None if dv is None else {**dv, "offset": dv.get("offset"),
                                                        "maxRowIndex": None}
        if kind == "add":
            v["tags"] = _items(a.get("tags"))
            v["dataChange"] = False  # checkpoints carry dataChange=false
        return v  # a checkpoint's remove has no stats or tags
    if kind == "metaData":
        v = dict(a)
        v["format"] = {"provider": a["format"]["provider"], "options": _items(a["format"]["options"])}
        v["configuration"] = _items(a["configuration"])
        return v
    if kind == "protocol":
        return {"minReaderVersion": a["minReaderVersion"], "minWriterVersion": a["minWriterVersion"],
                "readerFeatures": a.get("readerFeatures"), "writerFeatures": a.get("writerFeatures")}
    if kind in ("checkpointMetadata", "sidecar"):
        v = dict(a)
        v["tags"] = _items(a.get("tags"))
        return v
    return dict(a)


COLUMN_TYPES = {"txn": TXN_T, "add": ADD_T, "remove": REMOVE_T, "metaData": META_T,
                "protocol": PROTOCOL_T, "domainMetadata": DOMAIN_T,
                "checkpointMetadata": CPMETA_T, "sidecar": SIDECAR_T}


def write_action_parquet(path: str, actions: list[dict], columns: list[str]) -> int:
    """Actions as a Parquet checkpoint / sidecar: one struct column per action kind."""
    rows = []
    for act in actions:
        ((kind, a),) = act.items()
        check(kind in columns, f"{kind} has no column in {os.path.basename(path)}")
        row = {c: None for c in columns}
        row[kind] = _struct_value(kind, a)
        rows.append(row)
    schema = pa.schema([pa.field(c, COLUMN_TYPES[c]) for c in columns])
    table = pa.Table.from_pylist(rows, schema=schema)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with pq.ParquetWriter(path, schema, compression="snappy", store_schema=False) as w:
        w.write_table(table)
        w.add_key_value_metadata({"org.apache.spark.version": "3.5.1"})
    return os.path.getsize(path)


DBR_ENGINE = "Databricks-Runtime/14.3.x-photon-scala2.12"
OSS_ENGINE = "Apache-Spark/3.5.1 Delta-Lake/3.2.0"


class TableWriter:
    """Writes one Delta table: data files, commits, checkpoints; tracks the live state."""

    def __init__(self, parent: str, name: str, index: int, *, engine: str = OSS_ENGINE,
                 root: str | None = None):
        check(name.isidentifier() and name == name.lower(), f"bad table name {name}")
        self.name = name
        self.root = root or os.path.join(parent, name)
        self.log = os.path.join(self.root, "_delta_log")
        os.makedirs(self.log)
        self.base_ms = BASE_MS + index * 86_400_000
        self.engine = engine
        self.version = -1
        self.file_seq = 0
        self.schema: list[Col] = []
        self.partition_cols: list[str] = []
        self.config: dict = {}
        self.protocol: dict = {}
        self.metadata: dict | None = None
        self.live: dict[str, tuple[DataFile, dict | None]] = {}  # path -> (file, add action)
        self.tombstones: dict[tuple[str, str | None], dict] = {}
        self.txns: dict[str, dict] = {}
        self.domains: dict[str, dict] = {}
        self.files: dict[str, DataFile] = {}
        self.dv_positions: dict[str, list[int]] = {}  # DV uniqueId -> deleted row indexes
        self.dvs: list[tuple[dict, list[int]]] = []   # every DV written, for the self-check
        self.parquet_expect: list[tuple[str, dict]] = []  # (rel path, expected physical facts)
        self.created_ms = self.base_ms + 1000

    # ----- clocks
    def commit_ms(self, version: int) -> int:
        return self.base_ms + 60_000 * (version + 1) + 321

    @property
    def next_ms(self) -> int:
        return self.commit_ms(self.version + 1)

    # ----- actions
    def protocol_action(self, reader: int, writer: int, reader_features: list | None = None,
                        writer_features: list | None = None) -> dict:
        p: dict[str, Any] = {"minReaderVersion": reader, "minWriterVersion": writer}
        if reader_features is not None:
            p["readerFeatures"] = reader_features
        if writer_features is not None:
            p["writerFeatures"] = writer_features
        return {"protocol": p}

    def metadata_action(self) -> dict:
        return {"metaData": {
            "id": str(det_uuid(self.name, "table-id")),
            "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_string(self.schema),
            "partitionColumns": [self.col(k).name for k in self.partition_cols],
            "configuration": dict(self.config),
            "createdTime": self.created_ms,
        }}

    def col(self, key: str) -> Col:
        for c in self.schema:
            if c.key == key:
                return c
        raise Failure(f"{self.name}: no column {key}")

    def data_cols(self) -> list[Col]:
        return [c for c in self.schema if c.key not in self.partition_cols]

    def file_cols(self) -> list[FileCol]:
        """The Parquet columns Spark writes for the current schema (physical names, ids).
        Spark's makeOutputNullable writes every column as optional, NOT NULL or not."""
        mode = self.config.get("delta.columnMapping.mode", "none")
        out = []
        for c in self.data_cols():
            if mode == "none":
                out.append(FileCol(c.key, c.name, c.type))
            else:
                md = {"delta.columnMapping.id": c.cm_id, "delta.columnMapping.physicalName": c.phys}
                out.append(FileCol(c.key, c.phys, c.type, True, c.cm_id, md))
        return out

    def write_file(self, rows: list[dict], *, cols: list[FileCol] | None = None, part: int = 0,
                   prefix: str = "part", subdir: str | None = None, int96: bool = False,
                   row_group_size: int | None = None, page_rows: int | None = None,
                   kv: dict | None = None, stats_cols: list[Col] | None = None,
                   tight: bool | None = None, name: str | None = None,
                   partition_iso_ts: bool = False, random_prefix: bool = False,
                   tags: dict | None = None, spark: bool = True) -> DataFile:
        """Write one data file for the upcoming commit and compute its add-action fields."""
        self.file_seq += 1
        cols = cols if cols is not None else self.file_cols()
        fid = det_uuid(self.name, "file", self.file_seq)
        fname = name or f"{prefix}-{part:05d}-{fid}-c000.snappy.parquet"
        pvals: dict[str, str | None] = {}
        dirs = []
        for k in self.partition_cols:
            c = self.col(k)
            vals = {r.get(k) for r in rows}
            check(len(vals) == 1, f"{self.name}: a file holds one partition")
            (v,) = vals
            pvals[c.stats_name] = partition_string(c.type, v, iso_ts=partition_iso_ts)
            dirs.append(f"{hive_escape(c.name)}={partition_dir_value(c.type, v)}")
        if random_prefix:
            dirs = [Z85_CHARS[fid.bytes[0] % 62] + Z85_CHARS[fid.bytes[1] % 62]] + dirs
        if subdir:
            dirs = [subdir] + dirs
        rel = "/".join(dirs + [fname])
        path = os.path.join(self.root, *rel.split("/"))
        write_parquet(path, cols, rows, int96=int96, row_group_size=row_group_size,
                      page_rows=page_rows, kv=kv, spark=spark)
        scols = stats_cols if stats_cols is not None else self.data_cols()
        stats = spark_stats(rows, scols, tight=tight)
        f = DataFile(rel=rel, path=uri_path(rel), size=os.path.getsize(path),
                     mtime=self.next_ms - 700, rows=list(rows), partition_values=pvals,
                     stats=stats, cols=cols, int96=int96, tags=tags)
        self.files[f.path] = f
        self.parquet_expect.append((rel, {
            "int96": [c.pname for c in cols if int96 and c.type in ("timestamp", "timestamp_ntz")],
            "utc": {c.pname: c.type == "timestamp" for c in cols
                    if not int96 and c.type in ("timestamp", "timestamp_ntz")},
            "field_ids": {c.pname: c.field_id for c in cols if c.field_id is not None},
            "columns": [c.pname for c in cols],
            "rows": len(rows),
            "spark": spark,
        }))
        return f

    def add(self, f: DataFile, *, data_change: bool = True, dv: dict | None = None,
            stats: str | None = None, extra: dict | None = None) -> dict:
        a: dict[str, Any] = {"path": f.path, "partitionValues": dict(f.partition_values),
                             "size": f.size, "modificationTime": f.mtime, "dataChange": data_change}
        s = stats if stats is not None else f.stats
        if s is not None:
            a["stats"] = s
        if f.tags is not None:
            a["tags"] = dict(f.tags)
        if dv is not None:
            a["deletionVector"] = dv
        a.update(extra or {})
        return {"add": a}

    def remove(self, f: DataFile, *, data_change: bool = True, dv: dict | None = None,
               extra: dict | None = None) -> dict:
        r: dict[str, Any] = {"path": f.path, "deletionTimestamp": self.next_ms - 50,
                             "dataChange": data_change, "extendedFileMetadata": True,
                             "partitionValues": dict(f.partition_values), "size": f.size}
        if f.tags is not None:
            r["tags"] = dict(f.tags)
        if dv is not None:
            r["deletionVector"] = dv
        r.update(extra or {})
        return {"remove": r}

    def cdc(self, rel: str, size: int) -> dict:
        return {"cdc": {"path": uri_path(rel), "partitionValues": {}, "size": size, "dataChange": False}}

    # ----- deletion vectors
    def dv_file(self, entries: list[tuple[DataFile, list[int]]]) -> list[dict]:
        """One `deletion_vector_<uuid>.bin` holding a DV per entry; returns descriptors."""
        self.file_seq += 1
        u = det_uuid(self.name, "dv", self.file_seq)
        blob = bytearray(b"\x01")
        descs = []
        for f, positions in entries:
            check(all(0 <= p < len(f.rows) for p in positions), "DV position out of range")
            data = dv_bitmap_bytes(positions)
            offset = len(blob)
            blob += struct.pack(">I", len(data)) + data + struct.pack(">I", zlib.crc32(data))
            desc = {"storageType": "u", "pathOrInlineDv": z85_encode(u.bytes), "offset": offset,
                    "sizeInBytes": len(data), "cardinality": len(set(positions))}
            self.dv_positions[dv_unique_id(desc)] = sorted(set(positions))
            self.dvs.append((desc, sorted(set(positions))))
            descs.append(desc)
        with open(os.path.join(self.root, f"deletion_vector_{u}.bin"), "wb") as fh:
            fh.write(blob)
        return descs

    def inline_dv(self, f: DataFile, positions: list[int]) -> dict:
        check(all(0 <= p < len(f.rows) for p in positions), "DV position out of range")
        data = dv_bitmap_bytes(positions)
        padded = data + b"\0" * (-len(data) % 4)
        desc = {"storageType": "i", "pathOrInlineDv": z85_encode(padded), "sizeInBytes": len(data),
                "cardinality": len(set(positions))}
        self.dv_positions[dv_unique_id(desc)] = sorted(set(positions))
        self.dvs.append((desc, sorted(set(positions))))
        return desc

    # ----- commits
    def commit(self, actions: list[dict], op: str, params: dict | None = None,
               metrics: dict | None = None, *, blind: bool = False, tags: dict | None = None,
               info: dict | None = None, engine: str | None = None) -> int:
        v = self.version + 1
        engine = engine or self.engine
        dbr = engine.startswith("Databricks")
        ci: dict[str, Any] = {"timestamp": self.commit_ms(v)}
        if dbr:
            ci["userId"] = "4815162342108"
            ci["userName"] = "etl-service@example.org"
        ci["operation"] = op
        ci["operationParameters"] = params or {}
        if dbr:
            ci["clusterId"] = "0601-000000-conform0"
        if v > 0:
            ci["readVersion"] = v - 1
        ci["isolationLevel"] = "WriteSerializable" if dbr else "Serializable"
        ci["isBlindAppend"] = blind
        ci["operationMetrics"] = {k: str(x) for k, x in (metrics or {}).items()}
        if tags:
            ci["tags"] = tags
        ci.update(info or {})
        ci["engineInfo"] = engine
        ci["txnId"] = str(det_uuid(self.name, "txn", v))
        lines = [{"commitInfo": ci}] + actions
        with open(os.path.join(self.log, f"{v:020d}.json"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(jdump(a) for a in lines) + "\n")
        self._apply(actions)
        self.version = v
        return v

    def _apply(self, actions: list[dict]) -> None:
        for act in actions:
            ((kind, a),) = act.items()
            if kind == "protocol":
                self.protocol = a
            elif kind == "metaData":
                self.metadata = a
            elif kind == "txn":
                self.txns[a["appId"]] = a
            elif kind == "domainMetadata":
                self.domains[a["domain"]] = a
        for act in actions:
            if "remove" in act:
                a = act["remove"]
                dvid = dv_unique_id(a["deletionVector"]) if a.get("deletionVector") else None
                cur = self.live.get(a["path"])
                check(cur is not None, f"{self.name}: remove of a file not in the table")
                cur_dv = cur[1].get("deletionVector")
                check((dv_unique_id(cur_dv) if cur_dv else None) == dvid,
                      f"{self.name}: remove names another DV than the live one")
                del self.live[a["path"]]
                self.tombstones[(a["path"], dvid)] = a
        for act in actions:
            if "add" in act:
                a = act["add"]
                check(a["path"] not in self.live, f"{self.name}: add of a live path without remove")
                self.live[a["path"]] = (self.files[a["path"]], a)
                dvid = dv_unique_id(a["deletionVector"]) if a.get("deletionVector") else None
                self.tombstones.pop((a["path"], dvid), None)

    def meta_commit(self, op: str, params: dict, *, protocol: dict | None = None) -> int:
        acts = [protocol] if protocol else []
        return self.commit(acts + [self.metadata_action()], op, params, {})

    # ----- checkpoints
    def snapshot_actions(self) -> tuple[list[dict], list[dict]]:
        """(non-file actions, file actions) of the current snapshot, as a checkpoint holds them."""
        non_file = [{"protocol": self.protocol}, {"metaData": self.metadata}]
        non_file += [{"txn": t} for t in self.txns.values()]
        non_file += [{"domainMetadata": d} for d in self.domains.values() if not d.get("removed")]
        files = [{"add": a} for _, (_, a) in sorted(self.live.items())]
        files += [{"remove": r} for _, r in sorted(self.tombstones.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))]
        return non_file, files

    def classic_checkpoint(self) -> dict:
        non_file, files = self.snapshot_actions()
        actions = non_file + files
        cols = ["txn", "add", "remove", "metaData", "protocol"]
        if self.domains:
            cols.append("domainMetadata")
        path = os.path.join(self.log, f"{self.version:020d}.checkpoint.parquet")
        size = write_action_parquet(path, actions, cols)
        lc: dict[str, Any] = {"version": self.version, "size": len(actions), "sizeInBytes": size,
                              "numOfAddFiles": sum(1 for a in files if "add" in a)}
        lc["checksum"] = last_checkpoint_checksum(lc)
        with open(os.path.join(self.log, "_last_checkpoint"), "w", encoding="utf-8") as fh:
            fh.write(jdump(lc))
        return lc

    def v2_checkpoint(self, fmt: str, sidecar_count: int = 2) -> str:
        """A UUID-named V2 checkpoint with its file actions in `_sidecars/`."""
        check(fmt in ("json", "parquet"), "v2 checkpoint format is json or parquet")
        non_file, files = self.snapshot_actions()
        v = self.version
        mtime = self.commit_ms(v) + 5_000
        sidecars = []
        chunks = [files[i::sidecar_count] for i in range(sidecar_count)]
        for i, chunk in enumerate(chunks):
            sname = (f"{v:020d}.checkpoint.{i + 1:010d}.{sidecar_count:010d}."
                     f"{det_uuid(self.name, 'sidecar', v, i)}.parquet")
            size = write_action_parquet(os.path.join(self.log, "_sidecars", sname), chunk,
                                        ["add", "remove"])
            sidecars.append({"path": sname, "sizeInBytes": size, "modificationTime": mtime})
        side_total = sum(s["sizeInBytes"] for s in sidecars)
        n_add = sum(1 for a in files if "add" in a)
        cp_meta = {"version": v, "tags": {"sidecarNumActions": str(len(files)),
                                          "sidecarSizeInBytes": str(side_total),
                                          "numOfAddFiles": str(n_add)}}
        top = [{"checkpointMetadata": cp_meta}] + [{"sidecar": s} for s in sidecars] + non_file
        cname = f"{v:020d}.checkpoint.{det_uuid(self.name, 'checkpoint', v)}.{fmt}"
        cpath = os.path.join(self.log, cname)
        if fmt == "json":
            with open(cpath, "w", encoding="utf-8") as fh:
                fh.write("\n".join(jdump(a) for a in top) + "\n")
            csize = os.path.getsize(cpath)
        else:
            cols = ["checkpointMetadata", "sidecar", "protocol", "metaData", "txn"]
            if self.domains:
                cols.append("domainMetadata")
            csize = write_action_parquet(cpath, top, cols)
        lc: dict[str, Any] = {
            "version": v, "size": len(top) + len(files),
            "sizeInBytes": csize + side_total, "numOfAddFiles": n_add,
            "v2Checkpoint": {"path": cname, "sizeInBytes": csize, "modificationTime": mtime,
                             "nonFileActions": [{"protocol": self.protocol},
                                                {"metaData": self.metadata},
                                                {"checkpointMetadata": cp_meta}],
                             "sidecarFiles": sidecars},
        }
        lc["checksum"] = last_checkpoint_checksum(lc)
        with open(os.path.join(self.log, "_last_checkpoint"), "w", encoding="utf-8") as fh:
            fh.write(jdump(lc))
        return cname

    # ----- expected rows
    def live_rows(self) -> list[dict]:
        """Rows of the live snapshot, keyed by Col.key, projected through the final schema."""
        out = []
        for _, (f, a) in sorted(self.live.items()):
            deleted = set()
            if a.get("deletionVector"):
                deleted = set(self.dv_positions[dv_unique_id(a["deletionVector"])])
            stored = {c.key: c.type for c in f.cols}
            for i, r in enumerate(f.rows):
                if i in deleted:
                    continue
                row = {}
                for c in self.schema:
                    if c.key in self.partition_cols:  # '' is written (and read) as null
                        v = r.get(c.key)
                        row[c.key] = None if partition_string(c.type, v) is None else v
                    elif c.key in stored:
                        row[c.key] = widen(r.get(c.key), stored[c.key], c.type)
                    else:
                        row[c.key] = None
                out.append(row)
        return out


def widen(v: Any, src: str, dst: str) -> Any:
    """A stored value read under a (possibly wider) table type."""
    if v is None or src == dst:
        return v
    if src == "date" and dst == "timestamp_ntz":
        return dt.datetime(v.year, v.month, v.day)
    if src in ("byte", "short", "integer", "long") and dst in ("short", "integer", "long", "double"):
        return v if dst != "double" else float(v)
    if src == "float" and dst == "double":
        return v  # already the exact value of the float32
    if src.startswith("decimal(") and dst.startswith("decimal("):
        return v
    raise Failure(f"unsupported widening {src} -> {dst}")


# ---------------------------------------------------------------------------
# Queries: SQL text plus the same predicate in Python (PostgreSQL semantics)
# ---------------------------------------------------------------------------


def _fkey(v: Any) -> Any:
    return (1, 0.0) if isinstance(v, float) and math.isnan(v) else (0, v)


def eq(k: str, x: Any) -> Callable[[dict], bool]:
    return lambda r: r[k] is not None and _fkey(r[k]) == _fkey(x)


def gt(k: str, x: Any) -> Callable[[dict], bool]:
    return lambda r: r[k] is not None and _fkey(r[k]) > _fkey(x)


def ge(k: str, x: Any) -> Callable[[dict], bool]:
    return lambda r: r[k] is not None and _fkey(r[k]) >= _fkey(x)


def lt(k: str, x: Any) -> Callable[[dict], bool]:
    return lambda r: r[k] is not None and _fkey(r[k]) < _fkey(x)


def le(k: str, x: Any) -> Callable[[dict], bool]:
    return lambda r: r[k] is not None and _fkey(r[k]) <= _fkey(x)


def is_null(k: str) -> Callable[[dict], bool]:
    return lambda r: r[k] is None


def not_null(k: str) -> Callable[[dict], bool]:
    return lambda r: r[k] is not None


def prefix(k: str, p: str) -> Callable[[dict], bool]:
    return lambda r: r[k] is not None and r[k].startswith(p)


def as_date(k: str, d: dt.date) -> Callable[[dict], bool]:
    return lambda r: r[k] is not None and r[k].date() == d


def all_of(*ps: Callable[[dict], bool]) -> Callable[[dict], bool]:
    return lambda r: all(p(r) for p in ps)


def never(_: dict) -> bool:
    return False


# ---------------------------------------------------------------------------
# The suite
# ---------------------------------------------------------------------------


@dataclass
class Built:
    writer: TableWriter
    about: str
    queries: list[tuple[str, Callable[[dict], bool]]]
    refused_feature: str | None = None


D = dt.date
T = dt.datetime
PREFIX32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
assert len(PREFIX32) == 32


def ramp(values: list, n: int, nulls: set[int], t: str) -> list:
    """n values rising with the row index, so each file and row group has narrow bounds;
    every value is used at least once, None at the `nulls` positions."""
    m = n - len(nulls)
    vals = sorted(values, key=lambda v: _order_key(t, v))
    check(len(vals) <= m, "more values than rows")
    picked = iter(vals[i * len(vals) // m] for i in range(m))
    return [None if k in nulls else next(picked) for k in range(n)]


def fixture_plain_types(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "plain_types", idx)
    t.schema = [
        Col("id", "id", "long", nullable=False), Col("b", "b", "byte"), Col("s", "s", "short"),
        Col("i", "i", "integer"), Col("l", "l", "long"), Col("f", "f", "float"),
        Col("d", "d", "double"), Col("dec", "dec", "decimal(12,2)"),
        Col("note", "note", "string", tag="phi.direct"), Col("bin", "bin", "binary"),
        Col("flag", "flag", "boolean"), Col("dt", "dt", "date"), Col("ts", "ts", "timestamp"),
    ]
    n = 33
    inf, nan = math.inf, math.nan
    values = {
        "b": ([-128, -100, -50, -1, 0, 1, 50, 100, 127], {4, 21}),
        "s": ([-32768, -1000, -1, 0, 1, 300, 1000, 32767], {9}),
        "i": ([-2147483648, -65536, -7, 0, 42, 65536, 2147483647], {15, 30}),
        "l": ([-9223372036854775808, -1, 0, 1234567890123, 9223372036854775807], {2}),
        "f": ([f32(x) for x in (-inf, -1.5, -0.0, 1.401298464324817e-45, 1e-5, 0.1, 1.5,
                                3.4028234663852886e38, inf, nan)], {12, 27}),
        "d": ([-inf, -1e20, -0.0, 5e-324, 1.5e-7, 0.1, 2.5, 1e15, 123456789012345.6,
               1.2345678901234568e17, 1e20, inf, nan], {7}),
        "dec": ([Decimal(x) for x in ("-9999999999.99", "-1.00", "0.00", "0.05", "12.30",
                                      "9999999999.99")], {3, 18}),
        "note": (["", PREFIX32, PREFIX32 + "-tail-one", PREFIX32 + "-tail-two",
                  PREFIX32[:31] + "\U0001f642x", PREFIX32 + "\u00e9 and more",
                  PREFIX32[:31] + "\U0010ffff\U0010ffffzz", "Z\u00fcrich\ttab\nnewline", "plain",
                  "\u00e9\u65e5\u672c\u8a9e\U0001f642"], {25}),
        "bin": ([b"", b"\x00\xff", b"\x0a\x0b", bytes(range(16))], {6, 22}),
        "flag": ([False, True], {1, 14, 29}),
        "dt": ([D(1800, 1, 1), D(1899, 12, 31), D(1970, 1, 1), D(2024, 2, 29), D(9999, 12, 31)], {10}),
        "ts": ([T(1800, 1, 1), T(1899, 12, 31, 23, 59, 59, 999999), T(1969, 12, 31, 23, 59, 59, 999999),
                T(1970, 1, 1), T(2024, 1, 2, 3, 4, 5, 123456), T(2024, 6, 30, 12, 0, 0, 500000),
                T(9999, 12, 31, 23, 59, 59, 999999)], {19, 32}),
    }
    cols = {k: ramp(v, n, nulls, t.col(k).type) for k, (v, nulls) in values.items()}
    rows = [{"id": j + 1, **{k: cols[k][j] for k in cols}} for j in range(n)]
    opts = dict(row_group_size=4, page_rows=2)
    f1 = t.write_file(rows[:14], part=0, **opts)
    f2 = t.write_file(rows[14:24], part=1, **opts)
    t.commit([t.protocol_action(1, 2), t.metadata_action(), t.add(f1), t.add(f2)],
             "CREATE TABLE AS SELECT",
             {"isManaged": "true", "description": None, "partitionBy": "[]", "properties": "{}"},
             {"numFiles": 2, "numOutputRows": 24, "numOutputBytes": f1.size + f2.size}, blind=True)
    f3 = t.write_file(rows[24:], part=0, **opts)
    t.commit([t.add(f3)], "WRITE", {"mode": "Append", "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 9, "numOutputBytes": f3.size}, blind=True)
    q = [
        ("i = 2147483647", eq("i", 2147483647)),
        ("dt = DATE '1899-12-31'", eq("dt", D(1899, 12, 31))),
        ("ts >= TIMESTAMP '2024-01-01 00:00:00' AND ts < TIMESTAMP '2025-01-01 00:00:00'",
         all_of(ge("ts", T(2024, 1, 1)), lt("ts", T(2025, 1, 1)))),
        ("CAST(ts AS DATE) = DATE '9999-12-31'", as_date("ts", D(9999, 12, 31))),
        (f"note = '{PREFIX32}-tail-two'", eq("note", PREFIX32 + "-tail-two")),
        (f"note LIKE '{PREFIX32}%'", prefix("note", PREFIX32)),
        ("d = CAST('NaN' AS DOUBLE)", eq("d", math.nan)),
        # -0 equals 0; NaN is above every number (PostgreSQL's order).
        ("d = 0", eq("d", 0.0)),
        ("f > 1e30", gt("f", 1e30)),
        ("dec >= 100.00", ge("dec", Decimal("100.00"))),
        ("flag = false", eq("flag", False)),
        ("l = 42 OR dec IS NULL AND flag IS NULL AND b = 99", never),
    ]
    return Built(t, "Spark 3.5 CTAS + append: every primitive type with edge values (NaN, -0, "
                    "infinities, extreme integers, 1800/9999 dates and timestamps, strings over 32 "
                    "chars sharing a stats prefix, surrogate pairs); small row groups, page indexes", q)


def fixture_int96_and_micros(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "int96_and_micros", idx, engine="Apache-Spark/3.1.2 Delta-Lake/1.0.0")
    t.schema = [Col("id", "id", "long"), Col("ts", "ts", "timestamp"), Col("d", "d", "date"),
                Col("note", "note", "string", tag="phi.direct")]
    kinds = [T(9999, 12, 31), T(9999, 12, 30), T(1816, 3, 29), T(1899, 12, 31, 23, 59, 59, 123456),
             T(1970, 1, 1), T(2024, 6, 30, 12, 0, 0, 500000), None]

    def rows(start: int, label: str) -> list[dict]:
        return [{"id": start + k, "ts": v, "d": v.date() if v else None,
                 "note": f"{label} {k}"} for k, v in enumerate(kinds)]

    legacy = {"org.apache.spark.version": "3.1.2", "org.apache.spark.legacyINT96": "",
              "org.apache.spark.legacyDateTime": ""}
    fa = t.write_file(rows(1, "int96"), int96=True, kv=legacy)
    t.commit([t.protocol_action(1, 2), t.metadata_action(), t.add(fa)], "CREATE TABLE AS SELECT",
             {"isManaged": "true", "description": None, "partitionBy": "[]", "properties": "{}"},
             {"numFiles": 1, "numOutputRows": 7, "numOutputBytes": fa.size}, blind=True)
    fb = t.write_file(rows(8, "micros"), kv={"org.apache.spark.version": "3.5.1"})
    t.commit([t.add(fb)], "WRITE", {"mode": "Append", "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 7, "numOutputBytes": fb.size}, blind=True,
             engine=OSS_ENGINE)
    q = [
        ("CAST(ts AS DATE) = DATE '9999-12-31'", as_date("ts", D(9999, 12, 31))),
        ("CAST(ts AS DATE) = DATE '9999-12-30'", as_date("ts", D(9999, 12, 30))),
        ("ts = TIMESTAMP '1899-12-31 23:59:59.123456'", eq("ts", T(1899, 12, 31, 23, 59, 59, 123456))),
        ("ts < TIMESTAMP '1900-01-01 00:00:00'", lt("ts", T(1900, 1, 1))),
        ("ts IS NULL", is_null("ts")),
        ("ts = TIMESTAMP '2024-06-30 12:00:00.5'", eq("ts", T(2024, 6, 30, 12, 0, 0, 500000))),
        ("d = DATE '1816-03-29'", eq("d", D(1816, 3, 29))),
        ("ts = TIMESTAMP '2000-01-01 00:00:00'", never),
    ]
    return Built(t, "the same timestamps as legacy INT96 (Spark 3.1, LEGACY rebase metadata) in "
                    "one file and TIMESTAMP_MICROS in another, incl. 9999-12-31 beyond the "
                    "nanosecond range; Spark's ms-truncated ISO stats", q)


def fixture_timestamp_ntz(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "timestamp_ntz", idx)
    t.schema = [Col("id", "id", "long"), Col("ntz", "ntz", "timestamp_ntz"),
                Col("ts", "ts", "timestamp"), Col("note", "note", "string", tag="phi.direct")]
    vals = [T(2024, 1, 2, 3, 4, 5, 500000), T(1900, 1, 1), T(9999, 12, 31, 23, 59, 59, 999999),
            T(1970, 1, 1), T(1969, 12, 31, 23, 59, 59, 999999), None,
            T(2024, 1, 2, 3, 4, 5, 123456), T(2000, 2, 29, 23, 0, 0)]
    rows = []
    for k, v in enumerate(vals):
        rows.append({"id": k + 1, "ntz": v, "ts": (v + dt.timedelta(hours=1)) if v and v.year < 9999 else v,
                     "note": f"wall clock {k}"})
    proto = t.protocol_action(3, 7, ["timestampNtz"], ["timestampNtz"])
    f1 = t.write_file(rows[:4])
    f2 = t.write_file(rows[4:], part=1)
    t.commit([proto, t.metadata_action(), t.add(f1), t.add(f2)], "CREATE TABLE AS SELECT",
             {"isManaged": "true", "description": None, "partitionBy": "[]", "properties": "{}"},
             {"numFiles": 2, "numOutputRows": 8, "numOutputBytes": f1.size + f2.size}, blind=True)
    extra = [{"id": 9, "ntz": T(2024, 12, 24, 18, 0), "ts": T(2024, 12, 24, 18, 0), "note": "late"}]
    f3 = t.write_file(extra)
    t.commit([t.add(f3)], "WRITE", {"mode": "Append", "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 1, "numOutputBytes": f3.size}, blind=True)
    q = [
        ("ntz = TIMESTAMP '2024-01-02 03:04:05.5'", eq("ntz", T(2024, 1, 2, 3, 4, 5, 500000))),
        ("ntz < TIMESTAMP '1970-01-01 00:00:00'", lt("ntz", T(1970, 1, 1))),
        ("CAST(ntz AS DATE) = DATE '9999-12-31'", as_date("ntz", D(9999, 12, 31))),
        ("ntz IS NULL", is_null("ntz")),
        ("ts > TIMESTAMP '2000-01-01 00:00:00'", gt("ts", T(2000, 1, 1))),
        ("ntz = TIMESTAMP '2000-01-01 00:00:00'", never),
    ]
    return Built(t, "timestampNtz reader feature: TIMESTAMP(isAdjustedToUTC=false) beside a UTC "
                    "timestamp; NTZ stats without a zone suffix", q)


def fixture_deletion_vectors(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "deletion_vectors", idx, engine=DBR_ENGINE)
    t.schema = [Col("id", "id", "long"), Col("grp", "grp", "integer"),
                Col("note", "note", "string", tag="phi.direct"), Col("score", "score", "double")]
    t.config = {"delta.enableDeletionVectors": "true"}

    def mk(ids: range) -> list[dict]:
        return [{"id": i, "grp": i % 5, "note": f"note-{i:03d}", "score": i * 1.5} for i in ids]

    tags = lambda: {"INSERTION_TIME": str(t.next_ms * 1000), "OPTIMIZE_TARGET_SIZE": "268435456"}
    rg = dict(row_group_size=8)
    fa = t.write_file(mk(range(1, 41)), part=0, tight=True, tags=tags(), **rg)
    fb = t.write_file(mk(range(41, 81)), part=1, tight=True, tags=tags(), **rg)
    fc = t.write_file(mk(range(81, 101)), part=2, tight=True, tags=tags(), **rg)
    proto = t.protocol_action(3, 7, ["deletionVectors"], ["deletionVectors"])
    t.commit([proto, t.metadata_action(), t.add(fa), t.add(fb), t.add(fc)],
             "CREATE TABLE AS SELECT",
             {"isManaged": "true", "description": None, "partitionBy": "[]",
              "properties": '{"delta.enableDeletionVectors":"true"}', "statsOnLoad": False},
             {"numFiles": 3, "numOutputRows": 100, "numOutputBytes": fa.size + fb.size + fc.size})

    def pos(f: DataFile, ids: list[int]) -> list[int]:
        return [k for k, r in enumerate(f.rows) if r["id"] in ids]

    def delete(ids: list[int], dvs: list[tuple[DataFile, dict, dict | None]], files: int) -> None:
        acts = []
        for f, new, old in dvs:
            acts.append(t.remove(f, dv=old))
            acts.append(t.add(f, dv=new, stats=with_tight(f.stats, False)))
        t.commit(acts, "DELETE", {"predicate": jdump([f"id#412L IN ({','.join(map(str, ids))})"])},
                 {"numRemovedFiles": 0, "numCopiedRows": 0, "numDeletionVectorsAdded": files,
                  "numDeletionVectorsRemoved": sum(1 for _, _, o in dvs if o),
                  "numAddedChangeFiles": 0, "numDeletedRows": len(ids), "numAddedFiles": 0})

    # v1: one DELETE, two DVs stored in one DV file
    del1 = [3, 12, 27, 38, 44, 59, 71, 72, 73, 74, 75]
    da1, db1 = t.dv_file([(fa, pos(fa, del1)), (fb, pos(fb, del1))])
    delete(del1, [(fa, da1, None), (fb, db1, None)], 2)
    # v2: an inline DV (storageType i)
    del2 = [85, 86, 87, 88, 89, 90, 99]
    dc = t.inline_dv(fc, pos(fc, del2))
    delete(del2, [(fc, dc, None)], 1)
    # v3: A's DV grows: remove with the old DV + add with the union
    del3 = [5, 33]
    (da2,) = t.dv_file([(fa, sorted(set(pos(fa, del1 + del3))))])
    delete(del3, [(fa, da2, da1)], 1)
    # v4: append
    fd = t.write_file(mk(range(101, 131)), tight=True, tags=tags(), **rg)
    t.commit([t.add(fd)], "WRITE", {"mode": "Append", "statsOnLoad": False, "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 30, "numOutputBytes": fd.size}, blind=True)
    # v5: OPTIMIZE compacts A and B (dropping their deleted rows)
    keep = [r for f, d in ((fa, da2), (fb, db1)) for k, r in enumerate(f.rows)
            if k not in set(t.dv_positions[dv_unique_id(d)])]
    fe = t.write_file(keep, tight=True, tags=tags(), **rg)
    t.commit([t.remove(fa, dv=da2, data_change=False), t.remove(fb, dv=db1, data_change=False),
              t.add(fe, data_change=False)], "OPTIMIZE",
             {"predicate": "[]", "zOrderBy": "[]", "batchId": "0", "auto": False},
             {"numRemovedFiles": 2, "numAddedFiles": 1, "numDeletionVectorsRemoved": 2,
              "numRemovedBytes": fa.size + fb.size, "numAddedBytes": fe.size},
             tags={"noRowsCopied": "false"})
    # v6: new DVs on the compacted file (spread over its row groups) and on D, one DV file
    del6 = [2, 20, 35, 52, 67, 80, 101, 115, 116, 130]
    de, dd = t.dv_file([(fe, pos(fe, del6)), (fd, pos(fd, del6))])
    delete(del6, [(fe, de, None), (fd, dd, None)], 2)
    q = [
        ("id = 5", eq("id", 5)),
        ("id BETWEEN 35 AND 45", all_of(ge("id", 35), le("id", 45))),
        ("grp = 3", eq("grp", 3)),
        ("note LIKE 'note-08%'", prefix("note", "note-08")),
        ("id > 100 AND id <= 118", all_of(gt("id", 100), le("id", 118))),
        ("score > 150", gt("score", 150.0)),
        ("grp = 99", never),
    ]
    return Built(t, "Databricks deletion vectors: two DVs in one DV file, an inline DV, a DV "
                    "that grows (remove old DV + add new), OPTIMIZE dropping deleted rows, new DVs "
                    "on the compacted file; deleted rows spread over row groups", q)


def fixture_column_mapping_name(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "column_mapping_name", idx, engine=DBR_ENGINE)
    u = lambda k: f"col-{det_uuid('column_mapping_name', 'col', k)}"
    t.schema = [
        Col("id", "id", "long", cm_id=1, phys=u("id")),
        Col("full_name", "full_name", "string", tag="phi.direct", cm_id=2, phys=u("full_name")),
        Col("dept", "dept", "string", cm_id=3, phys=u("dept")),
        Col("legacy_code", "legacy_code", "integer", cm_id=4, phys=u("legacy_code")),
        Col("note_v1", "note", "string", cm_id=5, phys=u("note_v1")),
    ]
    t.config = {"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "5"}
    names = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John"]
    depts = ["cardiology", "oncology", "radiology", None]

    def mk(ids: range, note: bool = True, score: bool = False) -> list[dict]:
        rows = []
        for i in ids:
            r = {"id": i, "full_name": f"{names[i % len(names)]} {i}", "dept": depts[i % 4],
                 "legacy_code": 1000 + i, "note_v1": f"old note {i}" if note else None}
            if score:
                r["score"] = None if i % 7 == 0 else i * 3
            rows.append(r)
        return rows

    f1 = t.write_file(mk(range(1, 9)), random_prefix=True)
    f2 = t.write_file(mk(range(9, 17)), part=1, random_prefix=True)
    t.commit([t.protocol_action(2, 5), t.metadata_action(), t.add(f1), t.add(f2)],
             "CREATE TABLE AS SELECT",
             {"isManaged": "true", "description": None, "partitionBy": "[]",
              "properties": '{"delta.columnMapping.mode":"name"}', "statsOnLoad": False},
             {"numFiles": 2, "numOutputRows": 16, "numOutputBytes": f1.size + f2.size})
    t.col("dept").name = "department"
    t.meta_commit("RENAME COLUMN", {"oldColumnPath": "dept", "newColumnPath": "department"})
    t.schema = [c for c in t.schema if c.key != "legacy_code"]
    t.meta_commit("DROP COLUMNS", {"columns": '["legacy_code"]'})
    t.schema.append(Col("score", "score", "integer", cm_id=6, phys=u("score")))
    t.config["delta.columnMapping.maxColumnId"] = "6"
    t.meta_commit("ADD COLUMNS", {"columns": '[{"column":{"name":"score","type":"integer","nullable":true,"metadata":{}}}]'})
    f3 = t.write_file(mk(range(17, 25), score=True), random_prefix=True)
    t.commit([t.add(f3)], "WRITE", {"mode": "Append", "statsOnLoad": False, "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 8, "numOutputBytes": f3.size}, blind=True)
    t.schema = [c for c in t.schema if c.key != "note_v1"]
    t.meta_commit("DROP COLUMNS", {"columns": '["note"]'})
    t.schema.append(Col("note_v2", "note", "string", cm_id=7, phys=u("note_v2")))
    t.config["delta.columnMapping.maxColumnId"] = "7"
    t.meta_commit("ADD COLUMNS", {"columns": '[{"column":{"name":"note","type":"string","nullable":true,"metadata":{}}}]'})
    rows4 = mk(range(25, 31), note=False, score=True)
    for r in rows4:
        r["note_v2"] = f"new note {r['id']}" if r["id"] % 3 else None
    f4 = t.write_file(rows4, random_prefix=True)
    t.commit([t.add(f4)], "WRITE", {"mode": "Append", "statsOnLoad": False, "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 6, "numOutputBytes": f4.size}, blind=True)
    q = [
        ("department = 'cardiology'", eq("department", "cardiology")),
        ("department IS NULL", is_null("department")),
        ("score IS NULL", is_null("score")),
        ("note IS NOT NULL", not_null("note")),
        ("full_name LIKE 'A%'", prefix("full_name", "A")),
        ("score >= 60", ge("score", 60)),
        ("department = 'none'", never),
    ]
    return Built(t, "column mapping by name (protocol 2/5): physical col-<uuid> Parquet names with "
                    "field ids in random-prefix dirs, a rename, a dropped column still in old files, "
                    "an added column, and a dropped-then-re-added name whose old data must not show", q)


def fixture_column_mapping_id(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "column_mapping_id", idx, engine=DBR_ENGINE)
    t.schema = [
        Col("id", "id", "long", cm_id=1, phys="id"),
        Col("patient_name", "patient_name", "string", tag="phi.direct", cm_id=2, phys="patient_name"),
        Col("risk", "risk_score", "integer", cm_id=3, phys="risk_score"),
        Col("ward", "ward", "string", cm_id=5, phys="ward"),
    ]
    t.config = {"delta.columnMapping.mode": "id", "delta.columnMapping.maxColumnId": "5"}
    people = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov",
              "Donald Knuth"]
    def ice(fields: list[tuple[int, str, str]]) -> dict:
        return {"iceberg.schema": jdump({"type": "struct", "schema-id": len(fields) - 4, "fields": [
            {"id": i, "name": nm, "required": False, "type": ty} for i, nm, ty in fields]})}

    # Iceberg file 1, written before Iceberg dropped column 4 `risk_score` and renamed
    # column 3 `score` to `risk_score`: the Parquet names are the old ones.
    r1 = [{"id": k + 1, "patient_name": people[k], "risk": v, "old_risk": 990 + k}
          for k, v in enumerate([10, 20, None, 40, 7, 60])]
    c1 = [FileCol("id", "id", "long", True, 1), FileCol("patient_name", "patient_name", "string", True, 2),
          FileCol("risk", "score", "integer", True, 3), FileCol("old_risk", "risk_score", "integer", True, 4)]
    i1 = t.write_file(r1, cols=c1, subdir="data", name=f"00000-0-{det_uuid('cmid', 'i1')}-00001.parquet",
                      spark=False, kv=ice([(1, "id", "long"), (2, "patient_name", "string"),
                                           (3, "score", "int"), (4, "risk_score", "int")]))
    r2 = [{"id": k + 7, "patient_name": people[k], "risk": v, "ward": w}
          for k, (v, w) in enumerate([(7, "A"), (55, "B"), (8, "A"), (None, "C"), (90, None), (3, "B")])]
    c2 = [FileCol("id", "id", "long", True, 1), FileCol("patient_name", "patient_name", "string", True, 2),
          FileCol("risk", "risk_score", "integer", True, 3), FileCol("ward", "ward", "string", True, 5)]
    i2 = t.write_file(r2, cols=c2, subdir="data", name=f"00001-0-{det_uuid('cmid', 'i2')}-00001.parquet",
                      spark=False, kv=ice([(1, "id", "long"), (2, "patient_name", "string"),
                                           (3, "risk_score", "int"), (5, "ward", "string")]))
    proto = t.protocol_action(3, 7, ["columnMapping"], ["columnMapping"])
    t.commit([proto, t.metadata_action(), t.add(i1), t.add(i2)], "CONVERT",
             {"numFiles": 2, "partitionedBy": "[]", "collectStats": True, "sourceFormat": "iceberg"},
             {"numConvertedFiles": 2})
    r3 = [{"id": k + 13, "patient_name": people[k % 6] + " Jr.", "risk": v, "ward": w}
          for k, (v, w) in enumerate([(7, "B"), (70, "A"), (None, "A"), (12, None), (33, "C"), (51, "B")])]
    f3 = t.write_file(r3, random_prefix=True)
    t.commit([t.add(f3)], "WRITE", {"mode": "Append", "statsOnLoad": False, "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 6, "numOutputBytes": f3.size}, blind=True)
    t.col("risk").name = "risk"
    t.meta_commit("RENAME COLUMN", {"oldColumnPath": "risk_score", "newColumnPath": "risk"})
    r4 = [{"id": k + 19, "patient_name": people[k % 6] + " III", "risk": v, "ward": "D"}
          for k, v in enumerate([1, 99, None, 7])]
    f4 = t.write_file(r4, random_prefix=True)
    t.commit([t.add(f4)], "WRITE", {"mode": "Append", "statsOnLoad": False, "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 4, "numOutputBytes": f4.size}, blind=True)
    q = [
        ("risk = 7", eq("risk", 7)),
        ("risk > 50", gt("risk", 50)),
        ("risk IS NULL", is_null("risk")),
        ("ward = 'B'", eq("ward", "B")),
        ("ward IS NULL", is_null("ward")),
        ("patient_name = 'Grace Hopper'", eq("patient_name", "Grace Hopper")),
        ("risk = 12345", never),
    ]
    return Built(t, "column mapping by id (reader feature columnMapping), as CONVERT TO DELTA from "
                    "Iceberg leaves it: an old file whose Parquet name risk_score belongs to another "
                    "(dropped) field id, so only field-id resolution is right; later rename", q)


def _simple_rows(ids: range, label: str) -> list[dict]:
    return [{"id": i, "name": f"{label} {i}", "created_at": T(2024, 5, 1) + dt.timedelta(hours=7 * i, microseconds=1234 * i),
             "amount": Decimal(i * 1234) / Decimal(100)} for i in ids]


def _checkpoint_v2(parent: str, idx: int, name: str, fmt: str) -> Built:
    t = TableWriter(parent, name, idx, engine="Databricks-Runtime/17.0.x-photon-scala2.13")
    t.schema = [Col("id", "id", "long"), Col("name", "name", "string", tag="phi.direct"),
                Col("created_at", "created_at", "timestamp"), Col("amount", "amount", "decimal(10,2)")]
    t.config = {"delta.checkpointPolicy": "v2", "delta.checkpointInterval": "4"}
    proto = t.protocol_action(3, 7, ["v2Checkpoint"], ["v2Checkpoint", "appendOnly", "invariants"])
    t.commit([proto, t.metadata_action()], "CREATE TABLE",
             {"partitionBy": "[]", "clusterBy": "[]", "description": None, "isManaged": "true",
              "properties": '{"delta.checkpointPolicy":"v2"}', "statsOnLoad": False}, {}, blind=True)
    files = []
    for k in range(3):
        ids = range(k * 10 + 1, k * 10 + 11)
        fs = [t.write_file(_simple_rows(ids[:5], "batch"), part=0),
              t.write_file(_simple_rows(ids[5:], "batch"), part=1)]
        files += fs
        t.commit([t.add(f) for f in fs], "WRITE",
                 {"mode": "Append", "statsOnLoad": True, "partitionBy": "[]"},
                 {"numFiles": 2, "numOutputRows": 10, "numOutputBytes": sum(f.size for f in fs)},
                 blind=True)
    t.commit([t.remove(files[1])], "DELETE", {"predicate": '["(id#17L >= 6) AND (id#17L <= 10)"]'},
             {"numRemovedFiles": 1, "numDeletedRows": 5, "numAddedFiles": 0, "numCopiedRows": 0})
    cname = t.v2_checkpoint(fmt)
    f7 = t.write_file(_simple_rows(range(31, 36), "after checkpoint"))
    t.commit([t.add(f7)], "WRITE", {"mode": "Append", "statsOnLoad": True, "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 5, "numOutputBytes": f7.size}, blind=True)
    t.commit([t.remove(files[2])], "DELETE", {"predicate": '["(id#17L >= 11) AND (id#17L <= 15)"]'},
             {"numRemovedFiles": 1, "numDeletedRows": 5, "numAddedFiles": 0, "numCopiedRows": 0})
    q = [
        ("id = 3", eq("id", 3)),
        ("id = 8", eq("id", 8)),
        ("id BETWEEN 12 AND 17", all_of(ge("id", 12), le("id", 17))),
        ("created_at >= TIMESTAMP '2024-05-10 00:00:00'", ge("created_at", T(2024, 5, 10))),
        ("name LIKE 'after%'", prefix("name", "after")),
        ("amount = 37.02", eq("amount", Decimal("37.02"))),
        ("id > 1000", never),
    ]
    return Built(t, f"v2Checkpoint reader feature: UUID-named {fmt.upper()} V2 checkpoint "
                    f"({cname.split('.')[-1]}) with checkpointMetadata and two sidecar Parquet files "
                    "in _delta_log/_sidecars holding adds and a remove tombstone, _last_checkpoint "
                    "with v2Checkpoint and checksum; an add and a remove after it", q)


def fixture_checkpoint_v2(parent: str, idx: int) -> Built:
    return _checkpoint_v2(parent, idx, "checkpoint_v2", "json")


def fixture_checkpoint_v2_parquet(parent: str, idx: int) -> Built:
    return _checkpoint_v2(parent, idx, "checkpoint_v2_parquet", "parquet")


def fixture_checkpoint_only(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "checkpoint_only", idx)
    t.schema = [Col("id", "id", "long"), Col("city", "city", "string"),
                Col("visits", "visits", "integer"), Col("contact", "contact", "string", tag="phi.direct")]
    cities = ["Lyon", "Oslo", "Porto", "Quito", "Turku"]

    def mk(ids: range, bump: int = 0) -> list[dict]:
        return [{"id": i, "city": cities[i % 5], "visits": i * 2 + bump,
                 "contact": f"person{i}@example.org"} for i in ids]

    f0 = t.write_file(mk(range(1, 6)))
    f1 = t.write_file(mk(range(6, 11)), part=1)
    t.commit([t.protocol_action(1, 2), t.metadata_action(), t.add(f0), t.add(f1)],
             "CREATE TABLE AS SELECT",
             {"isManaged": "false", "description": None, "partitionBy": "[]", "properties": "{}"},
             {"numFiles": 2, "numOutputRows": 10, "numOutputBytes": f0.size + f1.size}, blind=True)
    app = str(det_uuid("checkpoint_only", "stream"))
    fs = []
    for batch in range(2):
        f = t.write_file(mk(range(11 + 5 * batch, 16 + 5 * batch)))
        fs.append(f)
        t.commit([{"txn": {"appId": app, "version": batch, "lastUpdated": t.next_ms}}, t.add(f)],
                 "STREAMING UPDATE",
                 {"outputMode": "Append", "queryId": app, "epochId": str(batch)},
                 {"numRemovedFiles": 0, "numOutputRows": 5, "numOutputBytes": f.size,
                  "numAddedFiles": 1}, blind=True)
    t.commit([t.remove(f1)], "DELETE", {"predicate": '["(id#9L >= 6) AND (id#9L <= 10)"]'},
             {"numRemovedFiles": 1, "numDeletedRows": 5, "numAddedFiles": 0, "numCopiedRows": 0})
    upd = mk(range(1, 6), bump=100)
    f4 = t.write_file(upd)
    t.commit([t.remove(f0), t.add(f4)], "UPDATE", {"predicate": '["(id#9L <= 5)"]'},
             {"numRemovedFiles": 1, "numAddedFiles": 1, "numUpdatedRows": 5, "numCopiedRows": 0})
    lc = t.classic_checkpoint()
    for v in range(0, lc["version"] + 1):  # metadata cleanup
        os.remove(os.path.join(t.log, f"{v:020d}.json"))
    f5 = t.write_file(mk(range(21, 26)))
    t.commit([t.add(f5)], "WRITE", {"mode": "Append", "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 5, "numOutputBytes": f5.size}, blind=True)
    t.commit([t.remove(fs[0])], "DELETE", {"predicate": '["(id#9L >= 11) AND (id#9L <= 15)"]'},
             {"numRemovedFiles": 1, "numDeletedRows": 5, "numAddedFiles": 0, "numCopiedRows": 0})
    q = [
        ("id = 3", eq("id", 3)),
        ("id = 12", eq("id", 12)),
        ("visits > 100", gt("visits", 100)),
        ("city = 'Oslo'", eq("city", "Oslo")),
        ("id >= 16 AND id <= 22", all_of(ge("id", 16), le("id", 22))),
        ("visits = 7", never),
    ]
    return Built(t, "classic single-part Parquet checkpoint (txn, adds, remove tombstones, metaData, "
                    "protocol) with the JSON commits up to and including its version cleaned up; "
                    "_last_checkpoint; an append and a remove after it", q)


def fixture_clustered_row_tracking(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "clustered_row_tracking", idx, engine=DBR_ENGINE)
    t.schema = [Col("id", "id", "long"), Col("region", "region", "string"),
                Col("visit_date", "visit_date", "date"), Col("note", "note", "string", tag="phi.direct")]
    row_id_col = f"_row-id-col-{det_uuid('crt', 'rowid')}"
    commit_col = f"_row-commit-version-col-{det_uuid('crt', 'commitversion')}"
    t.config = {"delta.enableRowTracking": "true",
                "delta.rowTracking.materializedRowIdColumnName": row_id_col,
                "delta.rowTracking.materializedRowCommitVersionColumnName": commit_col}
    regions = ["north", "south", "east", "west"]

    def mk(ids: range) -> list[dict]:
        return [{"id": i, "region": regions[(i * 7) % 4], "visit_date": D(2024, 1, 1) + dt.timedelta(days=3 * i),
                 "note": f"visit {i}"} for i in ids]

    proto = t.protocol_action(3, 7, [], ["clustering", "domainMetadata", "rowTracking"])
    clustering = {"domainMetadata": {"domain": "delta.clustering",
                                     "configuration": jdump({"clusteringColumns": [["region"], ["visit_date"]],
                                                             "domainName": "delta.clustering"}),
                                     "removed": False}}
    t.commit([proto, t.metadata_action(), clustering], "CREATE TABLE",
             {"partitionBy": "[]", "clusterBy": '["region","visit_date"]', "description": None,
              "isManaged": "true", "properties": jdump(t.config), "statsOnLoad": False}, {}, blind=True)
    hwm = -1

    def hwm_action(h: int) -> dict:
        return {"domainMetadata": {"domain": "delta.rowTracking",
                                   "configuration": jdump({"rowIdHighWaterMark": h, "domainName": "delta.rowTracking"}),
                                   "removed": False}}

    base: dict[str, tuple[int, int]] = {}
    inserted = []
    for k in range(2):
        f = t.write_file(mk(range(k * 10 + 1, k * 10 + 11)))
        v = t.version + 1
        base[f.path] = (hwm + 1, v)
        inserted.append(f)
        hwm += len(f.rows)
        t.commit([t.add(f, extra={"baseRowId": base[f.path][0], "defaultRowCommitVersion": v}),
                  hwm_action(hwm)], "WRITE", {"mode": "Append", "statsOnLoad": False, "partitionBy": "[]"},
                 {"numFiles": 1, "numOutputRows": 10, "numOutputBytes": f.size}, blind=True,
                 tags={"delta.rowTracking.preserved": "true", "noRowsCopied": "true"})
    # OPTIMIZE (liquid): rewrite both files clustered by region, materialising row ids and
    # commit versions so stable row ids survive.
    moved = []
    for f in inserted:
        b, v = base[f.path]
        for k, r in enumerate(f.rows):
            moved.append({**r, "_row_id": b + k, "_row_commit": v})
    moved.sort(key=lambda r: (r["region"], r["visit_date"]))
    cols = t.file_cols() + [FileCol("_row_id", row_id_col, "long"), FileCol("_row_commit", commit_col, "long")]
    fo = t.write_file(moved, cols=cols, row_group_size=8)
    v = t.version + 1
    base[fo.path] = (hwm + 1, v)
    hwm += len(fo.rows)
    acts = [t.remove(f, data_change=False, extra={"baseRowId": base[f.path][0],
                                                  "defaultRowCommitVersion": base[f.path][1]})
            for f in inserted]
    acts.append(t.add(fo, data_change=False, extra={"baseRowId": base[fo.path][0],
                                                     "defaultRowCommitVersion": v,
                                                     "clusteringProvider": "liquid"}))
    acts.append(hwm_action(hwm))
    t.commit(acts, "OPTIMIZE", {"predicate": "[]", "clusterBy": '["region","visit_date"]',
                                "zOrderBy": "[]", "batchId": "0", "auto": False},
             {"numRemovedFiles": 2, "numAddedFiles": 1, "numRemovedBytes": sum(f.size for f in inserted),
              "numAddedBytes": fo.size}, tags={"delta.rowTracking.preserved": "true"})
    f4 = t.write_file(mk(range(21, 26)))
    v = t.version + 1
    t.commit([t.add(f4, extra={"baseRowId": hwm + 1, "defaultRowCommitVersion": v}), hwm_action(hwm + 5)],
             "WRITE", {"mode": "Append", "statsOnLoad": False, "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 5, "numOutputBytes": f4.size}, blind=True,
             tags={"delta.rowTracking.preserved": "true", "noRowsCopied": "true"})
    q = [
        ("region = 'north'", eq("region", "north")),
        ("visit_date BETWEEN DATE '2024-01-10' AND DATE '2024-02-10'",
         all_of(ge("visit_date", D(2024, 1, 10)), le("visit_date", D(2024, 2, 10)))),
        ("id > 20", gt("id", 20)),
        ("region = 'west' AND id < 10", all_of(eq("region", "west"), lt("id", 10))),
        ("region = 'nowhere'", never),
    ]
    return Built(t, "Databricks liquid clustering + row tracking (writer features only, reader "
                    "version 3 with empty readerFeatures): domainMetadata, baseRowId / "
                    "defaultRowCommitVersion, clusteringProvider, an OPTIMIZE file carrying the "
                    "hidden materialised row-id and row-commit-version columns", q)


def fixture_change_data_feed(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "change_data_feed", idx, engine="Apache-Spark/3.5.0 Delta-Lake/3.0.0")
    t.schema = [Col("id", "id", "long"), Col("status", "status", "string"),
                Col("amount", "amount", "decimal(10,2)"), Col("note", "note", "string", tag="phi.direct")]
    t.config = {"delta.enableChangeDataFeed": "true"}

    def mk(ids: range) -> list[dict]:
        return [{"id": i, "status": "open", "amount": Decimal(i * 250) / Decimal(100),
                 "note": f"claim {i}"} for i in ids]

    f1 = t.write_file(mk(range(1, 11)))
    f2 = t.write_file(mk(range(11, 21)), part=1)
    t.commit([t.protocol_action(1, 4), t.metadata_action(), t.add(f1), t.add(f2)], "WRITE",
             {"mode": "Overwrite", "partitionBy": "[]"},
             {"numFiles": 2, "numOutputRows": 20, "numOutputBytes": f1.size + f2.size})
    cdc_cols = t.file_cols() + [FileCol("_change_type", "_change_type", "string")]

    def cdc_file(rows: list[dict]) -> tuple[str, int]:
        t.file_seq += 1
        rel = f"_change_data/cdc-00000-{det_uuid(t.name, 'cdc', t.file_seq)}.c000.snappy.parquet"
        write_parquet(os.path.join(t.root, rel), cdc_cols, rows)
        return rel, os.path.getsize(os.path.join(t.root, rel))

    # v1: UPDATE status = 'closed', amount = 0 WHERE id IN (3, 4)
    new1 = [dict(r, status="closed", amount=Decimal("0.00")) if r["id"] in (3, 4) else r for r in f1.rows]
    f1b = t.write_file(new1)
    pre = [dict(r, _change_type="update_preimage") for r in f1.rows if r["id"] in (3, 4)]
    post = [dict(r, _change_type="update_postimage") for r in new1 if r["id"] in (3, 4)]
    c1, s1 = cdc_file([x for pair in zip(pre, post) for x in pair])
    t.commit([t.add(f1b), t.cdc(c1, s1), t.remove(f1)], "UPDATE", {"predicate": '["id#1065L IN (3,4)"]'},
             {"numRemovedFiles": 1, "numAddedFiles": 1, "numUpdatedRows": 2, "numCopiedRows": 8,
              "numAddedChangeFiles": 1, "numDeletionVectorsAdded": 0})
    # v2: DELETE WHERE id = 15
    new2 = [r for r in f2.rows if r["id"] != 15]
    f2b = t.write_file(new2)
    c2, s2 = cdc_file([dict(r, _change_type="delete", note="deleted: " + r["note"])
                       for r in f2.rows if r["id"] == 15])
    t.commit([t.add(f2b), t.cdc(c2, s2), t.remove(f2)], "DELETE", {"predicate": '["(id#1066L = 15)"]'},
             {"numRemovedFiles": 1, "numAddedFiles": 1, "numDeletedRows": 1, "numCopiedRows": 9,
              "numAddedChangeFiles": 1, "numDeletionVectorsAdded": 0})
    # v3: a plain append (inserts need no cdc files)
    f3 = t.write_file(mk(range(21, 26)))
    t.commit([t.add(f3)], "WRITE", {"mode": "Append", "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 5, "numOutputBytes": f3.size}, blind=True)
    q = [
        ("status = 'closed'", eq("status", "closed")),
        ("id = 15", eq("id", 15)),
        ("id IN (3, 4)", lambda r: r["id"] in (3, 4)),
        ("amount > 40", gt("amount", Decimal(40))),
        ("note LIKE 'deleted%'", prefix("note", "deleted")),
    ]
    return Built(t, "change data feed (protocol 1/4): UPDATE and DELETE commits with cdc actions "
                    "pointing at _change_data/cdc-*.parquet (pre/post images, _change_type); those "
                    "rows are never table data", q)


PART_COLS = [("p_str", "string"), ("p_long", "long"), ("p_int", "integer"), ("p_short", "short"),
             ("p_byte", "byte"), ("p_bool", "boolean"), ("p_date", "date"), ("p_ts", "timestamp"),
             ("p_dec", "decimal(8,3)"), ("p_dbl", "double"), ("p_flt", "float")]


def fixture_partitioned_types(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "partitioned_types", idx, engine="Apache-Spark/3.3.1 Delta-Lake/2.2.0")
    t.schema = [Col("id", "id", "long"), Col("note", "note", "string", tag="phi.direct"),
                Col("val", "val", "integer")] + [Col(n, n, ty) for n, ty in PART_COLS]
    t.partition_cols = [n for n, _ in PART_COLS]
    combos = [
        ("a b", 9223372036854775807, -2147483648, 32767, -128, True, D(1899, 12, 31),
         T(2024, 1, 2, 3, 4, 5, 123456), Decimal("12.300"), 1.5, f32(0.1)),
        ("x/y=z", -1, 0, None, 127, False, D(2024, 2, 29), T(1900, 1, 1), Decimal("-0.001"),
         math.nan, -math.inf),
        ("100%", None, 0, -32768, None, None, D(9999, 12, 31), None, None, -0.0,
         f32(3.4028234663852886e38)),
        ("c:d#e", 0, 42, 1, 0, True, None, T(2024, 6, 30, 12, 0, 0, 500000), Decimal("99999.999"),
         1e20, None),
        ("\u00e9\u65e5\u672c", 7, 7, 7, 7, False, D(1970, 1, 1), T(9999, 12, 31, 23, 59, 59, 999999),
         Decimal("0.000"), math.inf, f32(1.5)),
        ("trail ", 8, -8, -8, -8, True, D(2000, 1, 1), T(1969, 12, 31, 23, 59, 59, 999999),
         Decimal("1.000"), 0.1, f32(-2.5)),
        ("", 9, 9, 9, 9, False, D(2001, 1, 1), T(2001, 1, 1), Decimal("2.000"), 2.0, f32(2.0)),
        (None, None, None, None, None, None, None, None, None, None, None),
    ]
    files = []
    nid = 1
    for k, combo in enumerate(combos):
        rows = []
        for _ in range(2 if k % 2 else 3):
            r = {"id": nid, "note": f"row {nid}", "val": nid * 11}
            r.update({n: v for (n, _), v in zip(PART_COLS, combo)})
            rows.append(r)
            nid += 1
        files.append(rows)
    f_old = [t.write_file(r, part=k) for k, r in enumerate(files[:3])]
    t.commit([t.protocol_action(1, 2), t.metadata_action()] + [t.add(f) for f in f_old], "WRITE",
             {"mode": "Append", "partitionBy": jdump([n for n, _ in PART_COLS])},
             {"numFiles": 3, "numOutputRows": sum(len(f.rows) for f in f_old),
              "numOutputBytes": sum(f.size for f in f_old)}, blind=True)
    f_new = [t.write_file(r, part=k, partition_iso_ts=True) for k, r in enumerate(files[3:])]
    t.commit([t.add(f) for f in f_new], "WRITE",
             {"mode": "Append", "partitionBy": jdump([n for n, _ in PART_COLS])},
             {"numFiles": len(f_new), "numOutputRows": sum(len(f.rows) for f in f_new),
              "numOutputBytes": sum(f.size for f in f_new)}, blind=True, engine=OSS_ENGINE)
    q = [
        ("p_str = 'x/y=z'", eq("p_str", "x/y=z")),
        ("p_str = '100%'", eq("p_str", "100%")),
        ("p_str IS NULL", is_null("p_str")),
        ("p_long = 9223372036854775807 OR p_int = 0", lambda r: eq("p_long", 9223372036854775807)(r) or eq("p_int", 0)(r)),
        ("p_date = DATE '9999-12-31'", eq("p_date", D(9999, 12, 31))),
        ("p_ts >= TIMESTAMP '2024-06-30 12:00:00.5'", ge("p_ts", T(2024, 6, 30, 12, 0, 0, 500000))),
        ("p_dbl = CAST('NaN' AS DOUBLE)", eq("p_dbl", math.nan)),
        ("p_short = 1234", never),
    ]
    return Built(t, "partition columns of every Spark partition type (string, long, int, short, "
                    "byte, boolean, date, timestamp, decimal, double, float): null partitions "
                    "(__HIVE_DEFAULT_PARTITION__, empty string written as null), Hive-escaped "
                    "directories, URI-encoded add paths, Delta 2.2 and Delta 3.3+ (UTC ISO) "
                    "timestamp partition values", q)


def fixture_vacuumed(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "vacuumed", idx)
    t.schema = [Col("id", "id", "long"), Col("batch", "batch", "integer"),
                Col("note", "note", "string", tag="phi.direct")]

    def mk(b: int) -> list[dict]:
        return [{"id": b * 5 + k + 1, "batch": b, "note": f"batch {b} row {k}"} for k in range(5)]

    fs = [t.write_file(mk(b), part=b) for b in range(3)]
    t.commit([t.protocol_action(1, 2), t.metadata_action()] + [t.add(f) for f in fs],
             "CREATE TABLE AS SELECT",
             {"isManaged": "true", "description": None, "partitionBy": "[]", "properties": "{}"},
             {"numFiles": 3, "numOutputRows": 15, "numOutputBytes": sum(f.size for f in fs)}, blind=True)
    f3 = t.write_file(mk(3))
    t.commit([t.add(f3)], "WRITE", {"mode": "Append", "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 5, "numOutputBytes": f3.size}, blind=True)
    gone = [fs[1], f3]
    t.commit([t.remove(f) for f in gone], "DELETE", {"predicate": '["batch#3 IN (1,3)"]'},
             {"numRemovedFiles": 2, "numDeletedRows": 10, "numAddedFiles": 0, "numCopiedRows": 0})
    t.commit([], "VACUUM START",
             {"retentionCheckEnabled": False, "defaultRetentionMillis": 604800000,
              "specifiedRetentionMillis": 0},
             {"numFilesToDelete": 2, "sizeOfDataToDelete": sum(f.size for f in gone)})
    for f in gone:
        os.remove(os.path.join(t.root, *f.rel.split("/")))
    t.commit([], "VACUUM END", {"status": "COMPLETED"},
             {"numDeletedFiles": 2, "numVacuumedDirectories": 1})
    f4 = t.write_file(mk(4))
    t.commit([t.add(f4)], "WRITE", {"mode": "Append", "partitionBy": "[]"},
             {"numFiles": 1, "numOutputRows": 5, "numOutputBytes": f4.size}, blind=True)
    q = [
        ("batch = 1", eq("batch", 1)),
        ("batch >= 2", ge("batch", 2)),
        ("id = 3", eq("id", 3)),
        ("note LIKE 'batch 4%'", prefix("note", "batch 4")),
    ]
    return Built(t, "whole-file DELETE then VACUUM START/END commits with the removed files "
                    "deleted from storage; a later append", q)


def fixture_type_widening(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "type_widening", idx, engine=DBR_ENGINE)
    t.schema = [Col("id", "id", "long"), Col("b", "b", "byte"), Col("f", "f", "float"),
                Col("dec", "dec", "decimal(5,2)"), Col("dt", "dt", "date"),
                Col("note", "note", "string", tag="phi.direct")]
    t.config = {"delta.enableTypeWidening": "true"}
    changes: dict[str, list] = {"b": [], "f": [], "dec": [], "dt": []}

    def change(key: str, to: str) -> None:
        c = t.col(key)
        changes[key].append({"fromType": c.type, "toType": to})
        c.type = to
        c.meta = {"delta.typeChanges": list(changes[key])}

    r1 = [{"id": k + 1, "b": b, "f": f32(f) if f is not None else None, "dec": dc, "dt": d, "note": f"v0 {k}"}
          for k, (b, f, dc, d) in enumerate([
              (-128, 0.1, Decimal("123.45"), D(2024, 1, 2)), (127, 1.5, Decimal("-999.99"), D(1900, 1, 1)),
              (0, None, None, None), (None, 3.4e38, Decimal("0.01"), D(9999, 12, 31)),
              (5, 1e-3, Decimal("1.00"), D(1970, 1, 1)), (-5, -2.75, Decimal("5.50"), D(2000, 2, 29))])]
    f1 = t.write_file(r1)
    proto = t.protocol_action(3, 7, ["typeWidening"], ["typeWidening"])
    t.commit([proto, t.metadata_action(), t.add(f1)], "CREATE TABLE AS SELECT",
             {"isManaged": "true", "description": None, "partitionBy": "[]",
              "properties": '{"delta.enableTypeWidening":"true"}', "statsOnLoad": False},
             {"numFiles": 1, "numOutputRows": 6, "numOutputBytes": f1.size})

    def alter(key: str, to: str, proto_: dict | None = None) -> None:
        change(key, to)
        t.meta_commit("CHANGE COLUMN", {"column": jdump({"name": key, "type": to, "nullable": True,
                                                          "metadata": {}})}, protocol=proto_)

    def append(rows: list[dict]) -> None:
        f = t.write_file(rows)
        t.commit([t.add(f)], "WRITE", {"mode": "Append", "statsOnLoad": False, "partitionBy": "[]"},
                 {"numFiles": 1, "numOutputRows": len(rows), "numOutputBytes": f.size}, blind=True)

    alter("b", "short")
    append([{"id": 7 + k, "b": b, "f": f32(1.25 * k), "dec": Decimal("10.10"), "dt": D(2024, 3, k + 1),
             "note": f"v2 {k}"} for k, b in enumerate([32767, -32768, 300, None])])
    alter("b", "integer")
    append([{"id": 11 + k, "b": b, "f": None, "dec": Decimal("-1.50"), "dt": D(2024, 4, k + 1),
             "note": f"v4 {k}"} for k, b in enumerate([2147483647, -2147483648, 70000, 1])])
    alter("b", "long")
    alter("f", "double")
    alter("dec", "decimal(10,2)")
    alter("dt", "timestamp_ntz", t.protocol_action(3, 7, ["typeWidening", "timestampNtz"],
                                                   ["typeWidening", "timestampNtz"]))
    append([{"id": 15 + k, "b": b, "f": f, "dec": dc, "dt": d, "note": f"v9 {k}"}
            for k, (b, f, dc, d) in enumerate([
                (9223372036854775807, 0.1, Decimal("12345678.90"), T(2024, 6, 30, 12, 0, 0, 500000)),
                (-9223372036854775808, 1e300, Decimal("-0.01"), T(2024, 1, 2)),
                (100001, -0.0, None, None), (None, math.nan, Decimal("123.45"), T(1900, 1, 1, 0, 0, 1))])])
    q = [
        ("b > 100000", gt("b", 100000)),
        ("b = -128", eq("b", -128)),
        ("f = 1.5", eq("f", 1.5)),
        ("dec = 123.45", eq("dec", Decimal("123.45"))),
        ("dt = TIMESTAMP '2024-01-02 00:00:00'", eq("dt", T(2024, 1, 2))),
        ("CAST(dt AS DATE) = DATE '9999-12-31'", as_date("dt", D(9999, 12, 31))),
        ("dt IS NULL", is_null("dt")),
        ("b = 12", never),
    ]
    return Built(t, "typeWidening reader feature: byte->short->integer->long, float->double, "
                    "decimal(5,2)->decimal(10,2), date->timestamp_ntz recorded in "
                    "delta.typeChanges; old files keep the narrow Parquet types and their stats", q)


def fixture_future_feature(parent: str, idx: int) -> Built:
    t = TableWriter(parent, "future_feature", idx)
    t.schema = [Col("id", "id", "long"), Col("note", "note", "string", tag="phi.direct")]
    f = t.write_file([{"id": i, "note": f"row {i}"} for i in range(1, 4)])
    proto = t.protocol_action(3, 7, ["lakewardTestUnknownFeature"], ["lakewardTestUnknownFeature"])
    t.commit([proto, t.metadata_action(), t.add(f)], "CREATE TABLE AS SELECT",
             {"isManaged": "true", "description": None, "partitionBy": "[]", "properties": "{}"},
             {"numFiles": 1, "numOutputRows": 3, "numOutputBytes": f.size}, blind=True)
    return Built(t, "a reader feature no reader knows: the table must be refused, not read", [],
                 refused_feature="lakewardTestUnknownFeature")


LAKE_FIXTURES = [
    fixture_plain_types, fixture_int96_and_micros, fixture_timestamp_ntz, fixture_deletion_vectors,
    fixture_column_mapping_name, fixture_column_mapping_id, fixture_checkpoint_v2,
    fixture_checkpoint_v2_parquet, fixture_checkpoint_only, fixture_clustered_row_tracking,
    fixture_change_data_feed, fixture_partitioned_types, fixture_vacuumed, fixture_type_widening,
]
REFUSED_FIXTURES = [fixture_future_feature]

# Lake tables a scan of lakeward's refuses by name rather than read wrong:
# table -> {scan ("auto" | "deltalake") -> words the refusal must contain}.
# The expected rows stay in expected.json: they are what a reader that
# supports the feature must return.
REFUSALS = {
    # Both scans match Parquet columns by physical name; this fixture's
    # first file has names and field ids that disagree (Iceberg conversion
    # after a rename), so reading by name returns another column's values.
    "column_mapping_id": {"auto": "delta.columnMapping.mode = id",
                          "deltalake": "delta.columnMapping.mode = id"},
    # deltalake's provider does not read typeWidening; lakeward's own scan does.
    "type_widening": {"deltalake": "TypeWidening"},
}

NOT_BUILT = [
    {"feature": "Parquet footers byte-identical to parquet-mr",
     "why": "data files come from pyarrow (created_by parquet-cpp-arrow, root group 'schema', "
            "Arrow's page and dictionary layout); the Spark key/value metadata is copied but "
            "reader quirks keyed on parquet-mr writer versions are not exercised"},
    {"feature": "checkpoint stats_parsed / partitionValues_parsed (delta.checkpoint.writeStatsAsStruct)",
     "why": "checkpoints carry stats only as JSON strings (writeStatsAsJson, the OSS default); "
            "typed stats structs are not written"},
    {"feature": "deletion vectors with storageType 'p' (absolute path) or a random path prefix",
     "why": "Spark writes relative 'u' DVs at the table root unless delta.randomizeFilePrefixes is "
            "set; absolute-path DVs would point outside OUT_DIR, so only 'u' and 'i' are built"},
    {"feature": "inline deletion vectors as Spark writes them",
     "why": "Delta Spark's DML always writes DV files; the inline ('i') DV in deletion_vectors "
            "follows PROTOCOL.md (Z85 of magic + bitmap, padded to 4 bytes) rather than a Spark capture"},
    {"feature": "version checksum files (_delta_log/N.crc)",
     "why": "optional in PROTOCOL.md and not written here; Databricks writes them and readers may "
            "take protocol/metaData from them, a path this suite does not exercise"},
    {"feature": "typeWidening-preview (Databricks Runtime 14/15 preview name, tableVersion in "
                "delta.typeChanges)",
     "why": "only the stable `typeWidening` feature is built: which widenings the preview allowed "
            "per runtime version could not be confirmed from the specification"},
]


def snapshot_scan_eligible(t: TableWriter) -> bool:
    """lakeward's plain scan: reader 1 (or 3 with only timestampNtz / typeWidening), no partitions, no DVs,
    no column mapping, plain file paths."""
    p = t.protocol
    feats = p.get("readerFeatures") or []
    if p["minReaderVersion"] == 1:
        plain = not feats
    elif p["minReaderVersion"] == 3:
        plain = all(f in ("timestampNtz", "typeWidening") for f in feats)
    else:
        plain = False
    ok_chars = set(string.ascii_letters + string.digits + "._-/=")
    return (plain and not t.partition_cols
            and t.config.get("delta.columnMapping.mode", "none") == "none"
            and all(not a.get("deletionVector") and set(path) <= ok_chars for path, (_, a) in t.live.items()))


def build(out_dir: str) -> tuple[dict, list[Built]]:
    for sub in ("lake", "refused"):
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    lake = os.path.join(out_dir, "lake", SCHEMA)
    refused = os.path.join(out_dir, "refused", SCHEMA)
    os.makedirs(lake)
    os.makedirs(refused)
    expected: dict[str, Any] = {"tables": {}, "refused": {}, "not_built": NOT_BUILT}
    built = []
    for idx, fx in enumerate(LAKE_FIXTURES):
        b = fx(lake, idx)
        built.append(b)
        t = b.writer
        cols = t.schema
        check(cols[0].key == "id" and cols[0].type == "long", f"{t.name}: first column must be id")
        check(sum(c.tag == "phi.direct" for c in cols) == 1, f"{t.name}: exactly one phi.direct column")
        rows = sorted(t.live_rows(), key=lambda r: r["id"])
        ids = [r["id"] for r in rows]
        check(len(set(ids)) == len(ids) and None not in ids, f"{t.name}: id must be unique, non-null")
        logical = [{c.name: r[c.key] for c in cols} for r in rows]
        queries = []
        for where, pred in b.queries:
            queries.append({"where": where, "ids": sorted(r["id"] for r in logical if pred(r))})
        check(3 <= len(queries) <= 12, f"{t.name}: 3-12 queries")
        check(any(not q["ids"] for q in queries), f"{t.name}: a query with no match")
        expected["tables"][t.name] = {
            "about": b.about,
            "snapshot_scan": snapshot_scan_eligible(t),
            "columns": [{"name": c.name, "pg_type": pg_type(c.type), "tag": c.tag} for c in cols],
            "rows": [[pg_text(c.type, r[c.key]) for c in cols] for r in rows],
            "queries": queries,
            "refused": REFUSALS.get(t.name, {}),
        }
    for idx, fx in enumerate(REFUSED_FIXTURES):
        b = fx(refused, 100 + idx)
        built.append(b)
        expected["refused"][b.writer.name] = {"feature": b.refused_feature, "about": b.about}
    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as fh:
        json.dump(expected, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return expected, built


# ---------------------------------------------------------------------------
# An independent, minimal Delta reader (self-check and spark-consents)
# ---------------------------------------------------------------------------


def _from_struct(kind: str, v: dict) -> dict:
    """A checkpoint struct value back into the JSON action shape."""
    out = {}
    for k, x in v.items():
        if x is None:
            continue
        if k in ("partitionValues", "tags", "configuration", "options") and isinstance(x, list):
            x = dict(x)
        if k == "format" and isinstance(x, dict):
            x = {"provider": x["provider"], "options": dict(x.get("options") or [])}
        if k == "deletionVector" and isinstance(x, dict):
            x = {a: b for a, b in x.items() if b is not None}
        out[k] = x
    if kind in ("add", "remove"):
        out.setdefault("partitionValues", {})
    return out


def _actions_from_parquet(path: str) -> list[dict]:
    out = []
    for row in pq.read_table(path).to_pylist():
        for kind, v in row.items():
            if v is not None:
                out.append({kind: _from_struct(kind, v)})
    return out


def _actions_from_json(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_log(root: str, use_last_checkpoint: bool = True) -> dict:
    """Replay a table's log: checkpoint (classic or V2 with sidecars) + later JSON commits."""
    log = os.path.join(root, "_delta_log")
    names = sorted(os.listdir(log))
    commits = {int(n[:20]): n for n in names if len(n) == 25 and n.endswith(".json") and n[:20].isdigit()}
    cp_version, cp_actions = -1, []
    tops: list[str] = []
    lc_path = os.path.join(log, "_last_checkpoint")
    if use_last_checkpoint and os.path.exists(lc_path):
        with open(lc_path, encoding="utf-8") as fh:
            lc = json.load(fh)
        if "checksum" in lc:
            check(last_checkpoint_checksum(lc) == lc["checksum"], f"{root}: _last_checkpoint checksum")
        cp_version = lc["version"]
        if "v2Checkpoint" in lc:
            tops = [lc["v2Checkpoint"]["path"]]
        elif lc.get("parts"):
            tops = [f"{cp_version:020d}.checkpoint.{i:010d}.{lc['parts']:010d}.parquet"
                    for i in range(1, lc["parts"] + 1)]
        else:
            tops = [f"{cp_version:020d}.checkpoint.parquet"]
    else:  # no pointer: the newest checkpoint found by listing (classic, multi-part or V2)
        found: dict[int, list[str]] = {}
        for n in names:
            parts = n.split(".")
            if len(n) > 20 and n[:20].isdigit() and len(parts) >= 3 and parts[1] == "checkpoint":
                found.setdefault(int(n[:20]), []).append(n)
        for v in sorted(found, reverse=True):
            group = found[v]
            uuid_named = [n for n in group if len(n.split(".")) == 4]
            multi = sorted(n for n in group if len(n.split(".")) == 5)
            if f"{v:020d}.checkpoint.parquet" in group:
                tops = [f"{v:020d}.checkpoint.parquet"]
            elif uuid_named:
                tops = [sorted(uuid_named)[0]]
            elif multi and len(multi) == int(multi[0].split(".")[3]):
                tops = multi
            if tops:
                cp_version = v
                break
    for top_name in tops:
        top = os.path.join(log, top_name)
        top_actions = _actions_from_json(top) if top.endswith(".json") else _actions_from_parquet(top)
        for a in top_actions:
            if "sidecar" in a:
                cp_actions += _actions_from_parquet(
                    os.path.join(log, "_sidecars", urllib.parse.unquote(a["sidecar"]["path"])))
            elif "checkpointMetadata" in a:
                check(a["checkpointMetadata"]["version"] == cp_version, "checkpointMetadata version")
            else:
                cp_actions.append(a)
    later = sorted(v for v in commits if v > cp_version)
    check(later == list(range(cp_version + 1, cp_version + 1 + len(later))), f"{root}: commit gap")
    state: dict[str, Any] = {"protocol": None, "metaData": None, "adds": {}, "version": cp_version}
    batches = [cp_actions] + [_actions_from_json(os.path.join(log, commits[v])) for v in later]
    for batch in batches:
        for act in batch:
            for kind in ("protocol", "metaData"):
                if kind in act:
                    state[kind] = act[kind]
        for act in batch:
            if "remove" in act:
                r = act["remove"]
                cur = state["adds"].get(r["path"])
                rid = dv_unique_id(r["deletionVector"]) if r.get("deletionVector") else None
                if cur is not None and (dv_unique_id(cur["deletionVector"]) if cur.get("deletionVector") else None) == rid:
                    del state["adds"][r["path"]]
        for act in batch:
            if "add" in act:
                state["adds"][act["add"]["path"]] = act["add"]
    if later:
        state["version"] = later[-1]
    check(state["protocol"] is not None and state["metaData"] is not None, f"{root}: no protocol/metaData")
    return state


READER_FEATURES_KNOWN = {"deletionVectors", "columnMapping", "timestampNtz", "v2Checkpoint",
                         "typeWidening", "typeWidening-preview"}


def parse_partition(t: str, s: str | None) -> Any:
    if s is None or s == "":
        return None
    if t == "string":
        return s
    if t in ("long", "integer", "short", "byte"):
        return int(s)
    if t == "boolean":
        return {"true": True, "false": False}[s.lower()]
    if t in ("double", "float"):
        x = float(s)
        return f32(x) if t == "float" else x
    if t.startswith("decimal("):
        return Decimal(s)
    if t == "date":
        return dt.date.fromisoformat(s)
    if t in ("timestamp", "timestamp_ntz"):
        if "T" in s:
            check(s.endswith("Z"), f"timestamp partition {s!r}")
            s = s[:-1].replace("T", " ")
        day, _, clock = s.partition(" ")
        hms, _, frac = clock.partition(".")
        y, mo, d = map(int, day.split("-"))
        h, mi, se = map(int, hms.split(":"))
        return T(y, mo, d, h, mi, se, int((frac + "000000")[:6]) if frac else 0)
    raise Failure(f"cannot parse partition type {t}")


def read_table(root: str, use_last_checkpoint: bool = True) -> tuple[list[dict], list[dict], dict]:
    """(schema fields, rows keyed by logical name, log state) of a table's latest snapshot."""
    st = read_log(root, use_last_checkpoint)
    proto = st["protocol"]
    unknown = set(proto.get("readerFeatures") or []) - READER_FEATURES_KNOWN
    check(not unknown, f"unsupported reader features {sorted(unknown)}")
    meta = st["metaData"]
    fields = json.loads(meta["schemaString"])["fields"]
    parts = meta["partitionColumns"]
    mode = meta["configuration"].get("delta.columnMapping.mode", "none")
    rows: list[dict] = []
    for path, add in sorted(st["adds"].items()):
        fpath = os.path.join(root, *urllib.parse.unquote(path).split("/"))
        pf = pq.ParquetFile(fpath, coerce_int96_timestamp_unit="us")
        table = pf.read()
        check(table.num_rows == json.loads(add["stats"])["numRecords"] if add.get("stats") else True,
              f"{path}: numRecords disagrees with the file")
        by_name = {f.name: i for i, f in enumerate(pf.schema_arrow)}
        by_id = {int(f.metadata[b"PARQUET:field_id"]): i for i, f in enumerate(pf.schema_arrow)
                 if f.metadata and b"PARQUET:field_id" in f.metadata}
        deleted = set(dv_read(root, add["deletionVector"])) if add.get("deletionVector") else set()
        cols: dict[str, list] = {}
        for fld in fields:
            name, ty, md = fld["name"], fld["type"], fld.get("metadata", {})
            phys = md.get("delta.columnMapping.physicalName", name) if mode != "none" else name
            if name in parts:
                v = parse_partition(ty, add["partitionValues"].get(phys))
                cols[name] = [v] * table.num_rows
                continue
            if mode == "id":
                i = by_id.get(md["delta.columnMapping.id"])
            else:
                i = by_name.get(phys)
            if i is None:
                cols[name] = [None] * table.num_rows
                continue
            vals = table.column(i).to_pylist()
            out = []
            for v in vals:
                if isinstance(v, dt.datetime):
                    v = v.replace(tzinfo=None) if v.tzinfo is None else v.astimezone(dt.timezone.utc).replace(tzinfo=None)
                    if ty == "date":
                        v = v.date()
                elif isinstance(v, dt.date) and ty == "timestamp_ntz":
                    v = T(v.year, v.month, v.day)
                elif isinstance(v, int) and ty == "double":
                    v = float(v)
                out.append(v)
            cols[name] = out
        for k in range(table.num_rows):
            if k not in deleted:
                rows.append({f["name"]: cols[f["name"]][k] for f in fields})
    return fields, rows, st


# ---------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------


def self_check(out_dir: str, expected: dict, built: list[Built]) -> None:
    # Reference vectors from PROTOCOL.md.
    check(z85_decode("ab^-aqEH.-t@S}K{vb[*k^"[2:]) == uuid.UUID("d2c639aa-8816-431a-aaf6-d3fe2512ff61").bytes,
          "Z85 UUID example from PROTOCOL.md")
    sample = json.loads('{"k0":"\'v 0\'", "checksum": "adsaskfljadfkjadfkj", "k1":{"k2": 2, "k3": '
                        '["v3", [1, 2], {"k4": "v4", "k5": ["v5", "v6", "v7"]}]}}')
    check(last_checkpoint_checksum(sample) == "6a92d155a59bf2eecbd4b4ec7fd1f875", "JSON checksum example")
    # Round trips of the roaring encoder over every container kind, incl. a second 32-bit key.
    for case in ([0], [3, 4, 7, 11], list(range(100, 5000)), list(range(0, 20000, 3)),
                 [1, 65536, 65537, 131072 * 3] + list(range(70000, 70100)), [5, 2 ** 32 + 7]):
        check(dv_decode_bitmap(dv_bitmap_bytes(case)) == sorted(set(case)), f"roaring round trip {case[:4]}")
    n_dv = n_files = 0
    for b in built:
        t = b.writer
        for desc, positions in t.dvs:
            check(dv_read(t.root, desc) == positions, f"{t.name}: DV {dv_unique_id(desc)} decodes wrong")
            n_dv += 1
        for rel, facts in t.parquet_expect:
            path = os.path.join(t.root, *rel.split("/"))
            if not os.path.exists(path):
                continue  # vacuumed
            pf = pq.ParquetFile(path)
            check(pf.metadata.num_rows == facts["rows"], f"{rel}: row count")
            names = [pf.schema.column(i).name for i in range(len(pf.schema))]
            check(names == facts["columns"], f"{rel}: columns {names}")
            for i in range(len(pf.schema)):
                c = pf.schema.column(i)
                is96 = c.physical_type == "INT96"
                check(is96 == (c.name in facts["int96"]), f"{rel}: {c.name} physical type {c.physical_type}")
                if c.name in facts["utc"]:
                    lt_ = json.loads(c.logical_type.to_json())
                    check(lt_.get("timeUnit") == "microseconds" and
                          lt_.get("isAdjustedToUTC") == facts["utc"][c.name],
                          f"{rel}: {c.name} logical type {lt_}")
            for f in pf.schema_arrow:
                got = int(f.metadata[b"PARQUET:field_id"]) if f.metadata and b"PARQUET:field_id" in f.metadata else None
                check(got == facts["field_ids"].get(f.name), f"{rel}: {f.name} field id {got}")
            kv = pf.metadata.metadata or {}
            check((b"org.apache.spark.sql.parquet.row.metadata" in kv) == facts["spark"], f"{rel}: Spark metadata")
            n_files += 1
        # Independent replay against expected.json.
        if b.refused_feature:
            try:
                read_table(t.root)
            except Failure as e:
                check(b.refused_feature in str(e), f"{t.name}: refused for another reason: {e}")
            else:
                raise Failure(f"{t.name}: the independent reader did not refuse it")
            continue
        fields, rows, _ = read_table(t.root)
        exp = expected["tables"][t.name]
        check([f["name"] for f in fields] == [c["name"] for c in exp["columns"]], f"{t.name}: columns")
        types = {f["name"]: f["type"] for f in fields}
        got = sorted(([pg_text(types[c["name"]], r[c["name"]]) for c in exp["columns"]] for r in rows),
                     key=lambda r: int(r[0]))
        if got != exp["rows"]:
            for a, e in zip(got, exp["rows"]):
                if a != e:
                    raise Failure(f"{t.name}: replayed row {a} != expected {e}")
            raise Failure(f"{t.name}: replayed {len(got)} rows, expected {len(exp['rows'])}")
        if os.path.exists(os.path.join(t.root, "_delta_log", "_last_checkpoint")):
            _, rows2, _ = read_table(t.root, use_last_checkpoint=False)  # found by listing
            check(len(rows2) == len(rows), f"{t.name}: replay without _last_checkpoint differs")
    # spark-consents on a small lakeward-shaped table
    src = os.path.join(out_dir, "_selfcheck_consents_src")
    dst = os.path.join(out_dir, "_selfcheck_consents_dst")
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)
    w = TableWriter(out_dir, "_selfcheck_consents_src", 200)
    w.schema = [Col("patient_id", "patient_id", "long", nullable=False),
                Col("purpose", "purpose", "string", nullable=False),
                Col("granted", "granted", "boolean", nullable=False),
                Col("recorded_at", "recorded_at", "timestamp_ntz", nullable=False),
                Col("expires_at", "expires_at", "timestamp_ntz")]
    crow = [{"patient_id": i, "purpose": "research" if i % 2 else "marketing", "granted": i % 3 != 0,
             "recorded_at": T(2024, 1, 1) + dt.timedelta(days=i),
             "expires_at": None if i % 4 == 0 else T(2030, 1, 1) + dt.timedelta(days=i)} for i in range(1, 21)]
    cf = w.write_file(crow)
    w.commit([w.protocol_action(3, 7, ["timestampNtz"], ["timestampNtz"]), w.metadata_action(), w.add(cf)],
             "CREATE TABLE", {}, {})
    n, sentinels = spark_consents(src, dst)
    check((n, sentinels) == (20, 5), f"spark-consents wrote {n} rows, {sentinels} sentinels")
    _, drows, _ = read_table(dst)
    check(len(drows) == 20 and sum(r["expires_at"] == T(9999, 12, 31) for r in drows) == 5, "consents replay")
    for name in os.listdir(dst):
        if name.endswith(".parquet"):
            pf = pq.ParquetFile(os.path.join(dst, name))
            kinds = {pf.schema.column(i).name: pf.schema.column(i).physical_type for i in range(len(pf.schema))}
            check(kinds["recorded_at"] == "INT96" and kinds["expires_at"] == "INT96", "consents INT96")
    shutil.rmtree(src)
    shutil.rmtree(dst)
    print(f"self-check: {len(built)} tables replayed, {n_dv} deletion vectors decoded, "
          f"{n_files} Parquet files checked, spark-consents ok")


# ---------------------------------------------------------------------------
# spark-consents
# ---------------------------------------------------------------------------

SENTINEL = T(9999, 12, 31)


def spark_consents(src: str, dst: str) -> tuple[int, int]:
    fields, rows, st = read_table(src)
    names = [f["name"] for f in fields]
    for need in ("patient_id", "purpose", "granted", "recorded_at", "expires_at"):
        check(need in names, f"{src}: no column {need}")
    check(not st["metaData"]["partitionColumns"], f"{src}: partitioned consents are not supported")
    if os.path.exists(dst):
        check(not os.listdir(dst), f"{dst} exists and is not empty")
        os.rmdir(dst)
    name = os.path.basename(os.path.abspath(dst))
    w = TableWriter("", "spark_consents_" + hashlib.sha1(name.encode()).hexdigest()[:8], 300,
                    engine="Apache-Spark/3.1.2 Delta-Lake/1.0.0", root=os.path.abspath(dst))
    for f in fields:
        ty = "timestamp" if f["type"] in ("timestamp", "timestamp_ntz") else f["type"]
        check(isinstance(ty, str), f"{src}: nested column {f['name']} not supported")
        w.schema.append(Col(f["name"], f["name"], ty, nullable=f.get("nullable", True)))
    sentinels = 0
    out = []
    for r in rows:
        r = dict(r)
        if r["expires_at"] is None:
            r["expires_at"] = SENTINEL
            sentinels += 1
        out.append(r)
    legacy = {"org.apache.spark.version": "3.1.2", "org.apache.spark.legacyINT96": "",
              "org.apache.spark.legacyDateTime": ""}
    n_files = min(3, len(out))
    files = []
    for k in range(n_files):
        chunk = out[k * len(out) // n_files:(k + 1) * len(out) // n_files]
        files.append(w.write_file(chunk, part=k, int96=True, kv=legacy))
    w.commit([w.protocol_action(1, 2), w.metadata_action()] + [w.add(f) for f in files],
             "CREATE TABLE AS SELECT",
             {"isManaged": "false", "description": None, "partitionBy": "[]", "properties": "{}"},
             {"numFiles": n_files, "numOutputRows": len(out), "numOutputBytes": sum(f.size for f in files)},
             blind=True)
    return len(out), sentinels


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

USAGE = """usage: make_tables.py OUT_DIR
       make_tables.py --self-check [OUT_DIR]
       make_tables.py spark-consents SRC_TABLE_DIR DST_TABLE_DIR"""


def main(argv: list[str]) -> int:
    if len(argv) == 1 and not argv[0].startswith("-") and argv[0] != "spark-consents":
        os.makedirs(argv[0], exist_ok=True)
        expected, _ = build(argv[0])
        print(f"wrote {len(expected['tables'])} tables, {len(expected['refused'])} refused "
              f"under {argv[0]}")
        return 0
    if argv and argv[0] == "--self-check" and len(argv) <= 2:
        if len(argv) == 2:
            os.makedirs(argv[1], exist_ok=True)
            expected, built = build(argv[1])
            self_check(argv[1], expected, built)
        else:
            with tempfile.TemporaryDirectory(prefix="lakeward-conformance-") as tmp:
                expected, built = build(tmp)
                self_check(tmp, expected, built)
        return 0
    if len(argv) == 3 and argv[0] == "spark-consents":
        n, sentinels = spark_consents(argv[1], argv[2])
        print(f"spark-consents: rows={n} sentinels={sentinels} -> {argv[2]}")
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Failure as e:
        print(f"make_tables.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # any other failure: say what broke, non-zero exit
        print(f"make_tables.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
