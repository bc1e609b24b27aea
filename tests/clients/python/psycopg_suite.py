"""psycopg 3 against lakeward. Driven by tests/it/clients.rs.

The connection comes from LAKEWARD_HOST, LAKEWARD_PORT, LAKEWARD_USER,
LAKEWARD_TOKEN (the password) and LAKEWARD_PURPOSE (LAKEWARD_ROLE picks the
auditor's checks; it defaults to the user name). The program prints ONE JSON
object on stdout: for every step either {"ok": <what was observed>} or
{"error": {"sqlstate": ..., "message": ...}} when the server refused it. The
Rust test decides what is expected per role. Anything else (no connection, a
client-side failure) is an unexpected exception: traceback on stderr, exit 1.
"""

import json
import os
import sys

import psycopg

TABLES = [
    "clinical.patients",
    "clinical.encounters",
    "clinical.observations",
    "claims.claims",
    "governance.consents",
    "audit.access_log",
]

AUDIT_VIEWS = [
    "break_glass_access",
    "denied_attempts",
    "access_by_purpose",
    "daily_activity",
    "statements",
    "patient_access",
    "unusual_access",
    "shadow_differences",
]

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

AUDIT_TYPE_QUERIES = {
    "bigint": "SELECT seq FROM audit.access_log WHERE seq IS NOT NULL ORDER BY ts LIMIT 1",
    "text": 'SELECT "user" FROM audit.access_log WHERE "user" IS NOT NULL ORDER BY ts LIMIT 1',
    "timestamp": "SELECT ts FROM audit.access_log ORDER BY ts LIMIT 1",
    "double": "SELECT duration_ms FROM audit.access_log WHERE duration_ms IS NOT NULL ORDER BY ts LIMIT 1",
}

COPY_QUERY = "SELECT patient_id, site_id FROM clinical.patients ORDER BY patient_id LIMIT 10"

out = {}


def env(name):
    v = os.environ.get(name)
    if not v:
        raise SystemExit(f"environment variable {name} is not set")
    return v


def error_of(e):
    return {"sqlstate": e.sqlstate, "message": str(e).strip()}


def step(name, conn, f):
    """Run one step; a server refusal (psycopg.Error with a SQLSTATE) is
    recorded, anything else propagates."""
    try:
        out[name] = {"ok": f()}
    except psycopg.Error as e:
        if e.sqlstate is None:
            raise
        out[name] = {"error": error_of(e)}
    # A refusal inside a transaction block leaves the transaction aborted;
    # every step starts from a clean connection.
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()


