"""Apache Superset against lakeward, through Superset's own code.

Superset runs in-process (``superset.app.create_app``) on a throwaway SQLite
metadata database in a temporary folder: migrations are applied, ``superset
init`` is run and an admin user is created. Every step then goes through
Superset's REST API with Flask's test client — the same views, commands,
engine spec (``PostgresEngineSpec``), SQLAlchemy dialect and psycopg2 driver
that the web UI drives:

  test_connection     POST /api/v1/database/test_connection/  ("Test connection")
  create_database     POST /api/v1/database/                   (the "Connect" button)
  catalogs            GET  /api/v1/database/<pk>/catalogs/     (multi-catalog only)
  schemas             GET  /api/v1/database/<pk>/schemas/      (SQL Lab schema picker)
  tables              GET  /api/v1/database/<pk>/tables/       (SQL Lab table picker)
  table_metadata_*    GET  /api/v1/database/<pk>/table_metadata/ (columns, keys, indexes)
  table_extra_*       GET  /api/v1/database/<pk>/table_metadata/extra/
  sqllab_preview      POST /api/v1/sqllab/execute/  the table preview (select_star)
  sqllab_query        POST /api/v1/sqllab/execute/  a query typed in SQL Lab
  sqllab_unqualified  the same with unqualified names and the schema dropdown set
  sqllab_cancel       superset.sql_lab.cancel_query (the "Stop" button)
  dataset_*           POST /api/v1/dataset/         (a dataset = SqlaTable; columns
                                                     from the inspector)
  chart_*             POST /api/v1/chart/data       (Explore: QueryObject →
                                                     SqlaTable.get_sqla_query), with
                      metrics, group-bys, time grains on DATE and TIMESTAMP
                      columns, time ranges, a series limit, a WHERE clause
  samples_claims,     POST /datasource/samples      (Explore's "Samples", a
  drill_to_detail_*                                  dashboard's "Drill to detail")
  dataset_refresh_*   PUT  /api/v1/dataset/<id>/refresh ("Sync columns from source")
  dataset_virtual,    POST /api/v1/dataset/ with SQL (SQL Lab's "Save dataset")
  chart_virtual_*     and a chart on it (a subquery AS virtual_table)
  function_names      GET  /api/v1/database/<pk>/function_names/ (autocomplete)
  filter_values       GET  /api/v1/datasource/table/<id>/column/<col>/values/

The connection is the SQLAlchemy URI a user pastes into "Connect a
database": postgresql+psycopg2://USER:TOKEN@HOST:PORT/lakeward?sslmode=require
&options=-c lakeward.purpose=PURPOSE, with USER, TOKEN, HOST, PORT and
PURPOSE from LAKEWARD_USER, LAKEWARD_TOKEN, LAKEWARD_HOST, LAKEWARD_PORT and
LAKEWARD_PURPOSE (the names tests/clients/python/psycopg_suite.py uses).

Every statement Superset sends through psycopg2 is recorded (the connection's
cursor factory is replaced by one that notes the statement and, when the
server refuses it, the SQLSTATE and message); nothing else about Superset is
changed. Cursors opened with a cursor factory of their own are not seen
(psycopg2's hstore probe on each new connection: SELECT t.oid, typarray FROM
pg_type ...); the server's log has those.

The program prints ONE JSON object on stdout: for every step either
{"ok": <what was observed>} or {"error": {"sqlstate": ..., "message": ...,
"status": <HTTP status>}}; "expected" holds the same numbers computed with a
plain psycopg2 connection (no Superset) and "checks" puts each chart number
next to it; "statements" lists what Superset sent, per step, and
"failed_statements" the distinct (SQLSTATE, SQL) pairs the server refused. Anything else (Superset not installed, no
server) is an unexpected exception: traceback on stderr, exit 1.

Superset is not a dependency of the project: it is installed in a virtualenv
of its own (see README.md beside this file) and this file is run with that
virtualenv's python.
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse

import psycopg2
import psycopg2.extensions

# ---------------------------------------------------------------------------
# statement recording


STATEMENTS = []
CURRENT_STEP = [None]


def _text(q):
    if q is None:
        return None
    if isinstance(q, bytes):
        return q.decode("utf-8", "replace")
    return str(q)


class RecordingCursor(psycopg2.extensions.cursor):
    """A psycopg2 cursor that notes every statement and its outcome."""

    def execute(self, query, vars=None):
        rec = {"step": CURRENT_STEP[0]}
        try:
            return super().execute(query, vars)
        except psycopg2.Error as e:
            rec["error"] = {
                "sqlstate": e.pgcode,
                "message": (e.pgerror or str(e)).strip(),
            }
            raise
        finally:
            rec["sql"] = _text(self.query) or _text(query)
            STATEMENTS.append(rec)

    def executemany(self, query, vars_list):
        rec = {"step": CURRENT_STEP[0], "sql": _text(query), "many": True}
        try:
            return super().executemany(query, vars_list)
        except psycopg2.Error as e:
            rec["error"] = {"sqlstate": e.pgcode, "message": (e.pgerror or str(e)).strip()}
            raise
        finally:
            STATEMENTS.append(rec)


_plain_connect = psycopg2.connect


def _recording_connect(*args, **kwargs):
    conn = _plain_connect(*args, **kwargs)
    if "cursor_factory" not in kwargs:
        conn.cursor_factory = RecordingCursor
    return conn


# SQLAlchemy's psycopg2 dialect calls dbapi.connect with dbapi = the psycopg2
# module, so this is what every Superset connection goes through.
psycopg2.connect = _recording_connect


# ---------------------------------------------------------------------------
# helpers


def env(name):
    v = os.environ.get(name)
    if not v:
        raise SystemExit(f"environment variable {name} is not set")
    return v


def user_uri(host, port, user, token, purpose):
    """The SQLAlchemy URI a user pastes into Superset's "Connect a database"."""
    options = urllib.parse.quote(f"-c lakeward.purpose={purpose}", safe="")
    return (
        f"postgresql+psycopg2://{urllib.parse.quote(user, safe='')}:"
        f"{urllib.parse.quote(token, safe='')}@{host}:{port}/lakeward"
        f"?sslmode=require&options={options}"
    )


