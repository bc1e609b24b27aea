"""What tools_suite.py reports about the rows a tool read.

Every tool returns its own Python types (psycopg's date, pandas' Timestamp
and NaN, Arrow's date32, polars' Decimal, COPY's text); each value is first
spelled as PostgreSQL's text output spells it, so that the Rust test can
check every tool's answer the same way: against the policy oracle, and
against the same SELECT read by psycopg.
"""

import datetime
import decimal
import re

PATIENT_COLUMNS = (
    "patient_id",
    "mrn",
    "first_name",
    "last_name",
    "ssn",
    "birth_date",
    "sex",
    "zip",
    "phone",
    "email",
    "site_id",
    "deceased",
)
PATIENT_KINDS = {
    "patient_id": "int",
    "birth_date": "date",
    "deceased": "bool",
}

CLAIMS_COLUMNS = ("claim_id", "patient_id", "site_id", "billed_amount", "service_date")

# Rows of each summary sent whole (the first ones by patient_id).
SAMPLE_ROWS = 50

SSN_LAST4 = re.compile(r"^\*\*\*-\*\*-\d{4}$")
SSN_FULL = re.compile(r"^\d{3}-\d{2}-\d{4}$")
ZIP3 = re.compile(r"^\d{3}00$")


def is_null(v):
    if v is None:
        return True
    if isinstance(v, float) and v != v:  # NaN
        return True
    return type(v).__name__ in ("NaTType", "NAType")


def pg_text(v, kind="text"):
    """`v` as PostgreSQL's text output spells a value of `kind`, or None."""
    if is_null(v):
        return None
    if kind == "int":
        return str(int(v))
    if kind == "bool":
        if isinstance(v, str):
            return {"t": "t", "true": "t", "f": "f", "false": "f"}.get(v.lower(), v)
        return "t" if bool(v) else "f"
    if kind == "date":
        if isinstance(v, datetime.datetime):  # pandas.Timestamp too
            if (v.hour, v.minute, v.second, v.microsecond) == (0, 0, 0, 0):
                return v.date().isoformat()
            return v.isoformat(sep=" ")
        if isinstance(v, datetime.date):
            return v.isoformat()
        return str(v)
    if kind == "numeric":
        return str(decimal.Decimal(str(v)))
    return str(v)


def cents(v):
    """A money amount (Decimal, float, str) in cents."""
    d = decimal.Decimal(str(v)) * 100
    return int(d.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))


def patients_summary(rows):
    """`rows`: sequences in PATIENT_COLUMNS order, any Python types."""
    texts = [
        {c: pg_text(v, PATIENT_KINDS.get(c, "text")) for c, v in zip(PATIENT_COLUMNS, row)}
        for row in rows
    ]
    texts.sort(key=lambda r: int(r["patient_id"]) if r["patient_id"] is not None else 0)
    non_null = {c: sum(1 for r in texts if r[c] is not None) for c in PATIENT_COLUMNS}
    ssns = [r["ssn"] for r in texts if r["ssn"] is not None]
    births = [r["birth_date"] for r in texts if r["birth_date"] is not None]
    zips = [r["zip"] for r in texts if r["zip"] is not None]
    return {
        "rows": len(texts),
        "ids": [int(r["patient_id"]) for r in texts if r["patient_id"] is not None],
        "sites": sorted({r["site_id"] for r in texts if r["site_id"] is not None}),
        "non_null": non_null,
        "ssn_last4_masked": sum(1 for s in ssns if SSN_LAST4.match(s)),
        "ssn_full": sum(1 for s in ssns if SSN_FULL.match(s)),
        "birth_not_jan1": sum(1 for b in births if not b.endswith("-01-01")),
        "zip_not_zip3": sum(1 for z in zips if not ZIP3.match(z)),
        "sample": texts[:SAMPLE_ROWS],
    }


def claims_summary(rows):
    """`rows`: sequences in CLAIMS_COLUMNS order, any Python types."""
    n = 0
    total = 0
    billed = 0
    sites = set()
    service_not_jan1 = 0
    for claim_id, patient_id, site_id, billed_amount, service_date in rows:
        n += 1
        if not is_null(billed_amount):
            billed += 1
            total += cents(billed_amount)
        if not is_null(site_id):
            sites.add(str(site_id))
        d = pg_text(service_date, "date")
        if d is not None and not d.endswith("-01-01"):
            service_not_jan1 += 1
    return {
        "rows": n,
        "billed_non_null": billed,
        "billed_cents": total,
        "sites": sorted(sites),
        "service_date_not_jan1": service_not_jan1,
    }


COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unescape_copy(field):
    def repl(m):
        s = m.group(1)
        if s in COPY_ESCAPES:
            return COPY_ESCAPES[s]
        if s.startswith("x"):
            return chr(int(s[1:], 16))
        if s[0] in "01234567":
            return chr(int(s, 8))
        return s

    return re.sub(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", repl, field)


def parse_copy_text(data):
    """COPY's text format: one line per row, tab-separated, \\N for NULL."""
    rows = []
    for line in data.split("\n"):
        if line == "":
            continue
        rows.append([None if f == "\\N" else unescape_copy(f) for f in line.split("\t")])
    return rows