def rows_of(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def main():
    user = env("LAKEWARD_USER")
    role = os.environ.get("LAKEWARD_ROLE") or user
    auditor = role == "auditor"
    conn = psycopg.connect(
        host=env("LAKEWARD_HOST"),
        port=int(env("LAKEWARD_PORT")),
        user=user,
        password=env("LAKEWARD_TOKEN"),
        dbname="lakeward",
        sslmode="require",
        options=f"-c lakeward.purpose={env('LAKEWARD_PURPOSE')}",
        application_name="lakeward-psycopg-suite",
        connect_timeout=10,
        autocommit=True,
    )
    out["connection"] = {
        "ssl_in_use": conn.pgconn.ssl_in_use,
        "server_version": conn.info.server_version,
        "psycopg": psycopg.__version__,
    }

    # ---- the catalog, as SQL (pg_catalog and information_schema) ----
    step("schemas", conn, lambda: [
        r[0] for r in rows_of(conn, "SELECT nspname FROM pg_catalog.pg_namespace ORDER BY nspname")
    ])
    step("tables", conn, lambda: [
        f"{s}.{t}" for s, t in rows_of(
            conn,
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2",
        )
    ])
    step("patients_columns", conn, lambda: [
        {"name": n, "type": t} for n, t in rows_of(
            conn,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            ("clinical", "patients"),
        )
    ])
    # One question per statement: a refusal of one does not hide the other.
    for step_name, table in [
        ("has_table_privilege_patients", "clinical.patients"),
        ("has_table_privilege_access_log", "audit.access_log"),
    ]:
        step(step_name, conn, lambda table=table: rows_of(
            conn, f"SELECT has_table_privilege('{table}', 'SELECT')"
        )[0][0])

    counts = {}
    for t in TABLES:
        try:
            counts[t] = {"ok": rows_of(conn, f"SELECT count(*) FROM {t}")[0][0]}
        except psycopg.Error as e:
            if e.sqlstate is None:
                raise
            counts[t] = {"error": error_of(e)}
    out["counts"] = counts

    if not auditor:
        step("params", conn, lambda: params(conn))
        step("types", conn, lambda: types(conn, TYPE_QUERIES))
        step("types_binary", conn, lambda: types(conn, TYPE_QUERIES, binary=True))
        step("named_cursor", conn, lambda: named_cursor(conn))
        step("copy_to_stdout", conn, lambda: copy_to(conn))
        step("pipeline", conn, lambda: pipeline(conn, [
            "SELECT count(*) FROM clinical.patients",
            "SELECT count(*) FROM clinical.encounters",
            "SELECT count(*) FROM claims.claims",
        ]))
    else:
        step("types", conn, lambda: types(conn, AUDIT_TYPE_QUERIES))
        step("types_binary", conn, lambda: types(conn, AUDIT_TYPE_QUERIES, binary=True))
        step("pipeline", conn, lambda: pipeline(
            conn, [f"SELECT count(*) FROM audit.{v}" for v in AUDIT_VIEWS]
        ))
    step("copy_from_stdin", conn, lambda: copy_from(conn))

    conn.close()
    print(json.dumps(out))


def params(conn):
    """%s placeholders with an int and a text parameter (server-side binding)."""
    pid, site = rows_of(
        conn,
        "SELECT patient_id, site_id FROM clinical.patients ORDER BY patient_id LIMIT 1 OFFSET 3",
    )[0]
    got = rows_of(
        conn,
        "SELECT patient_id, site_id FROM clinical.patients WHERE patient_id = %s AND site_id = %s",
        (pid, site),
    )
    wrong_site = rows_of(
        conn,
        "SELECT count(*) FROM clinical.patients WHERE patient_id = %s AND site_id = %s",
        (pid, "S99"),
    )[0][0]
    return {
        "id": pid,
        "site": site,
        "rows": [[r[0], r[1]] for r in got],
        "wrong_site_count": wrong_site,
    }


def types(conn, queries, binary=False):
    """Each type as psycopg loads it: the Python class and str() of the value
    (results in text format, or binary format with binary=True)."""
    res = {}
    for label, sql in queries.items():
        try:
            with conn.cursor(binary=binary) as cur:
                cur.execute(sql)
                v = cur.fetchone()[0]
                res[label] = {
                    "class": type(v).__name__,
                    "module": type(v).__module__,
                    "value": str(v),
                    "type_oid": cur.description[0].type_code,
                }
        except psycopg.Error as e:
            if e.sqlstate is None:
                raise
            res[label] = {"error": error_of(e)}
    return res


def named_cursor(conn):
    """A server-side cursor: DECLARE "c" CURSOR FOR ...; FETCH FORWARD n FROM
    "c" (itersize rows per FETCH); CLOSE "c", inside a transaction."""
    sql = "SELECT observation_id, patient_id FROM clinical.observations ORDER BY observation_id LIMIT 1000"
    expected = [list(r) for r in rows_of(conn, sql)]
    with conn.transaction():
        with conn.cursor(name="c") as cur:
            cur.itersize = 100
            cur.execute(sql)
            got = [list(r) for r in cur]
    return {
        "rows": len(got),
        "expected_rows": len(expected),
        "same_as_select": got == expected,
        "first": got[0] if got else None,
        "last": got[-1] if got else None,
    }


def copy_to(conn):
    """COPY (query) TO STDOUT: the same rows as the query."""
    expected = [[str(v) for v in r] for r in rows_of(conn, COPY_QUERY)]
    got = []
    with conn.cursor() as cur:
        with cur.copy(f"COPY ({COPY_QUERY}) TO STDOUT") as copy:
            for row in copy.rows():
                got.append([v if isinstance(v, str) else bytes(v).decode() for v in row])
    return {"rows": got, "expected": expected, "same_as_select": got == expected}


def copy_from(conn):
    """COPY ... FROM STDIN must be refused (read-only proxy)."""
    with conn.cursor() as cur:
        with cur.copy("COPY clinical.patients (patient_id, site_id) FROM STDIN") as copy:
            copy.write_row((1, "S01"))
    return "accepted"


def pipeline(conn, queries):
    """Pipeline mode: every query sent before any result is read."""
    with conn.pipeline():
        curs = []
        for q in queries:
            cur = conn.cursor()
            cur.execute(q)
            curs.append(cur)
    return {q: c.fetchone()[0] for q, c in zip(queries, curs)}


if __name__ == "__main__":
    main()