def rison(obj):
    """The few rison shapes Superset's frontend sends in ?q=."""
    if obj is True:
        return "!t"
    if obj is False:
        return "!f"
    if isinstance(obj, (int, float)):
        return str(obj)
    if isinstance(obj, str):
        if obj and all(c.isalnum() or c in "-_./~" for c in obj) and not obj[0].isdigit() and obj[0] != "-":
            return obj
        return "'" + obj.replace("!", "!!").replace("'", "!'") + "'"
    if isinstance(obj, dict):
        return "(" + ",".join(f"{k}:{rison(v)}" for k, v in obj.items()) + ")"
    if isinstance(obj, list):
        return "!(" + ",".join(rison(v) for v in obj) + ")"
    raise TypeError(obj)


class StepFailed(Exception):
    def __init__(self, status, body):
        super().__init__(status)
        self.status = status
        self.body = body


def api_message(body):
    """The message Superset's API put in an error response."""
    if isinstance(body, dict):
        errs = body.get("errors")
        if errs:
            return "; ".join(str(e.get("message")) for e in errs if isinstance(e, dict))
        for k in ("message", "msg", "error"):
            if body.get(k):
                msg = body[k] if isinstance(body[k], str) else json.dumps(body[k])
                if body.get("extra") is not None:
                    msg += " " + json.dumps(body["extra"], default=str)
                return msg
    return str(body)[:2000]


out = {}


