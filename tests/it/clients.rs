//! Real client programs (pgJDBC, psycopg, node-postgres, psql) against lakeward.
//!
//! Each client program under `tests/clients/` connects over TLS with the
//! connection given in `LAKEWARD_*` environment variables, runs its checks
//! and prints one JSON object: per step `{"ok": …}` or `{"error": {"sqlstate",
//! "message"}}`. The tests here run it once per demo role (in parallel) and
//! assert on what it observed, presence AND absence: a role's catalog lists
//! exactly the tables it may query. Every failed expectation of every role is
//! collected, so one run names all the gaps at once.
//!
//! Runtimes (installed by `.ci/run`): psql (postgresql-client), a JDK and
//! pgJDBC (`libpostgresql-jdbc-java`, /usr/share/java/postgresql.jar),
//! psycopg 3 (`pip install psycopg[binary]`), node with
//! `npm ci --prefix tests/clients/node`. A missing runtime fails the test
//! with what to install; nothing is skipped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::support::psql::{PsqlConn, psql_command};
use crate::support::{
    ANALYST, AUDITOR, CLINICIAN_S01, RESEARCHER, Role, consented_patients, data_dir, raw_context,
    raw_patients, runtime, server, temp_dir, visible_patients,
};

/// How long one client program may run before it is killed.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);

/// What to do when `java` or `javac` is missing.
const JDK_INSTALL: &str =
    "install a JDK 17: apt-get install default-jdk-headless (.ci/run installs it)";

/// pgJDBC as Debian installs it (`libpostgresql-jdbc-java`).
const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

const ROLES: [Role; 4] = [ANALYST, CLINICIAN_S01, RESEARCHER, AUDITOR];

/// The clinical and claims tables: what analyst, clinician and researcher query.
const CLINICAL_TABLES: [&str; 4] = [
    "clinical.patients",
    "clinical.encounters",
    "clinical.observations",
    "claims.claims",
];

/// What the auditor queries: the log, its views, the patient accounting
/// (SPEC §9) and the shadow policy's differences (SPEC §10).
const AUDIT_RELATIONS: [&str; 9] = [
    "audit.access_log",
    "audit.break_glass_access",
    "audit.denied_attempts",
    "audit.access_by_purpose",
    "audit.daily_activity",
    "audit.shadow_differences",
    "audit.statements",
    "audit.patient_access",
    "audit.unusual_access",
];

const AUDIT_VIEWS: [&str; 8] = [
    "break_glass_access",
    "denied_attempts",
    "access_by_purpose",
    "daily_activity",
    "shadow_differences",
    "statements",
    "patient_access",
    "unusual_access",
];

/// The columns of `clinical.patients` (SPEC §2): name, psql / information_schema
/// type, pgJDBC `TYPE_NAME` (pg_type.typname).
const PATIENT_COLUMNS: [(&str, &str, &str); 12] = [
    ("patient_id", "bigint", "int8"),
    ("mrn", "text", "text"),
    ("first_name", "text", "text"),
    ("last_name", "text", "text"),
    ("ssn", "text", "text"),
    ("birth_date", "date", "date"),
    ("sex", "text", "text"),
    ("zip", "text", "text"),
    ("phone", "text", "text"),
    ("email", "text", "text"),
    ("site_id", "text", "text"),
    ("deceased", "boolean", "bool"),
];

impl Role {
    fn auditor(&self) -> bool {
        self.name == "auditor"
    }

    /// Every relation the role may query (`schema.name`).
    fn queryable(&self) -> BTreeSet<&'static str> {
        if self.auditor() {
            AUDIT_RELATIONS.into_iter().collect()
        } else {
            CLINICAL_TABLES.into_iter().collect()
        }
    }

    /// Every lakeward relation the role may not query.
    fn hidden(&self) -> BTreeSet<&'static str> {
        let mut all: BTreeSet<&str> = CLINICAL_TABLES.into_iter().collect();
        all.extend(AUDIT_RELATIONS);
        all.insert("governance.consents");
        all.difference(&self.queryable()).copied().collect()
    }

    fn visible_schemas(&self) -> &'static [&'static str] {
        if self.auditor() {
            &["audit"]
        } else {
            &["clinical", "claims"]
        }
    }

    fn hidden_schemas(&self) -> &'static [&'static str] {
        if self.auditor() {
            &["clinical", "claims", "governance"]
        } else {
            &["governance", "audit"]
        }
    }

    /// Rows of `clinical.patients` this role sees (oracle computed from the
    /// raw Delta tables, not through lakeward).
    fn expected_patients(&self) -> Option<u64> {
        match self.name {
            "analyst" => Some(visible_patients(self.purpose)),
            "researcher" => Some(visible_patients(self.purpose)),
            "clinician" => Some(clinician_patients()),
            _ => None,
        }
    }
}

