"""The analysts' Python tools against lakeward. Driven by tests/it/tools.rs.

SQLAlchemy 2 (inspector and Core) on psycopg 3 and on psycopg2, pandas
(read_sql, read_sql_table, read_sql with chunksize over a server-side
cursor), asyncpg (binary results, its type introspection), the ADBC
PostgreSQL driver, polars.read_database_uri (ADBC and ConnectorX engines),
psycopg COPY (query) TO STDOUT in text, csv and binary, and psql's
\\copy (query) TO file.

The connection comes from LAKEWARD_HOST, LAKEWARD_PORT, LAKEWARD_USER,
LAKEWARD_TOKEN (the password), LAKEWARD_PURPOSE and LAKEWARD_CA (the server's
certificate). The program prints ONE JSON object on stdout: per tool, per
step, either {"ok": <what was observed>} or {"error": {"sqlstate", "message",
"exception"}} when the step raised. The Rust test compares what was observed
with the policy oracle; nothing here decides what is right for a role.

Rows are reported as summaries (tools_summary.py): the row count, every
patient id, the distinct sites, per column how many values are not NULL,
mask shapes, and the first rows with every value as PostgreSQL's text spells
it, so every tool's answer can be checked the same way.

A library that is missing is not skipped: the import fails, the program exits
1 and the Rust test names what to install
(python3 -m pip install -r tests/clients/python/requirements-tools.txt).
"""

import asyncio
import csv
import io
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import urllib.parse

# The helper module sits beside this file; no __pycache__ in the work tree.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import adbc_driver_postgresql.dbapi as adbc_pg  # noqa: E402
import asyncpg  # noqa: E402
import asyncpg.introspection  # noqa: E402
import pandas as pd  # noqa: E402
import polars as pl  # noqa: E402
import psycopg  # noqa: E402
import psycopg2  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from tools_summary import (  # noqa: E402
    CLAIMS_COLUMNS,
    PATIENT_COLUMNS,
    claims_summary,
    parse_copy_text,
    patients_summary,
)

PATIENTS_SQL = (
    "SELECT " + ", ".join(PATIENT_COLUMNS) + " FROM clinical.patients ORDER BY patient_id"
)
CLAIMS_SQL = "SELECT " + ", ".join(CLAIMS_COLUMNS) + " FROM claims.claims ORDER BY claim_id"
S01_SQL = "SELECT count(*) FROM clinical.patients WHERE site_id = {}"

# psycopg's binary COPY needs the column types.
PATIENT_TYPES = [
    "int8", "text", "text", "text", "text", "date", "text", "text", "text", "text", "text", "bool",
]
CLAIM_TYPES = ["int8", "int8", "text", "numeric", "date"]

# One column of each SPEC §2 type: label -> query returning one row, one column.
TYPE_QUERIES = {
    "bigint": "SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 1",
    "text": "SELECT site_id FROM clinical.patients ORDER BY patient_id LIMIT 1",
    "date": "SELECT birth_date FROM clinical.patients WHERE birth_date IS NOT NULL ORDER BY patient_id LIMIT 1",
    "boolean": "SELECT deceased FROM clinical.patients WHERE deceased IS NOT NULL ORDER BY patient_id LIMIT 1",
    "timestamp": "SELECT admit_ts FROM clinical.encounters WHERE admit_ts IS NOT NULL ORDER BY encounter_id LIMIT 1",
    "double": "SELECT value_num FROM clinical.observations WHERE value_num IS NOT NULL ORDER BY observation_id LIMIT 1",
    "decimal": "SELECT billed_amount FROM claims.claims WHERE billed_amount IS NOT NULL ORDER BY claim_id LIMIT 1",
}

out = {}


def env(name):
    v = os.environ.get(name)
    if not v:
        raise SystemExit(f"environment variable {name} is not set")
    return v


HOST = env("LAKEWARD_HOST")
PORT = int(env("LAKEWARD_PORT"))
USER = env("LAKEWARD_USER")
TOKEN = env("LAKEWARD_TOKEN")
PURPOSE = env("LAKEWARD_PURPOSE")
CA = env("LAKEWARD_CA")
OPTIONS = f"-c lakeward.purpose={PURPOSE}"


def libpq_uri():
    """postgresql:// URI for libpq-based drivers (ADBC, ConnectorX)."""
    return (
        f"postgresql://{urllib.parse.quote(USER, safe='')}:{urllib.parse.quote(TOKEN, safe='')}"
        f"@{HOST}:{PORT}/lakeward?sslmode=require&options={urllib.parse.quote(OPTIONS, safe='')}"
    )