def step(name, f):
    """Run one step; an API error is recorded with the SQLSTATE of the last
    statement the server refused during the step (if any)."""
    CURRENT_STEP[0] = name
    first = len(STATEMENTS)
    t0 = time.monotonic()
    try:
        out[name] = {"ok": f()}
        failed = [s for s in STATEMENTS[first:] if "error" in s]
        if failed:
            # Superset swallowed a refusal and carried on: worth knowing.
            out[name]["refused_statements"] = len(failed)
    except StepFailed as e:
        err = {"status": e.status, "message": api_message(e.body)}
        failed = [s for s in STATEMENTS[first:] if "error" in s]
        if failed:
            err["sqlstate"] = failed[-1]["error"]["sqlstate"]
            err["server_message"] = failed[-1]["error"]["message"]
            err["failed_sql"] = failed[-1]["sql"]
        out[name] = {"error": err}
    except Exception as e:  # a Superset-side failure that did not go through the API
        err = {"message": f"{type(e).__name__}: {e}"}
        failed = [s for s in STATEMENTS[first:] if "error" in s]
        if failed:
            err["sqlstate"] = failed[-1]["error"]["sqlstate"]
            err["server_message"] = failed[-1]["error"]["message"]
            err["failed_sql"] = failed[-1]["sql"]
        out[name] = {"error": err}
    out[name]["ms"] = round((time.monotonic() - t0) * 1000)
    CURRENT_STEP[0] = None
    return out[name].get("ok")


# ---------------------------------------------------------------------------
# Superset, in-process


def boot_superset(tmp):
    cfg = os.path.join(tmp, "superset_config.py")
    with open(cfg, "w") as f:
        f.write(
            "SECRET_KEY = " + repr(os.urandom(24).hex()) + "\n"
            f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{tmp}/superset.db'\n"
            "WTF_CSRF_ENABLED = False\n"
            "TALISMAN_ENABLED = False\n"
            "RATELIMIT_ENABLED = False\n"
            "AUTH_RATE_LIMITED = False\n"
            "TESTING = True\n"
        )
    os.environ["SUPERSET_CONFIG_PATH"] = cfg
    os.environ.setdefault("SUPERSET_LOG_LEVEL", "error")

    import logging

    from superset.app import create_app

    app = create_app()
    logging.getLogger().setLevel(logging.ERROR)
    with app.app_context():
        import flask_migrate

        import superset
        from superset import appbuilder, security_manager

        # `superset db upgrade`
        flask_migrate.upgrade(
            directory=os.path.join(os.path.dirname(superset.__file__), "migrations")
        )
        # `superset init`
        appbuilder.add_permissions(update_perms=True)
        security_manager.sync_role_definitions()
        # `superset fab create-admin`
        security_manager.add_user(
            "admin", "Ad", "Min", "admin@example.invalid",
            security_manager.find_role("Admin"), password="admin-password",
        )
    from importlib.metadata import version

    return app, version("apache-superset")


def main():
    host = env("LAKEWARD_HOST")
    port = int(env("LAKEWARD_PORT"))
    user = env("LAKEWARD_USER")
    token = env("LAKEWARD_TOKEN")
    purpose = env("LAKEWARD_PURPOSE")
    uri = user_uri(host, port, user, token, purpose)

    expected = expected_numbers(host, port, user, token, purpose)
    out["expected"] = expected

    tmp = tempfile.mkdtemp(prefix="lakeward-superset-")
    t0 = time.monotonic()
    # Superset's migrations print progress on stdout: keep stdout for the
    # one JSON object.
    with contextlib.redirect_stdout(sys.stderr):
        app, version = boot_superset(tmp)
    out["superset"] = {"version": version, "boot_ms": round((time.monotonic() - t0) * 1000)}

    with app.app_context():
        client = app.test_client()
        r = client.post(
            "/login/",
            data={"username": "admin", "password": "admin-password"},
            follow_redirects=False,
        )
        # A failed login is a redirect too: ask who we are.
        if r.status_code not in (200, 302) or client.get("/api/v1/me/").status_code != 200:
            raise RuntimeError(f"Superset login failed: {r.status_code}")
        run_steps(client, uri, expected)
    shutil.rmtree(tmp, ignore_errors=True)

    out["checks"] = consistency(expected)
    out["statements"] = STATEMENTS
    out["failed_statements"] = sorted(
        {(s["error"]["sqlstate"] or "", s["sql"]) for s in STATEMENTS if "error" in s}
    )
    print(json.dumps(out, indent=1, default=str))