/// The clinician's patients: site S01 and not opted out of treatment.
fn clinician_patients() -> u64 {
    static N: OnceLock<u64> = OnceLock::new();
    *N.get_or_init(|| {
        let consented = consented_patients("treatment");
        let raw = std::thread::scope(|s| {
            s.spawn(|| {
                runtime().block_on(async {
                    let ctx = raw_context(data_dir()).await;
                    raw_patients(&ctx).await
                })
            })
            .join()
            .expect("raw patients")
        });
        raw.iter()
            .filter(|p| p.site == "S01" && consented.contains(&p.id))
            .count() as u64
    })
}

// ---------------------------------------------------------------------------
// Collecting failures

/// The failed expectations of one client program run for one role.
struct Report {
    label: String,
    failures: Vec<String>,
}

impl Report {
    fn new(client: &str, role: &Role) -> Self {
        Report {
            label: format!("{client} as {} ({})", role.name, role.purpose),
            failures: Vec::new(),
        }
    }

    fn fail(&mut self, msg: impl Into<String>) {
        self.failures.push(msg.into());
    }

    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(msg());
        }
    }

    /// The `ok` value of the top-level step `name`, or a failure naming the
    /// server's error.
    fn ok<'a>(&mut self, doc: &'a Value, name: &str) -> Option<&'a Value> {
        self.ok_in(doc, name, name)
    }

    /// The `ok` value of `parent[key]`, or a failure labelled `label`.
    fn ok_in<'a>(&mut self, parent: &'a Value, key: &str, label: &str) -> Option<&'a Value> {
        match parent.get(key) {
            None => {
                self.fail(format!("{label}: missing from the client's output"));
                None
            }
            Some(v) => {
                if let Some(ok) = v.get("ok") {
                    Some(ok)
                } else if let Some(e) = v.get("error") {
                    self.fail(format!("{label}: {}", describe_error(e)));
                    None
                } else {
                    self.fail(format!("{label}: neither ok nor error: {v}"));
                    None
                }
            }
        }
    }

    /// Step `key` of `parent` must be refused with `sqlstate`.
    fn refused(&mut self, parent: &Value, key: &str, sqlstate: &str, label: &str) {
        match parent.get(key) {
            Some(v) if v.get("error").is_some() => {
                let e = &v["error"];
                self.check(e["sqlstate"] == sqlstate, || {
                    format!(
                        "{label}: expected SQLSTATE {sqlstate}, got {}",
                        describe_error(e)
                    )
                });
            }
            Some(v) => self.fail(format!(
                "{label}: expected SQLSTATE {sqlstate}, but it succeeded: {}",
                v.get("ok").unwrap_or(v)
            )),
            None => self.fail(format!("{label}: missing from the client's output")),
        }
    }

    /// A listing (`schema.name` strings) holds every queryable relation and
    /// no hidden one.
    fn listing(&mut self, what: &str, role: &Role, names: &BTreeSet<String>) {
        let missing: Vec<&str> = role
            .queryable()
            .into_iter()
            .filter(|t| !names.contains(*t))
            .collect();
        let leaked: Vec<&str> = role
            .hidden()
            .into_iter()
            .filter(|t| names.contains(*t))
            .collect();
        self.check(missing.is_empty(), || {
            format!("{what}: queryable relations not listed: {missing:?} (listed: {names:?})")
        });
        self.check(leaked.is_empty(), || {
            format!("{what}: lists relations the role may not query: {leaked:?}")
        });
    }

    fn schema_listing(&mut self, what: &str, role: &Role, names: &BTreeSet<String>) {
        for s in role.visible_schemas() {
            self.check(names.contains(*s), || {
                format!("{what}: schema {s} not listed (listed: {names:?})")
            });
        }
        for s in role.hidden_schemas() {
            self.check(!names.contains(*s), || {
                format!("{what}: lists schema {s}, which the role may not query")
            });
        }
    }

    /// The class each typed column arrived as (`class` of every entry of
    /// the steps `text_step` and `binary_step`), and the same value in both
    /// result formats.
    fn type_classes(
        &mut self,
        doc: &Value,
        text_step: &str,
        binary_step: &str,
        client: &str,
        want: &[(&str, &str)],
    ) {
        let text = self.ok(doc, text_step).cloned();
        let binary = self.ok(doc, binary_step).cloned();
        for (mode, types) in [("text", &text), ("binary", &binary)] {
            let Some(types) = types else { continue };
            for (label, class) in want {
                let what = format!("{client} {label} ({mode} results)");
                match types.get(*label) {
                    None => self.fail(format!("{what}: missing")),
                    Some(t) if t.get("error").is_some() => {
                        self.fail(format!("{what}: {}", describe_error(&t["error"])))
                    }
                    Some(t) => self.check(t["class"] == *class, || {
                        format!("{what}: expected {class}, got {t}")
                    }),
                }
            }
        }
        if let (Some(t), Some(b)) = (&text, &binary) {
            for (label, _) in want {
                self.check(t[label]["value"] == b[label]["value"], || {
                    format!(
                        "{client} {label}: text and binary results disagree: {} vs {}",
                        t[label], b[label]
                    )
                });
            }
        }
    }

    /// `[{"name", <type_key>}, …]` as (name, type) pairs.
    fn columns(v: &Value, type_key: &str) -> Vec<(String, String)> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or("").to_owned(),
                            c[type_key].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The columns of `clinical.patients` as a catalog lists them: all 12
    /// for the clinical roles (masked ones too: they are queryable, as
    /// NULL or masked values), none for the auditor; with `typname`, types
    /// as pg_type names (int8), else as psql and information_schema name
    /// them (bigint).
    fn patient_columns(
        &mut self,
        what: &str,
        role: &Role,
        got: Vec<(String, String)>,
        typname: bool,
    ) {
        let want: Vec<(String, String)> = if role.auditor() {
            vec![]
        } else {
            PATIENT_COLUMNS
                .iter()
                .map(|(n, sql, pg)| (n.to_string(), if typname { pg } else { sql }.to_string()))
                .collect()
        };
        self.check(got == want, || {
            format!("{what}: expected {want:?}, got {got:?}")
        });
    }

    /// The per-table `count(*)` answers: a number for every queryable table,
    /// 42501 for every other one, the oracle's count for clinical.patients.
    fn counts(&mut self, doc: &Value, role: &Role) {
        let Some(counts) = doc.get("counts") else {
            self.fail("counts: missing from the client's output");
            return;
        };
        for t in CLINICAL_TABLES
            .into_iter()
            .chain(["governance.consents", "audit.access_log"])
        {
            let label = format!("SELECT count(*) FROM {t}");
            if role.queryable().contains(t) {
                if let Some(n) = self.ok_in(counts, t, &label) {
                    let n = as_u64(n);
                    self.check(n.is_some_and(|n| n > 0), || {
                        format!("{label}: expected rows, got {n:?}")
                    });
                    if t == "clinical.patients"
                        && let (Some(n), Some(want)) = (n, role.expected_patients())
                    {
                        self.check(n == want, || {
                            format!("{label}: {n} rows, the policy oracle says {want}")
                        });
                    }
                }
            } else {
                self.refused(counts, t, "42501", &label);
            }
        }
    }
}