# ---------------------------------------------------------------------------
# Errors

SQLSTATE_IN_TEXT = re.compile(r"SQLSTATE[: ]+([0-9A-Z]{5})")


def sqlstate_of(e):
    """The SQLSTATE a library attached to an exception, wherever it keeps it."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for attr in ("sqlstate", "pgcode"):
            v = getattr(e, attr, None)
            if isinstance(v, str) and len(v) == 5:
                return v
        orig = getattr(e, "orig", None)  # SQLAlchemy's DBAPIError
        e = orig if orig is not None else (e.__cause__ or e.__context__)
    return None


def error_of(e):
    message = str(e).strip()
    state = sqlstate_of(e)
    if state is None:
        m = SQLSTATE_IN_TEXT.search(message)
        if m:
            state = m.group(1)
    # SQLAlchemy appends the statement and parameters: keep the server's words.
    message = message.split("\n[SQL:")[0].strip()
    return {"sqlstate": state, "message": message[:2000], "exception": type(e).__name__}


class ServerError(Exception):
    """A server error read from a raw libpq result."""

    def __init__(self, sqlstate, message):
        super().__init__(message)
        self.sqlstate = sqlstate


def step(section, name, f):
    """Run one step and record what it observed or what it raised."""
    try:
        section[name] = {"ok": f()}
    except Exception as e:  # noqa: BLE001 - every failure is an observation
        section[name] = {"error": error_of(e)}


# ---------------------------------------------------------------------------
# Reference: psycopg 3, the suite's own ground truth for "the same SELECT"


def psycopg_connect(**kw):
    return psycopg.connect(
        host=HOST,
        port=PORT,
        user=USER,
        password=TOKEN,
        dbname="lakeward",
        sslmode="require",
        options=OPTIONS,
        application_name="lakeward-tools-suite",
        connect_timeout=10,
        **kw,
    )


def raw_text_rows(conn, sql):
    """The rows of a simple query exactly as the server spelled them (text
    format, None for NULL)."""
    res = conn.pgconn.exec_(sql.encode())
    if res.status != psycopg.pq.ExecStatus.TUPLES_OK:
        raise ServerError(
            (res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) or b"").decode() or None,
            (res.error_message or b"").decode(),
        )
    rows = []
    for i in range(res.ntuples):
        row = []
        for j in range(res.nfields):
            v = res.get_value(i, j)
            row.append(None if v is None else v.decode())
        rows.append(row)
    return rows


def typed_rows(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def reference(conn, ref):
    """What psycopg (text results) reads; every tool is compared with it."""
    sec = out.setdefault("reference", {})

    def patients():
        rows = typed_rows(conn, PATIENTS_SQL)
        ref["patients"] = rows
        ref["patients_text"] = raw_text_rows(conn, PATIENTS_SQL)
        return patients_summary(rows)

    def claims():
        rows = typed_rows(conn, CLAIMS_SQL)
        ref["claims"] = rows
        ref["claims_text"] = raw_text_rows(conn, CLAIMS_SQL)
        return claims_summary(rows)

    def types():
        res = {}
        for label, sql in TYPE_QUERIES.items():
            v = typed_rows(conn, sql)[0][0]
            res[label] = {"class": type(v).__name__, "value": str(v)}
        ref["types"] = res
        return res

    def claims_description():
        """RowDescription of claims.billed_amount: PostgreSQL sends the
        column's type modifier, which psycopg turns into precision and scale."""
        with conn.cursor() as cur:
            cur.execute("SELECT billed_amount, allowed_amount FROM claims.claims LIMIT 1")
            return [
                {
                    "name": d.name,
                    "type_code": d.type_code,
                    "precision": d.precision,
                    "scale": d.scale,
                }
                for d in cur.description
            ]

    step(sec, "patients", patients)
    step(sec, "claims", claims)
    step(sec, "types", types)
    step(sec, "claims_description", claims_description)
    step(sec, "s01_count", lambda: typed_rows(conn, S01_SQL.format("%s"), ("S01",))[0][0])


# ---------------------------------------------------------------------------
# SQLAlchemy 2: inspector and Core, on psycopg 3 and psycopg2