def call(client, method, path, body=None, ok=(200, 201)):
    if method == "GET":
        r = client.get(path)
    elif method == "POST":
        r = client.post(path, json=body)
    elif method == "PUT":
        r = client.put(path, json=body)
    else:
        raise ValueError(method)
    try:
        payload = r.get_json()
    except Exception:  # pragma: no cover - an HTML error page
        payload = r.get_data(as_text=True)[:2000]
    if r.status_code not in ok:
        raise StepFailed(r.status_code, payload)
    return payload


# The extra JSON the "Connect a database" form sends with default settings.
DEFAULT_EXTRA = json.dumps({
    "allows_virtual_table_explore": True,
    "metadata_params": {},
    "engine_params": {},
    "schemas_allowed_for_file_upload": [],
})

DATASETS = [
    ("clinical", "patients"),
    ("clinical", "encounters"),
    ("claims", "claims"),
]


def run_steps(client, uri, expected):
    db_name = "lakeward"

    # ---- "Test connection" ----
    step("test_connection", lambda: call(client, "POST", "/api/v1/database/test_connection/", {
        "database_name": db_name,
        "sqlalchemy_uri": uri,
        "configuration_method": "sqlalchemy_form",
        "engine": "postgresql",
        "driver": "psycopg2",
        "impersonate_user": False,
        "extra": DEFAULT_EXTRA,
        "masked_encrypted_extra": "{}",
    }).get("message"))

    # ---- "Connect" ----
    def create():
        r = call(client, "POST", "/api/v1/database/", {
            "database_name": db_name,
            "sqlalchemy_uri": uri,
            "configuration_method": "sqlalchemy_form",
            "engine": "postgresql",
            "driver": "psycopg2",
            "expose_in_sqllab": True,
            "allow_run_async": False,
            "allow_ctas": False,
            "allow_cvas": False,
            "allow_dml": False,
            "impersonate_user": False,
            "extra": DEFAULT_EXTRA,
            "masked_encrypted_extra": "{}",
        })
        return {"id": r["id"]}

    created = step("create_database", create)
    if created:
        pk = created["id"]
    else:
        # Register the model directly so the later steps still say what they
        # would do (the API refused to save it).
        from superset.extensions import db
        from superset.models.core import Database

        database = Database(database_name=db_name, expose_in_sqllab=True, extra=DEFAULT_EXTRA)
        database.set_sqlalchemy_uri(uri)
        db.session.add(database)
        db.session.commit()
        pk = database.id
        out["create_database"]["registered_directly"] = True

    # ---- SQL Lab's left panel ----
    step("catalogs", lambda: call(
        client, "GET", f"/api/v1/database/{pk}/catalogs/?q=" + rison({"force": True})
    )["result"])

    schemas = step("schemas", lambda: sorted(call(
        client, "GET", f"/api/v1/database/{pk}/schemas/?q=" + rison({"force": True})
    )["result"])) or []

    def tables():
        found = {}
        for schema in schemas:
            r = call(client, "GET", f"/api/v1/database/{pk}/tables/?q="
                     + rison({"force": True, "schema_name": schema}))
            found[schema] = sorted(f"{t['value']}:{t['type']}" for t in r["result"])
        return found

    step("tables", tables)

    previews = {}

    def table_metadata(schema, table):
        def f():
            q = urllib.parse.urlencode({"name": table, "schema": schema})
            r = call(client, "GET", f"/api/v1/database/{pk}/table_metadata/?{q}")
            previews[(schema, table)] = r.get("selectStar")
            return {
                "columns": [f"{c['name']}:{c['type']}" for c in r.get("columns", [])],
                "primaryKey": r.get("primaryKey"),
                "foreignKeys": r.get("foreignKeys"),
                "indexes": r.get("indexes"),
                "comment": r.get("comment"),
                "selectStar": r.get("selectStar"),
            }
        return f

    def table_extra(schema, table):
        def f():
            q = urllib.parse.urlencode({"name": table, "schema": schema})
            return call(client, "GET", f"/api/v1/database/{pk}/table_metadata/extra/?{q}")
        return f

    step("table_metadata_patients", table_metadata("clinical", "patients"))
    step("table_metadata_claims", table_metadata("claims", "claims"))
    step("table_extra_patients", table_extra("clinical", "patients"))

    # ---- SQL Lab: run queries ----
    client_ids = {}

    def sqllab(sql, schema=None, limit=1000):
        def f():
            client_ids[CURRENT_STEP[0]] = os.urandom(5).hex()
            body = {
                "database_id": pk,
                "sql": sql,
                "client_id": client_ids[CURRENT_STEP[0]],
                "queryLimit": limit,
                "sql_editor_id": "1",
                "tab": "Untitled Query 1",
                "runAsync": False,
                "select_as_cta": False,
                "ctas_method": "TABLE",
                "templateParams": "",
                "expand_data": True,
            }
            if schema is not None:
                body["schema"] = schema
            r = call(client, "POST", "/api/v1/sqllab/execute/", body, ok=(200, 202))
            if r.get("status") not in ("success",):
                raise StepFailed(200, {"message": r.get("error") or r.get("errors") or r})
            data = r.get("data") or []
            return {
                "rows": len(data),
                "columns": [c.get("column_name") or c.get("name") for c in r.get("columns", [])],
                "first": data[0] if data else None,
                "executed_sql": (r.get("query") or {}).get("executedSql"),
            }
        return f

    preview_sql = previews.get(("clinical", "patients")) or \
        'SELECT * FROM clinical.patients LIMIT 100'
    step("sqllab_preview", sqllab(preview_sql, schema="clinical", limit=100))
    step("sqllab_query", sqllab(
        "SELECT site_id, count(*) AS n FROM clinical.patients GROUP BY site_id ORDER BY site_id"
    ))
    step("sqllab_unqualified", sqllab(
        "SELECT payer, count(*) AS n, sum(billed_amount) AS billed FROM claims GROUP BY payer ORDER BY payer",
        schema="claims",
    ))

    # SQL Lab's "Stop" button. While a query runs, SQL Lab holds its
    # connection and has noted the backend pid (PostgresEngineSpec.
    # get_cancel_query_id: SELECT pg_backend_pid()); "Stop" calls
    # superset.sql_lab.cancel_query, which sends pg_terminate_backend over
    # pg_stat_activity on a second connection. This replays that with a live
    # SQL Lab connection standing in for the running query.
    def cancel():
        from superset.extensions import db
        from superset.models.sql_lab import Query
        from superset.sql_lab import cancel_query
        from superset.utils.core import QuerySource

        query = db.session.query(Query).filter_by(client_id=client_ids.get("sqllab_query")).one_or_none()
        if query is None:
            raise RuntimeError("SQL Lab kept no query for sqllab_query")
        database = query.database
        with database.get_raw_connection(
            catalog=query.catalog, schema=query.schema, source=QuerySource.SQL_LAB
        ) as running:
            cur = running.cursor()
            pid = database.db_engine_spec.get_cancel_query_id(cur, query)
            query.set_extra_json_key("cancel_query", pid)
            db.session.commit()
            cancelled = cancel_query(query)
            try:
                cur.execute("SELECT 1")
                cur.fetchall()
                terminated = False
            except psycopg2.Error:
                terminated = True
        if not cancelled:
            # PostgresEngineSpec.cancel_query swallows the error and returns False.
            raise StepFailed(200, {"message": "cancel_query returned False (the Stop button does nothing)"})
        return {"cancelled": cancelled, "connection_terminated": terminated}

    step("sqllab_cancel", cancel)

    # ---- datasets ----
    ds = {}
    for schema, table in DATASETS:
        def create_dataset(schema=schema, table=table):
            r = call(client, "POST", "/api/v1/dataset/", {
                "database": pk, "schema": schema, "table_name": table,
            })
            ds_id = r["id"]
            got = call(client, "GET", f"/api/v1/dataset/{ds_id}")["result"]
            ds[table] = {
                "id": ds_id,
                "columns": {c["column_name"]: c for c in got["columns"]},
            }
            return {
                "id": ds_id,
                "columns": [
                    f"{c['column_name']}:{c['type']}{':dttm' if c.get('is_dttm') else ''}"
                    for c in got["columns"]
                ],
                "metrics": [m["metric_name"] for m in got["metrics"]],
            }
        step(f"dataset_{table}", create_dataset)

    # ---- charts: Explore's POST /api/v1/chart/data ----
    def chart(table, query, form_data=None, check=None):
        def f():
            if table not in ds:
                raise RuntimeError(f"no dataset for {table}")
            body = {
                "datasource": {"id": ds[table]["id"], "type": "table"},
                "force": True,
                "queries": [query],
                "form_data": form_data or {},
                "result_format": "json",
                "result_type": "full",
            }
            r = call(client, "POST", "/api/v1/chart/data", body)
            res = r["result"][0]
            if res.get("error"):
                raise StepFailed(200, {"message": res["error"]})
            data = res.get("data") or []
            observed = {
                "rows": res.get("rowcount", len(data)),
                "colnames": res.get("colnames"),
                "query": res.get("query"),
                "first": data[0] if data else None,
            }
            if check:
                observed.update(check(data))
            return observed
        return f

    def temporal(col, grain):
        return {
            "timeGrain": grain,
            "columnType": "BASE_AXIS",
            "sqlExpression": col,
            "label": col,
            "expressionType": "SQL",
        }

    def total(metric):
        def f(data):
            return {f"total_{metric}": _round(sum((row.get(metric) or 0) for row in data))}
        return f

    sum_billed = {
        "expressionType": "SIMPLE",
        "column": {"column_name": "billed_amount", "type": "NUMERIC"},
        "aggregate": "SUM",
        "label": "SUM(billed_amount)",
    }
    count_star = {
        "expressionType": "SQL",
        "sqlExpression": "COUNT(*)",
        "label": "COUNT(*)",
    }

    # Bar chart: claims per month and payer, COUNT(*) and SUM(billed_amount)
    # (a DATE column under a time grain).
    step("chart_claims_month_payer", chart("claims", {
        "columns": [temporal("service_date", "P1M"), "payer"],
        "metrics": [count_star, sum_billed],
        "orderby": [[count_star, False]],
        "filters": [{"col": "service_date", "op": "TEMPORAL_RANGE", "val": "No filter"}],
        "row_limit": 100000,
        "extras": {"having": "", "where": ""},
        "annotation_layers": [],
        "series_columns": ["payer"],
        "time_offsets": [],
        "post_processing": [],
    }, {"viz_type": "echarts_timeseries_bar"}, check=lambda data: {
        "total_COUNT(*)": sum(row.get("COUNT(*)") or 0 for row in data),
        "total_SUM(billed_amount)": _round(sum(row.get("SUM(billed_amount)") or 0 for row in data)),
        "groups": len(data),
    }))

    # Table chart: patients per site (the saved "count" metric) with a
    # yearly grain on a DATE column (birth_date is masked for the analyst).
    step("chart_patients_site_year", chart("patients", {
        "columns": ["site_id", temporal("birth_date", "P1Y")],
        "metrics": ["count"],
        "filters": [],
        "row_limit": 100000,
        "extras": {"having": "", "where": ""},
    }, {"viz_type": "table"}, check=total("count")))

    # Line chart: encounters per week and type on a TIMESTAMP column,
    # restricted to an explicit time range that covers every row.
    step("chart_encounters_week_type", chart("encounters", {
        "columns": [temporal("admit_ts", "P1W"), "encounter_type"],
        "metrics": ["count"],
        "filters": [{
            "col": "admit_ts", "op": "TEMPORAL_RANGE",
            "val": "1900-01-01T00:00:00 : 2100-01-01T00:00:00",
        }],
        "row_limit": 100000,
        "extras": {"having": "", "where": ""},
        "series_columns": ["encounter_type"],
    }, {"viz_type": "echarts_timeseries_line"}, check=total("count")))

    # Timeseries with a series limit: Superset joins the main query with a
    # top-N subquery of the groups.
    step("chart_claims_series_limit", chart("claims", {
        "columns": [temporal("service_date", "P1Y"), "site_id"],
        "metrics": [sum_billed],
        "filters": [{"col": "service_date", "op": "TEMPORAL_RANGE", "val": "No filter"}],
        "row_limit": 100000,
        "series_limit": 3,
        "series_limit_metric": sum_billed,
        "order_desc": True,
        "series_columns": ["site_id"],
        "extras": {"having": "", "where": ""},
    }, {"viz_type": "echarts_timeseries_line"}, check=lambda data: {
        "series": sorted({row.get("site_id") for row in data}),
    }))

    # Big number with a filter on a dimension and a WHERE clause in SQL.
    step("chart_claims_filtered", chart("claims", {
        "columns": [],
        "metrics": [count_star],
        "filters": [{"col": "status", "op": "IN", "val": ["paid", "denied"]}],
        "row_limit": 10,
        "extras": {"having": "", "where": "billed_amount > 0"},
    }, {"viz_type": "big_number_total"}, check=total("COUNT(*)")))

    # A time range on a DATE column (TO_DATE literals) covering every row.
    step("chart_claims_time_range", chart("claims", {
        "columns": ["status"],
        "metrics": [count_star],
        "filters": [{
            "col": "service_date", "op": "TEMPORAL_RANGE",
            "val": "1900-01-01T00:00:00 : 2100-01-01T00:00:00",
        }],
        "row_limit": 100,
        "extras": {"having": "", "where": ""},
    }, {"viz_type": "pie"}, check=total("COUNT(*)")))

    # Explore's "Samples" pane and a dashboard's "Drill to detail": rows of
    # the dataset, then a COUNT(*) over the same query for the pager.
    def samples(drill):
        def f():
            if "claims" not in ds:
                raise RuntimeError("no dataset for claims")
            q = urllib.parse.urlencode({
                "datasource_type": "table", "datasource_id": ds["claims"]["id"],
                "force": "true", "page": 1, "per_page": 50,
            })
            body = {"filters": [{"col": "payer", "op": "==", "val": "Medicare"}]} if drill else {}
            r = call(client, "POST", f"/datasource/samples?{q}", body)["result"]
            return {
                "rows": len(r.get("data") or []),
                "total_count": r.get("total_count"),
                "colnames": r.get("colnames"),
            }
        return f

    step("samples_claims", samples(False))
    step("drill_to_detail_claims", samples(True))

    # "Sync columns from source" in the dataset editor.
    def refresh():
        if "claims" not in ds:
            raise RuntimeError("no dataset for claims")
        return call(client, "PUT", f"/api/v1/dataset/{ds['claims']['id']}/refresh").get("message")

    step("dataset_refresh_claims", refresh)

    # SQL Lab's "Save dataset" / "Explore": a virtual dataset over SQL, and a
    # chart on it (Superset wraps the SQL as a subquery).
    virtual_sql = (
        "SELECT c.payer, c.service_date, c.billed_amount, p.sex\n"
        "FROM claims.claims c JOIN clinical.patients p ON p.patient_id = c.patient_id"
    )

    def virtual_dataset():
        r = call(client, "POST", "/api/v1/dataset/", {
            "database": pk, "schema": "claims", "table_name": "claims_by_sex",
            "sql": virtual_sql,
        })
        ds_id = r["id"]
        got = call(client, "GET", f"/api/v1/dataset/{ds_id}")["result"]
        ds["claims_by_sex"] = {"id": ds_id, "columns": {c["column_name"]: c for c in got["columns"]}}
        return {
            "id": ds_id,
            "columns": [
                f"{c['column_name']}:{c['type']}{':dttm' if c.get('is_dttm') else ''}"
                for c in got["columns"]
            ],
        }

    step("dataset_virtual", virtual_dataset)
    step("chart_virtual_sex_year", chart("claims_by_sex", {
        "columns": [temporal("service_date", "P1Y"), "sex"],
        "metrics": [count_star, sum_billed],
        "filters": [],
        "row_limit": 10000,
        "extras": {"having": "", "where": ""},
    }, {"viz_type": "echarts_timeseries_bar"}, check=lambda data: {
        "total_COUNT(*)": sum(row.get("COUNT(*)") or 0 for row in data),
    }))

    # SQL Lab's autocomplete asks the engine spec for function names.
    step("function_names", lambda: len(call(
        client, "GET", f"/api/v1/database/{pk}/function_names/")["function_names"]))

    # A dashboard's native filter: the distinct values of a column.
    def filter_values():
        if "claims" not in ds:
            raise RuntimeError("no dataset for claims")
        r = call(client, "GET", f"/api/v1/datasource/table/{ds['claims']['id']}/column/payer/values/")
        return sorted(str(v) for v in r["result"])

    step("filter_values", filter_values)