fn describe_error(e: &Value) -> String {
    format!(
        "server error SQLSTATE {}: {}",
        e["sqlstate"].as_str().unwrap_or("?"),
        e["message"].as_str().unwrap_or("?")
    )
}

/// A JSON number or a numeric string (node-pg returns int8 as a string).
fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Panic with every failure of every report.
fn finish(reports: Vec<Report>) {
    let failed: Vec<String> = reports
        .into_iter()
        .filter(|r| !r.failures.is_empty())
        .map(|r| format!("{}:\n  - {}", r.label, r.failures.join("\n  - ")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} role(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Run `f` for every demo role in parallel.
fn per_role(f: impl Fn(&Role) -> Report + Sync) -> Vec<Report> {
    // Shared setup first, not raced by four threads.
    server();
    std::thread::scope(|s| {
        let handles: Vec<_> = ROLES.iter().map(|r| s.spawn(|| f(r))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("role thread panicked"))
            .collect()
    })
}

// ---------------------------------------------------------------------------
// Running programs

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The output of a finished program.
struct Ran {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run `cmd` with a time limit, collecting stdout and stderr. `install`
/// says what to install when the program itself is missing.
fn run(mut cmd: Command, install: &str) -> Ran {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let ran = crate::support::process::run_until(&mut cmd, PROGRAM_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {install}"));
    match ran.status {
        Some(status) => Ran {
            status,
            stdout: ran.stdout,
            stderr: ran.stderr,
        },
        // A hung client (e.g. waiting for a reply that never comes) was
        // killed: a failed status that says so.
        None => Ran {
            status: std::os::unix::process::ExitStatusExt::from_raw(9),
            stdout: ran.stdout,
            stderr: format!(
                "{program} killed after {PROGRAM_TIMEOUT:?} (hung)\n{}",
                ran.stderr
            ),
        },
    }
}

/// Run a client program for `role` and parse its one JSON object; a failed
/// program (unexpected exception) fails the report.
fn run_client(cmd: Command, install: &str, report: &mut Report) -> Option<Value> {
    let ran = run(cmd, install);
    if !ran.status.success() {
        report.fail(format!(
            "the client program failed ({}): unexpected exception:\n{}\n{}",
            ran.status,
            ran.stderr.trim(),
            ran.stdout.trim()
        ));
        return None;
    }
    match serde_json::from_str::<Value>(ran.stdout.trim()) {
        Ok(v) if v.is_object() => Some(v),
        _ => {
            report.fail(format!(
                "the client program did not print one JSON object: {}\nstderr: {}",
                ran.stdout.trim(),
                ran.stderr.trim()
            ));
            None
        }
    }
}

// ---------------------------------------------------------------------------
// psql

fn psql(role: &Role, aligned: bool, args: &[&str]) -> Ran {
    let token = role.token();
    let conn = PsqlConn {
        application_name: Some("lakeward-psql-suite"),
        ..PsqlConn::new(server().port(), role.name, &token, role.purpose)
    };
    let mut cmd = psql_command(&conn);
    if !aligned {
        cmd.args(["-A", "-t"]);
    }
    cmd.args(args);
    run(
        cmd,
        "install psql: apt-get install postgresql-client (.ci/run installs it)",
    )
}

/// Run one psql meta-command; its unaligned tuples-only rows split on `|`,
/// or a failure naming what psql printed.
fn psql_rows(role: &Role, command: &str, report: &mut Report) -> Option<Vec<Vec<String>>> {
    let ran = psql(role, false, &["-c", command]);
    if !ran.status.success() || ran.stderr.contains("ERROR") {
        report.fail(format!(
            "psql {command}: exit {}: {}{}",
            ran.status,
            ran.stdout.trim(),
            ran.stderr.trim()
        ));
        return None;
    }
    Some(
        ran.stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_owned).collect())
            .collect(),
    )
}

fn psql_role(role: &Role) -> Report {
    let mut r = Report::new("psql", role);

    // \dn: the schemas.
    if let Some(rows) = psql_rows(role, "\\dn", &mut r) {
        let names: BTreeSet<String> = rows.iter().map(|row| row[0].clone()).collect();
        r.schema_listing("\\dn", role, &names);
    }

    // \dtv *.*: every table and view in every schema.
    if let Some(rows) = psql_rows(role, "\\dtv *.*", &mut r) {
        let names: BTreeSet<String> = rows
            .iter()
            .filter(|row| row.len() >= 2)
            .map(|row| format!("{}.{}", row[0], row[1]))
            .collect();
        r.listing("\\dtv *.*", role, &names);
    }

    // \dt clinical.*: exactly the three clinical tables, or nothing.
    let ran = psql(role, false, &["-c", "\\dt clinical.*"]);
    let listed: Vec<String> = ran
        .stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').take(3).collect::<Vec<_>>().join("|"))
        .collect();
    if role.auditor() {
        r.check(ran.status.success() && listed.is_empty(), || {
            format!(
                "psql \\dt clinical.*: the auditor must see no clinical table, got exit {}: {}{}",
                ran.status, ran.stdout, ran.stderr
            )
        });
    } else {
        let want = [
            "clinical|encounters|table",
            "clinical|observations|table",
            "clinical|patients|table",
        ];
        r.check(ran.status.success() && listed == want, || {
            format!(
                "psql \\dt clinical.*: expected {want:?}, got exit {}: {}{}",
                ran.status, ran.stdout, ran.stderr
            )
        });
    }

    // \dv audit.*: the auditor's five views.
    if role.auditor()
        && let Some(rows) = psql_rows(role, "\\dv audit.*", &mut r)
    {
        let names: BTreeSet<String> = rows
            .iter()
            .filter(|row| row.len() >= 3 && row[2] == "view")
            .map(|row| row[1].clone())
            .collect();
        let want: BTreeSet<String> = AUDIT_VIEWS.iter().map(|s| s.to_string()).collect();
        r.check(names == want, || {
            format!("psql \\dv audit.*: expected the views {want:?}, got {rows:?}")
        });
    }

    // \d clinical.patients: columns and types, or no such relation.
    if role.auditor() {
        let ran = psql(role, false, &["-c", "\\d clinical.patients"]);
        let all = format!("{}{}", ran.stdout, ran.stderr);
        r.check(
            !all.contains("patient_id") && all.contains("Did not find any relation"),
            || format!("psql \\d clinical.patients: the auditor must not see the table: {all}"),
        );
        if let Some(rows) = psql_rows(role, "\\d audit.access_log", &mut r) {
            let cols: BTreeSet<String> = rows.iter().map(|row| row[0].clone()).collect();
            for c in ["event_id", "ts", "user", "decision", "hash"] {
                r.check(cols.contains(c), || {
                    format!("psql \\d audit.access_log: column {c} not listed: {rows:?}")
                });
            }
        }
    } else if let Some(rows) = psql_rows(role, "\\d clinical.patients", &mut r) {
        let got: Vec<(String, String)> = rows
            .iter()
            .filter(|row| row.len() >= 2)
            .map(|row| (row[0].clone(), row[1].clone()))
            .collect();
        let want: Vec<(String, String)> = PATIENT_COLUMNS
            .iter()
            .map(|(n, t, _)| (n.to_string(), t.to_string()))
            .collect();
        r.check(got == want, || {
            format!("psql \\d clinical.patients: expected {want:?}, got {rows:?}")
        });
    }

    // \l: the one database.
    if let Some(rows) = psql_rows(role, "\\l", &mut r) {
        r.check(rows.iter().any(|row| row[0] == "lakeward"), || {
            format!("psql \\l: database lakeward not listed: {rows:?}")
        });
    }

    // \conninfo: TLS.
    let ran = psql(role, false, &["-c", "\\conninfo"]);
    r.check(
        ran.status.success() && ran.stdout.contains("SSL connection"),
        || {
            format!(
                "psql \\conninfo: no SSL connection: {}{}",
                ran.stdout, ran.stderr
            )
        },
    );

    // \x on: expanded output of a query.
    let (query, column) = if role.auditor() {
        (
            "SELECT \"user\", decision FROM audit.access_log LIMIT 1",
            "decision",
        )
    } else {
        (
            "SELECT patient_id, site_id FROM clinical.patients ORDER BY patient_id LIMIT 2",
            "site_id",
        )
    };
    let ran = psql(role, true, &["-c", "\\x on", "-c", query]);
    r.check(
        ran.status.success()
            && ran.stdout.contains("Expanded display is on.")
            && ran.stdout.contains("-[ RECORD 1 ]")
            && ran.stdout.lines().any(|l| l.starts_with(column)),
        || {
            format!(
                "psql \\x on + {query}: no expanded output: exit {}: {}{}",
                ran.status, ran.stdout, ran.stderr
            )
        },
    );
    if !role.auditor() {
        r.check(ran.stdout.contains("-[ RECORD 2 ]"), || {
            format!(
                "psql \\x on + {query}: expected two records: {}",
                ran.stdout
            )
        });
    }
    if role.name == "clinician" {
        r.check(
            ran.stdout
                .lines()
                .filter(|l| l.starts_with("site_id"))
                .all(|l| l.trim_end().ends_with("S01")),
            || format!("psql as clinician: a row of another site: {}", ran.stdout),
        );
    }

    // has_table_privilege follows the policy (one question per statement).
    for (table, want) in [
        ("clinical.patients", !role.auditor()),
        ("audit.access_log", role.auditor()),
    ] {
        let q = format!("SELECT has_table_privilege('{table}', 'SELECT')");
        let ran = psql(role, false, &["-c", &q]);
        let want = if want { "t" } else { "f" };
        r.check(ran.status.success() && ran.stdout.trim() == want, || {
            format!(
                "psql {q}: expected {want}, got exit {}: {}{}",
                ran.status,
                ran.stdout.trim(),
                ran.stderr.trim()
            )
        });
    }
    r
}

#[test]
fn psql_lists_only_what_each_role_may_query() {
    finish(per_role(psql_role));
}

// ---------------------------------------------------------------------------
// pgJDBC

/// The suite compiled once per test run: the class folder, or why not.
fn jdbc_classes() -> &'static Result<PathBuf, String> {
    static CLASSES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CLASSES.get_or_init(|| {
        if !Path::new(PGJDBC_JAR).exists() {
            return Err(format!(
                "{PGJDBC_JAR} is missing: apt-get install libpostgresql-jdbc-java (.ci/run installs it)"
            ));
        }
        let out = temp_dir("lakeward-it-jdbc");
        let mut cmd = Command::new("javac");
        cmd.args(["-encoding", "UTF-8", "-cp", PGJDBC_JAR, "-d"])
            .arg(&out)
            .arg(repo().join("tests/clients/jdbc/JdbcSuite.java"));
        let ran = run(cmd, JDK_INSTALL);
        if !ran.status.success() {
            return Err(format!(
                "javac JdbcSuite.java failed: {}{}",
                ran.stdout, ran.stderr
            ));
        }
        Ok(out)
    })
}

fn jdbc_role(role: &Role) -> Report {
    let mut r = Report::new("pgJDBC", role);
    let classes = match jdbc_classes() {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut cmd = Command::new("java");
    cmd.arg("-Xshare:auto")
        .arg("-XX:TieredStopAtLevel=1")
        .arg("-cp")
        .arg(format!("{}:{PGJDBC_JAR}", classes.display()))
        .arg("JdbcSuite")
        .envs(role.env("localhost"));
    let Some(doc) = run_client(cmd, JDK_INSTALL, &mut r) else {
        return r;
    };

    if let Some(v) = r.ok(&doc, "schemas") {
        r.schema_listing("DatabaseMetaData.getSchemas", role, &strings(v));
    }

    // getTables(TABLE, VIEW): exactly the role's relations, with their types.
    if let Some(v) = r.ok(&doc, "tables") {
        let rows = v.as_array().cloned().unwrap_or_default();
        let names: BTreeSet<String> = rows
            .iter()
            .map(|t| {
                format!(
                    "{}.{}",
                    t["schema"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        let want: BTreeSet<String> = role.queryable().iter().map(|s| s.to_string()).collect();
        r.check(names == want, || {
            format!("getTables(null, null, \"%\", {{TABLE, VIEW}}): expected exactly {want:?}, got {names:?}")
        });
        for t in &rows {
            let name = format!(
                "{}.{}",
                t["schema"].as_str().unwrap_or(""),
                t["name"].as_str().unwrap_or("")
            );
            let want_type = if AUDIT_VIEWS.iter().any(|v| name == format!("audit.{v}")) {
                "VIEW"
            } else {
                "TABLE"
            };
            if want.contains(&name) {
                r.check(t["type"] == want_type, || {
                    format!(
                        "getTables: {name} has TABLE_TYPE {}, expected {want_type}",
                        t["type"]
                    )
                });
            }
        }
    }

    if let Some(v) = r.ok(&doc, "patients_columns") {
        let got = Report::columns(v, "type_name");
        r.patient_columns(
            "getColumns(null, \"clinical\", \"patients\", null)",
            role,
            got,
            true,
        );
    }
    if let Some(v) = r.ok(&doc, "access_log_columns") {
        let cols = strings(v);
        if role.auditor() {
            for c in ["event_id", "ts", "user", "decision", "hash"] {
                r.check(cols.contains(c), || {
                    format!("getColumns(audit.access_log): column {c} missing: {cols:?}")
                });
            }
        } else {
            r.check(cols.is_empty(), || {
                format!("getColumns(audit.access_log): the role may not query it, got {cols:?}")
            });
        }
    }

    // No keys declared: an empty answer, not an error.
    if let Some(v) = r.ok(&doc, "primary_keys") {
        r.check(v.as_array().is_some_and(|a| a.is_empty()), || {
            format!("getPrimaryKeys(clinical.patients): expected no keys, got {v}")
        });
    }

    if let Some(v) = r.ok(&doc, "sql_keywords") {
        let words: Vec<&str> = v.as_str().unwrap_or_default().split(',').collect();
        // PostgreSQL-specific keywords, and none of the SQL:2003 ones the
        // driver filters out.
        r.check(
            ["analyze", "ilike", "limit", "returning"]
                .iter()
                .all(|w| words.contains(w))
                && !words.contains(&"select"),
            || format!("getSQLKeywords(): unexpected answer {v}"),
        );
    }

    if let Some(v) = r.ok(&doc, "type_info") {
        let names = strings(v);
        for t in [
            "int8",
            "text",
            "bool",
            "date",
            "timestamp",
            "float8",
            "numeric",
        ] {
            r.check(names.contains(t), || {
                format!(
                    "getTypeInfo: type {t} missing ({} types: {names:?})",
                    names.len()
                )
            });
        }
    }

    has_table_privilege(&mut r, &doc, role);
    r.counts(&doc, role);

    if role.auditor() {
        if let Some(v) = r.ok(&doc, "views") {
            for view in AUDIT_VIEWS {
                r.check(v.get(view).and_then(as_u64).is_some(), || {
                    format!("SELECT count(*) FROM audit.{view}: no count: {v}")
                });
            }
        }
    } else {
        if let Some(v) = r.ok(&doc, "patients_sites") {
            match role.name {
                "clinician" => r.check(
                    v["sites"] == 1 && v["min_site"] == "S01" && v["max_site"] == "S01",
                    || format!("clinician sees other sites than S01: {v}"),
                ),
                "analyst" => r.check(v["sites"] == 12, || {
                    format!("analyst must see all 12 sites: {v}")
                }),
                _ => {}
            }
        }
        // 10 executions, past prepareThreshold=5: the same one row each time,
        // served by a named server-side statement at the end.
        if let Some(v) = r.ok(&doc, "prepared") {
            let answers = strings(&v["answers"]);
            let all: Vec<&Value> = v["answers"]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            r.check(all.len() == 10 && answers.len() == 1, || {
                format!("PreparedStatement x10: answers differ between executions: {all:?}")
            });
            r.check(
                answers.iter().all(|a| a.starts_with("1:")),
                || format!("PreparedStatement WHERE patient_id = ?: expected one row each time: {answers:?}"),
            );
            r.check(v["server_prepared"] == true, || {
                format!("PreparedStatement x10: not server-prepared: {v}")
            });
            if role.name == "clinician" {
                r.check(answers.iter().all(|a| a.contains("|S01|")), || {
                    format!("PreparedStatement as clinician: a row of another site: {answers:?}")
                });
            }
        }
    }

    // Cursor mode: autocommit off + fetch size 1000 = portal paging.
    if let Some(v) = r.ok(&doc, "cursor_read") {
        r.check(v["rows"] == 100_000, || {
            format!("setFetchSize(1000) read of LIMIT 100000: expected 100000 rows, got {v}")
        });
    }

    // getObject classes, text and binary transfer.
    let want: &[(&str, &str)] = if role.auditor() {
        &[
            ("bigint", "java.lang.Long"),
            ("text", "java.lang.String"),
            ("timestamp", "java.sql.Timestamp"),
            ("double", "java.lang.Double"),
        ]
    } else {
        &[
            ("bigint", "java.lang.Long"),
            ("text", "java.lang.String"),
            ("date", "java.sql.Date"),
            ("boolean", "java.lang.Boolean"),
            ("timestamp", "java.sql.Timestamp"),
            ("double", "java.lang.Double"),
            ("decimal", "java.math.BigDecimal"),
        ]
    };
    r.type_classes(&doc, "types_text", "types_binary", "getObject", want);
    r
}

/// `has_table_privilege(t, 'SELECT')` follows the policy: true for the role's
/// own table, false (not an error) for a table it may not query.
fn has_table_privilege(r: &mut Report, doc: &Value, role: &Role) {
    for (step, table, want) in [
        (
            "has_table_privilege_patients",
            "clinical.patients",
            !role.auditor(),
        ),
        (
            "has_table_privilege_access_log",
            "audit.access_log",
            role.auditor(),
        ),
    ] {
        let label = format!("has_table_privilege('{table}', 'SELECT')");
        if let Some(v) = r.ok_in(doc, step, &label) {
            r.check(*v == want, || format!("{label}: expected {want}, got {v}"));
        }
    }
}

#[test]
fn pgjdbc_metadata_types_prepared_statements_and_cursor_mode() {
    if let Err(e) = jdbc_classes() {
        panic!("{e}");
    }
    finish(per_role(jdbc_role));
}

// ---------------------------------------------------------------------------
// psycopg 3

fn python_ready() -> &'static Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY.get_or_init(|| {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", "import psycopg; print(psycopg.__version__)"]);
        let ran = run(cmd, "install Python 3 with pip (python3, python3-pip)");
        if ran.status.success() {
            Ok(())
        } else {
            Err(format!(
                "psycopg 3 is not installed: python3 -m pip install 'psycopg[binary]==3.3.9' (.ci/run installs it): {}",
                ran.stderr.trim()
            ))
        }
    })
}

fn psycopg_role(role: &Role) -> Report {
    let mut r = Report::new("psycopg", role);
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("tests/clients/python/psycopg_suite.py"))
        .envs(role.env("127.0.0.1"));
    let Some(doc) = run_client(
        cmd,
        "install Python 3 with pip (python3, python3-pip)",
        &mut r,
    ) else {
        return r;
    };
    r.check(doc["connection"]["ssl_in_use"] == true, || {
        format!("psycopg: not a TLS connection: {}", doc["connection"])
    });

    if let Some(v) = r.ok(&doc, "schemas") {
        r.schema_listing(
            "SELECT nspname FROM pg_catalog.pg_namespace",
            role,
            &strings(v),
        );
    }
    if let Some(v) = r.ok(&doc, "tables") {
        r.listing("information_schema.tables", role, &strings(v));
    }
    if let Some(v) = r.ok(&doc, "patients_columns") {
        let got = Report::columns(v, "type");
        r.patient_columns(
            "information_schema.columns of clinical.patients",
            role,
            got,
            false,
        );
    }
    has_table_privilege(&mut r, &doc, role);
    r.counts(&doc, role);

    let want: &[(&str, &str)] = if role.auditor() {
        &[
            ("bigint", "int"),
            ("text", "str"),
            ("timestamp", "datetime"),
            ("double", "float"),
        ]
    } else {
        &[
            ("bigint", "int"),
            ("text", "str"),
            ("date", "date"),
            ("boolean", "bool"),
            ("timestamp", "datetime"),
            ("double", "float"),
            ("decimal", "Decimal"),
        ]
    };
    r.type_classes(&doc, "types", "types_binary", "psycopg", want);

    if role.auditor() {
        // The auditor's questions, sent in one pipeline.
        if let Some(v) = r.ok(&doc, "pipeline") {
            for view in AUDIT_VIEWS {
                let q = format!("SELECT count(*) FROM audit.{view}");
                r.check(v.get(&q).and_then(as_u64).is_some(), || {
                    format!("pipeline {q}: no count: {v}")
                });
            }
        }
    } else {
        if let Some(v) = r.ok(&doc, "params") {
            let want = serde_json::json!([[v["id"], v["site"]]]);
            r.check(v["rows"] == want && v["wrong_site_count"] == 0, || {
                format!("%s parameters (int, text): expected {want}, got {v}")
            });
        }
        if let Some(v) = r.ok(&doc, "named_cursor") {
            r.check(
                v["rows"] == 1000 && v["expected_rows"] == 1000 && v["same_as_select"] == true,
                || format!("named cursor (DECLARE/FETCH FORWARD 100/CLOSE): {v}"),
            );
        }
        // COPY out sends the query's rows.
        if let Some(v) = r.ok(&doc, "copy_to_stdout") {
            r.check(
                v["same_as_select"] == true
                    && v["rows"].as_array().is_some_and(|rows| rows.len() == 10),
                || format!("COPY (SELECT …) TO STDOUT: {v}"),
            );
        }
        if let Some(v) = r.ok(&doc, "pipeline") {
            r.check(
                v.as_object().is_some_and(|m| {
                    m.len() == 3 && m.values().all(|n| as_u64(n).is_some_and(|n| n > 0))
                }),
                || format!("pipeline of three counts: {v}"),
            );
        }
    }
    r.refused(
        &doc,
        "copy_from_stdin",
        "42501",
        "COPY clinical.patients FROM STDIN",
    );
    r
}

#[test]
fn psycopg_parameters_types_named_cursor_copy_and_pipeline() {
    server();
    if let Err(e) = python_ready() {
        panic!("{e}");
    }
    finish(per_role(psycopg_role));
}

// ---------------------------------------------------------------------------
// node-postgres

fn node_ready() -> Result<(), String> {
    let modules = repo().join("tests/clients/node/node_modules/pg");
    if !modules.exists() {
        return Err(format!(
            "{} is missing: npm ci --prefix tests/clients/node (.ci/run runs it)",
            modules.display()
        ));
    }
    Ok(())
}

fn node_role(role: &Role) -> Report {
    let mut r = Report::new("node-postgres", role);
    let mut cmd = Command::new("node");
    cmd.arg(repo().join("tests/clients/node/suite.js"))
        .envs(role.env("127.0.0.1"));
    let Some(doc) = run_client(
        cmd,
        "install Node.js and npm: apt-get install nodejs npm (.ci/run installs them)",
        &mut r,
    ) else {
        return r;
    };
    r.check(doc["connection"]["ssl"] == true, || {
        format!("node-postgres: not a TLS connection: {}", doc["connection"])
    });
    if let Some(v) = r.ok(&doc, "tables") {
        r.listing("information_schema.tables", role, &strings(v));
    }
    r.counts(&doc, role);

    if !role.auditor()
        && let Some(v) = r.ok(&doc, "params")
    {
        let want = serde_json::json!([[v["id"], v["site"]]]);
        r.check(v["rows"] == want, || {
            format!("$1/$2 parameters: expected {want}, got {v}")
        });
        r.check(v["id"].is_string(), || {
            format!("int8 must arrive as a string in node-postgres: {}", v["id"])
        });
        r.check(v["count_with_number_param"] == "1", || {
            format!("$1 bound to a JavaScript number: expected one row, got {v}")
        });
    }

    // (label, typeof, constructor) as node-postgres parses each type by default.
    let want: &[(&str, &str, &str)] = if role.auditor() {
        &[
            ("bigint", "string", "String"),
            ("text", "string", "String"),
            ("timestamp", "object", "Date"),
            ("double", "number", "Number"),
        ]
    } else {
        &[
            ("bigint", "string", "String"),
            ("text", "string", "String"),
            ("date", "object", "Date"),
            ("boolean", "boolean", "Boolean"),
            ("timestamp", "object", "Date"),
            ("double", "number", "Number"),
            ("decimal", "string", "String"),
        ]
    };
    if let Some(types) = r.ok(&doc, "types") {
        for (label, js_type, ctor) in want {
            match types.get(*label) {
                None => r.fail(format!("node-postgres {label}: missing")),
                Some(t) if t.get("error").is_some() => r.fail(format!(
                    "node-postgres {label}: {}",
                    describe_error(&t["error"])
                )),
                Some(t) => r.check(t["js_type"] == *js_type && t["ctor"] == *ctor, || {
                    format!("node-postgres {label}: expected {js_type} {ctor}, got {t}")
                }),
            }
        }
    }

    // Errors carry the SQLSTATE in .code; the connection survives them.
    let denied = if role.auditor() {
        "clinical.patients"
    } else {
        "governance.consents"
    };
    r.refused(
        &doc,
        "denied_table",
        "42501",
        &format!("SELECT * FROM {denied}"),
    );
    r.refused(
        &doc,
        "denied_table_extended",
        "42501",
        &format!("SELECT * FROM {denied} WHERE $1::int = 1"),
    );
    r.refused(&doc, "syntax_error", "42601", "SELEKT 1");
    if let Some(v) = r.ok(&doc, "after_errors") {
        r.check(as_u64(v) == Some(1), || {
            format!("SELECT 1 after the errors: {v}")
        });
    }
    r
}

#[test]
fn node_postgres_parameters_types_and_sqlstates() {
    if let Err(e) = node_ready() {
        panic!("{e}");
    }
    finish(per_role(node_role));
}