def sa_engine(driver):
    url = sa.engine.URL.create(
        f"postgresql+{driver}",
        username=USER,
        password=TOKEN,
        host=HOST,
        port=PORT,
        database="lakeward",
        query={"sslmode": "require", "options": OPTIONS, "application_name": "lakeward-tools-suite"},
    )
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def sa_columns(cols):
    res = []
    for c in cols:
        t = c["type"]
        res.append(
            {
                "name": c["name"],
                "type": str(t),
                "precision": getattr(t, "precision", None),
                "scale": getattr(t, "scale", None),
                "nullable": c["nullable"],
                "comment": c.get("comment"),
            }
        )
    return res


def jsonable(v):
    """Inspector answers (dicts, lists, tuples) as JSON values."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def sqlalchemy_suite(driver):
    sec = out.setdefault("sqlalchemy", {}).setdefault(driver, {})
    engine = sa_engine(driver)
    insp = sa.inspect(engine)
    step(sec, "schemas", lambda: insp.get_schema_names())
    for schema in ["clinical", "claims", "governance", "audit"]:
        step(sec, f"tables_{schema}", lambda schema=schema: insp.get_table_names(schema=schema))
    step(sec, "views_clinical", lambda: insp.get_view_names(schema="clinical"))
    step(sec, "has_table_patients", lambda: insp.has_table("patients", schema="clinical"))
    step(sec, "has_table_consents", lambda: insp.has_table("consents", schema="governance"))
    step(sec, "columns_patients", lambda: sa_columns(insp.get_columns("patients", schema="clinical")))
    step(sec, "columns_claims", lambda: sa_columns(insp.get_columns("claims", schema="claims")))
    step(sec, "pk_patients", lambda: jsonable(insp.get_pk_constraint("patients", schema="clinical")))
    step(sec, "fk_claims", lambda: jsonable(insp.get_foreign_keys("claims", schema="claims")))
    step(sec, "indexes_patients", lambda: jsonable(insp.get_indexes("patients", schema="clinical")))
    step(
        sec,
        "unique_patients",
        lambda: jsonable(insp.get_unique_constraints("patients", schema="clinical")),
    )
    step(
        sec,
        "table_comment_patients",
        lambda: jsonable(insp.get_table_comment("patients", schema="clinical")),
    )

    def reflect():
        """Table(..., autoload_with=engine): columns, keys, indexes and
        comments in one reflection, then a Core SELECT over it."""
        md = sa.MetaData()
        t = sa.Table("patients", md, autoload_with=engine, schema="clinical")
        with engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            s01 = conn.execute(
                sa.select(sa.func.count()).select_from(t).where(t.c.site_id == "S01")
            ).scalar_one()
        return {"columns": [c.name for c in t.columns], "count": n, "s01_count": s01}

    step(sec, "reflect_patients", reflect)

    def bound_param():
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT count(*) FROM clinical.patients WHERE site_id = :site"),
                {"site": "S01"},
            ).scalar_one()

    step(sec, "text_bound_param", bound_param)
    engine.dispose()


# ---------------------------------------------------------------------------
# pandas over SQLAlchemy


def dtypes(df):
    return {c: str(t) for c, t in df.dtypes.items()}


def pandas_suite(driver):
    sec = out.setdefault("pandas", {}).setdefault(driver, {})
    engine = sa_engine(driver)

    def read_sql():
        df = pd.read_sql(PATIENTS_SQL, engine)
        return {"dtypes": dtypes(df), "summary": patients_summary(df.itertuples(index=False))}

    def read_sql_claims():
        df = pd.read_sql(CLAIMS_SQL, engine)
        return {"dtypes": dtypes(df), "summary": claims_summary(df.itertuples(index=False))}

    def read_sql_params():
        df = pd.read_sql(
            sa.text("SELECT patient_id FROM clinical.patients WHERE site_id = :site"),
            engine,
            params={"site": "S01"},
        )
        return len(df)

    def read_sql_table():
        df = pd.read_sql_table("patients", engine, schema="clinical")
        df = df[list(PATIENT_COLUMNS)]
        return {"dtypes": dtypes(df), "summary": patients_summary(df.itertuples(index=False))}

    cursor_names = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _record_cursor(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT PATIENT_ID"):
            cursor_names.append(getattr(cursor, "name", None))

    def read_sql_chunks():
        """read_sql(chunksize=500) on a connection with stream_results: the
        rows come through a server-side cursor (DECLARE … / FETCH 500)."""
        cursor_names.clear()
        sizes = []
        frames = []
        with engine.connect().execution_options(stream_results=True, max_row_buffer=500) as conn:
            for df in pd.read_sql(PATIENTS_SQL, conn, chunksize=500):
                sizes.append(len(df))
                frames.append(df)
        df = pd.concat(frames) if frames else pd.DataFrame(columns=PATIENT_COLUMNS)
        return {
            "chunks": sizes,
            "server_side_cursor": cursor_names[-1] if cursor_names else None,
            "dtypes": dtypes(df),
            "summary": patients_summary(df.itertuples(index=False)),
        }

    def read_sql_chunks_break():
        """Leave the chunk loop after the first chunk (the cursor is closed
        inside its transaction), then keep using the connection."""
        with engine.connect().execution_options(stream_results=True, max_row_buffer=500) as conn:
            chunks = pd.read_sql(PATIENTS_SQL, conn, chunksize=500)
            first = len(next(chunks))
            chunks.close()  # what leaving a for loop early does, without waiting for the GC
            after = conn.execute(sa.text("SELECT count(*) FROM clinical.patients")).scalar_one()
        return {"first_chunk": first, "count_after": after}

    def read_sql_table_chunks():
        with engine.connect().execution_options(stream_results=True, max_row_buffer=500) as conn:
            frames = list(pd.read_sql_table("patients", conn, schema="clinical", chunksize=500))
        df = pd.concat(frames)[list(PATIENT_COLUMNS)]
        return {"chunks": [len(f) for f in frames], "summary": patients_summary(df.itertuples(index=False))}

    step(sec, "read_sql", read_sql)
    step(sec, "read_sql_claims", read_sql_claims)
    step(sec, "read_sql_params", read_sql_params)
    step(sec, "read_sql_table", read_sql_table)
    step(sec, "read_sql_chunks", read_sql_chunks)
    step(sec, "read_sql_chunks_break", read_sql_chunks_break)
    step(sec, "read_sql_table_chunks", read_sql_table_chunks)
    engine.dispose()


# ---------------------------------------------------------------------------
# psycopg: server-side cursors and COPY TO STDOUT


def psycopg_suite(conn, ref):
    sec = out.setdefault("psycopg", {})

    def named_cursor_closed_unused():
        """A named cursor closed before it was executed, inside a
        transaction: psycopg asks pg_catalog.pg_cursors whether it exists."""
        with conn.transaction():
            cur = conn.cursor(name="lakeward_tools_unused")
            cur.close()
            n = typed_rows(conn, "SELECT count(*) FROM clinical.patients")[0][0]
        return {"count_after": n}

    def named_cursor_partial():
        """A named cursor read in part, then closed (CLOSE inside the
        transaction), then the transaction goes on."""
        with conn.transaction():
            with conn.cursor(name="lakeward_tools_partial") as cur:
                cur.itersize = 100
                cur.execute(PATIENTS_SQL)
                first = cur.fetchmany(100)
            n = typed_rows(conn, "SELECT count(*) FROM clinical.patients")[0][0]
        return {"fetched": len(first), "count_after": n}

    def copy_rows(sql, fmt):
        opts = {"text": "", "csv": " (FORMAT csv)", "binary": " (FORMAT binary)"}[fmt]
        with conn.cursor() as cur:
            with cur.copy(f"COPY ({sql}) TO STDOUT{opts}") as copy:
                if fmt == "binary":
                    copy.set_types(PATIENT_TYPES if sql == PATIENTS_SQL else CLAIM_TYPES)
                    return [tuple(r) for r in copy.rows()]
                data = b"".join(bytes(b) for b in copy).decode()
        if fmt == "text":
            return parse_copy_text(data)
        # CSV: NULL is an unquoted empty field, "" a quoted one; Python's csv
        # reader reads both as '' (the data has no empty strings).
        return [[None if v == "" else v for v in r] for r in csv.reader(io.StringIO(data))]

    def copy_step(what, fmt):
        sql = PATIENTS_SQL if what == "patients" else CLAIMS_SQL
        summarise = patients_summary if what == "patients" else claims_summary

        def run():
            got = copy_rows(sql, fmt)
            if fmt == "binary":
                want = ref[what]
                same = [list(map(str, r)) for r in got] == [list(map(str, r)) for r in want]
            else:
                want = ref[what + "_text"]
                same = got == want
            first_diff = None
            if not same:
                for i, (g, w) in enumerate(zip(got, want)):
                    if list(map(str, g)) != list(map(str, w)):
                        first_diff = {"row": i, "copy": [str(x) for x in g], "select": [str(x) for x in w]}
                        break
            return {
                "rows": len(got),
                "select_rows": len(want),
                "same_as_select": same,
                "first_difference": first_diff,
                "summary": summarise(got),
            }

        step(sec, f"copy_{fmt}_{what}", run)

    step(sec, "named_cursor_closed_unused", named_cursor_closed_unused)
    step(sec, "named_cursor_partial", named_cursor_partial)
    for fmt in ["text", "csv", "binary"]:
        for what in ["patients", "claims"]:
            if what + ("_text" if fmt != "binary" else "") in ref:
                copy_step(what, fmt)
            else:
                sec[f"copy_{fmt}_{what}"] = {
                    "error": {"sqlstate": None, "message": "the reference SELECT failed", "exception": "Reference"}
                }


# ---------------------------------------------------------------------------
# asyncpg: binary results, its type introspection


async def asyncpg_connect(server_settings):
    ctx = ssl.create_default_context(cafile=CA)
    return await asyncpg.connect(
        host=HOST,
        port=PORT,
        user=USER,
        password=TOKEN,
        database="lakeward",
        ssl=ctx,
        server_settings=server_settings,
        timeout=10,
    )


async def asyncpg_steps(ref):
    sec = out.setdefault("asyncpg", {})
    conn = None
    # As an application connects: asyncpg's own startup parameters.
    try:
        conn = await asyncpg_connect({"lakeward.purpose": PURPOSE, "application_name": "lakeward-tools-suite"})
        sec["connect"] = {"ok": {"server_version": str(conn.get_server_version())}}
    except Exception as e:  # noqa: BLE001
        sec["connect"] = {"error": error_of(e)}
    if conn is None:
        # Keep testing the rest through a connection that spells
        # client_encoding as lakeward accepts it; "connect" above records
        # the failure itself.
        try:
            conn = await asyncpg_connect(
                {"client_encoding": "UTF8", "lakeward.purpose": PURPOSE, "application_name": "lakeward-tools-suite"}
            )
            sec["fallback_connection"] = {"ok": True}
        except Exception as e:  # noqa: BLE001
            sec["fallback_connection"] = {"error": error_of(e)}
            return

    async def astep(name, coro_fn):
        try:
            sec[name] = {"ok": await coro_fn()}
        except Exception as e:  # noqa: BLE001
            sec[name] = {"error": error_of(e)}
        # A failed statement inside a transaction block: start clean.
        if conn.is_in_transaction():
            try:
                await conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001
                pass

    async def types():
        res = {}
        for label, sql in TYPE_QUERIES.items():
            try:
                v = await conn.fetchval(sql)
                res[label] = {"class": type(v).__name__, "value": str(v)}
            except Exception as e:  # noqa: BLE001
                res[label] = {"error": error_of(e)}
        return res

    async def patients():
        rows = await conn.fetch(PATIENTS_SQL)
        return patients_summary([tuple(r) for r in rows])

    async def claims():
        rows = await conn.fetch(CLAIMS_SQL)
        return claims_summary([tuple(r) for r in rows])

    async def params():
        return await conn.fetchval(S01_SQL.format("$1"), "S01")

    async def prepared():
        stmt = await conn.prepare("SELECT patient_id, site_id FROM clinical.patients WHERE site_id = $1 ORDER BY patient_id")
        rows = await stmt.fetch("S01")
        return {
            "parameters": [t.name for t in stmt.get_parameters()],
            "columns": [(a.name, a.type.name) for a in stmt.get_attributes()],
            "rows": len(rows),
        }

    async def array_result():
        """int8[] has no built-in codec in asyncpg: the first query returning
        one runs asyncpg's type introspection (INTRO_LOOKUP_TYPES over
        pg_type, pg_namespace, pg_range, pg_attribute, pg_class)."""
        v = await conn.fetchval(
            "SELECT array_agg(patient_id ORDER BY patient_id) FROM "
            "(SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 3) s"
        )
        return {
            "class": type(v).__name__,
            "length": len(v),
            "element_class": type(v[0]).__name__,
            "value": [int(x) for x in v],
        }

    async def introspection_query():
        """asyncpg's type-introspection query, as asyncpg sends it, for
        int8, text, numeric and int8[]."""
        rows = await conn.fetch(asyncpg.introspection.INTRO_LOOKUP_TYPES, [20, 25, 1700, 1016])
        return sorted(
            [{"oid": r["oid"], "name": r["name"], "kind": str(r["kind"]), "elemtype": r["elemtype"]} for r in rows],
            key=lambda r: r["oid"],
        )

    async def type_by_name():
        rows = await conn.fetch(asyncpg.introspection.TYPE_BY_NAME, "int8", "pg_catalog")
        return [{"oid": r["oid"], "kind": str(r["kind"])} for r in rows]

    async def cursor():
        """A cursor in a transaction: portal paging, 100 rows per Execute."""
        async with conn.transaction():
            rows = [tuple(r) async for r in conn.cursor(PATIENTS_SQL, prefetch=100)]
        return patients_summary(rows)

    async def copy_from_query():
        buf = io.BytesIO()
        await conn.copy_from_query(PATIENTS_SQL, output=buf, format="csv")
        data = buf.getvalue().decode()
        got = [[None if v == "" else v for v in r] for r in csv.reader(io.StringIO(data))]
        want = ref.get("patients_text")
        return {"rows": len(got), "same_as_select": got == want, "summary": patients_summary(got)}

    await astep("types", types)
    await astep("patients", patients)
    await astep("claims", claims)
    await astep("params", params)
    await astep("prepared", prepared)
    await astep("array_result", array_result)
    await astep("introspection_query", introspection_query)
    await astep("type_by_name", type_by_name)
    await astep("cursor", cursor)
    await astep("copy_from_query", copy_from_query)
    await conn.close()


# ---------------------------------------------------------------------------
# ADBC PostgreSQL driver, polars


def arrow_schema(schema):
    return {f.name: str(f.type) for f in schema}


def adbc_suite():
    sec = out.setdefault("adbc", {})
    try:
        conn = adbc_pg.connect(libpq_uri())
        sec["connect"] = {"ok": True}
    except Exception as e:  # noqa: BLE001
        sec["connect"] = {"error": error_of(e)}
        return

    def fetch(sql, params=None):
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetch_arrow_table()

    def patients():
        t = fetch(PATIENTS_SQL)
        rows = list(zip(*[t.column(c).to_pylist() for c in PATIENT_COLUMNS]))
        return {"schema": arrow_schema(t.schema), "summary": patients_summary(rows)}

    def claims():
        t = fetch(CLAIMS_SQL)
        rows = list(zip(*[t.column(c).to_pylist() for c in CLAIMS_COLUMNS]))
        return {"schema": arrow_schema(t.schema), "summary": claims_summary(rows)}

    def patients_without_copy():
        """The same read with the driver's COPY path turned off
        (adbc.postgresql.use_copy=false: a plain query per batch)."""
        with conn.cursor() as cur:
            cur.adbc_statement.set_options(**{"adbc.postgresql.use_copy": "false"})
            cur.execute(PATIENTS_SQL)
            t = cur.fetch_arrow_table()
        rows = list(zip(*[t.column(c).to_pylist() for c in PATIENT_COLUMNS]))
        return {"schema": arrow_schema(t.schema), "summary": patients_summary(rows)}

    def params():
        t = fetch(S01_SQL.format("$1"), ("S01",))
        return t.column(0).to_pylist()[0]

    def get_objects():
        """adbc_get_objects: the catalog as ADBC lists it (tables and columns)."""
        objs = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
        tables = []
        columns = {}
        for cat in objs:
            for sch in cat.get("catalog_db_schemas") or []:
                for tbl in sch.get("db_schema_tables") or []:
                    name = f"{sch['db_schema_name']}.{tbl['table_name']}"
                    tables.append(name)
                    columns[name] = [c["column_name"] for c in tbl.get("table_columns") or []]
        return {"tables": sorted(tables), "patients_columns": columns.get("clinical.patients")}

    def table_schema():
        return arrow_schema(conn.adbc_get_table_schema("patients", db_schema_filter="clinical"))

    step(sec, "patients", patients)
    step(sec, "patients_without_copy", patients_without_copy)
    step(sec, "claims", claims)
    step(sec, "params", params)
    step(sec, "get_objects", get_objects)
    step(sec, "get_table_schema", table_schema)
    conn.close()


def polars_suite():
    """read_database_uri with each engine: ADBC, ConnectorX with its default
    protocol (binary: COPY (query) TO STDOUT WITH BINARY) and ConnectorX's
    cursor protocol (a plain query)."""
    sec = out.setdefault("polars", {})
    for key, engine, kw in [
        ("adbc", "adbc", {}),
        ("connectorx", "connectorx", {}),
        ("connectorx_cursor", "connectorx", {"protocol": "cursor"}),
    ]:
        s = sec.setdefault(key, {})

        def patients(engine=engine, kw=kw):
            df = pl.read_database_uri(PATIENTS_SQL, libpq_uri(), engine=engine, **kw)
            return {
                "schema": {k: str(v) for k, v in df.schema.items()},
                "summary": patients_summary(df.select(PATIENT_COLUMNS).iter_rows()),
            }

        def claims(engine=engine, kw=kw):
            df = pl.read_database_uri(CLAIMS_SQL, libpq_uri(), engine=engine, **kw)
            return {
                "schema": {k: str(v) for k, v in df.schema.items()},
                "summary": claims_summary(df.select(CLAIMS_COLUMNS).iter_rows()),
            }

        step(s, "patients", patients)
        step(s, "claims", claims)


# ---------------------------------------------------------------------------
# psql \copy (query) TO file


def psql_suite(ref):
    sec = out.setdefault("psql", {})
    conninfo = (
        f"host={HOST} port={PORT} dbname=lakeward user={USER} sslmode=require "
        f"options='{OPTIONS}' application_name=lakeward-tools-suite"
    )
    child_env = dict(os.environ, PGPASSWORD=TOKEN, PGCONNECT_TIMEOUT="10")
    child_env.pop("PGSERVICE", None)
    for what, sql in [("patients", PATIENTS_SQL), ("claims", CLAIMS_SQL)]:
        for fmt, opt in [("text", ""), ("csv", " WITH (FORMAT csv)")]:

            def run(what=what, sql=sql, fmt=fmt, opt=opt):
                with tempfile.TemporaryDirectory(prefix="lakeward-psql-copy") as d:
                    path = os.path.join(d, f"{what}.{fmt}")
                    cmd = ["psql", conninfo, "-X", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-c", f"\\copy ({sql}) TO '{path}'{opt}"]
                    try:
                        p = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=60)
                    except FileNotFoundError:
                        raise SystemExit("psql is missing: apt-get install postgresql-client (.ci/run installs it)")
                    if p.returncode != 0:
                        raise PsqlError(p.stderr.strip())
                    with open(path, encoding="utf-8") as f:
                        data = f.read()
                if fmt == "text":
                    got = parse_copy_text(data)
                else:
                    got = [[None if v == "" else v for v in r] for r in csv.reader(io.StringIO(data))]
                want = ref.get(what + "_text")
                summarise = patients_summary if what == "patients" else claims_summary
                return {
                    "rows": len(got),
                    "select_rows": None if want is None else len(want),
                    "same_as_select": got == want,
                    "stdout": p.stdout.strip(),
                    "summary": summarise(got),
                }

            step(sec, f"copy_{fmt}_{what}", run)


class PsqlError(Exception):
    """psql exited non-zero: what it printed, and the SQLSTATE of the
    server's error (VERBOSITY=verbose prints "ERROR:  0A000: …")."""

    def __init__(self, stderr):
        m = re.search(r"ERROR:\s+([0-9A-Z]{5}): (.*)", stderr)
        super().__init__(m.group(2) if m else stderr)
        self.sqlstate = m.group(1) if m else None


# ---------------------------------------------------------------------------


def main():
    ref = {}
    conn = psycopg_connect(autocommit=True)
    out["connection"] = {
        "ssl_in_use": conn.pgconn.ssl_in_use,
        "versions": {
            "psycopg": psycopg.__version__,
            "psycopg2": psycopg2.__version__.split(" ")[0],
            "sqlalchemy": sa.__version__,
            "pandas": pd.__version__,
            "asyncpg": asyncpg.__version__,
            "adbc_driver_postgresql": getattr(adbc_pg, "__version__", None)
            or __import__("adbc_driver_postgresql").__version__,
            "polars": pl.__version__,
            "connectorx": __import__("connectorx").__version__,
        },
    }
    reference(conn, ref)
    psycopg_suite(conn, ref)
    conn.close()

    for driver in ["psycopg", "psycopg2"]:
        sqlalchemy_suite(driver)
        pandas_suite(driver)
    asyncio.run(asyncpg_steps(ref))
    adbc_suite()
    polars_suite()
    psql_suite(ref)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