# chart step -> (observed key, expected key): the same number through
# Superset's chart path and through a plain query.
CHECKS = {
    "chart_claims_month_payer": [
        ("total_COUNT(*)", "claims"),
        ("total_SUM(billed_amount)", "claims_billed"),
        ("groups", "claims_month_payer_groups"),
    ],
    "chart_patients_site_year": [("total_count", "patients")],
    "chart_encounters_week_type": [("total_count", "encounters")],
    "chart_claims_time_range": [("total_COUNT(*)", "claims")],
    "chart_claims_filtered": [("total_COUNT(*)", "claims_paid_or_denied_positive")],
    "chart_virtual_sex_year": [("total_COUNT(*)", "claims_joined_patients")],
    "samples_claims": [("total_count", "claims")],
    "drill_to_detail_claims": [("total_count", "claims_medicare")],
}


def consistency(expected):
    """Each chart number next to the plain query's; equal is None where
    either side has no number (the step failed)."""
    res = {}
    for name, pairs in CHECKS.items():
        observed = (out.get(name) or {}).get("ok") or {}
        for key, exp_key in pairs:
            got, want = observed.get(key), expected.get(exp_key)
            numeric = all(isinstance(v, (int, float)) for v in (got, want))
            res[f"{name}.{key}"] = {
                "superset": got,
                "plain": want,
                "equal": (abs(float(got) - float(want)) < 0.005) if numeric else None,
            }
    return res


def _round(x):
    try:
        return round(float(x), 2)
    except (TypeError, ValueError):
        return x


def expected_numbers(host, port, user, token, purpose):
    """The answers computed without Superset, with a plain psycopg2
    connection; None where the role may not read the table."""
    conn = _plain_connect(
        host=host, port=port, user=user, password=token, dbname="lakeward",
        sslmode="require", options=f"-c lakeward.purpose={purpose}",
        application_name="lakeward-superset-check-expected", connect_timeout=10,
    )
    conn.autocommit = True
    res = {}

    def one(key, sql):
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                rows = cur.fetchall()
            res[key] = rows[0][0] if len(rows) == 1 and len(rows[0]) == 1 else [list(r) for r in rows]
            if hasattr(res[key], "as_integer_ratio") and not isinstance(res[key], int):
                res[key] = _round(res[key])
        except psycopg2.Error as e:
            res[key] = {"error": {"sqlstate": e.pgcode, "message": (e.pgerror or "").strip()}}

    one("patients", "SELECT count(*) FROM clinical.patients")
    one("patients_sites", "SELECT count(DISTINCT site_id) FROM clinical.patients")
    one("encounters", "SELECT count(*) FROM clinical.encounters")
    one("claims", "SELECT count(*) FROM claims.claims")
    one("claims_billed", "SELECT sum(billed_amount) FROM claims.claims")
    one("claims_payers", "SELECT count(DISTINCT payer) FROM claims.claims")
    one("claims_paid_or_denied_positive",
        "SELECT count(*) FROM claims.claims WHERE status IN ('paid', 'denied') AND billed_amount > 0")
    one("claims_medicare", "SELECT count(*) FROM claims.claims WHERE payer = 'Medicare'")
    one("claims_joined_patients",
        "SELECT count(*) FROM claims.claims c JOIN clinical.patients p ON p.patient_id = c.patient_id")
    one("claims_month_payer_groups",
        "SELECT count(*) FROM (SELECT date_trunc('month', service_date), payer "
        "FROM claims.claims GROUP BY 1, 2) g")
    conn.close()
    for k, v in list(res.items()):
        if not isinstance(v, (int, float, list, dict, type(None))):
            res[k] = _round(v)
    return res


if __name__ == "__main__":
    main()
