//! Captured BI-tool introspection queries replayed as each role.
//!
//! `tests/introspection/*.sql` hold the statements Grafana, Metabase,
//! Superset (SQLAlchemy), DBeaver, pgJDBC and psql send at start-up and
//! while browsing a schema (provenance in `tests/introspection/README.md`).
//! Every statement is run as every demo role, over the simple query protocol
//! and over the extended protocol (`client.query`, for statements without
//! `$n`), and must succeed. Then:
//!
//! - no value in any returned row may name an object the role cannot query
//!   (analyst, clinician, researcher: no `governance`/`consents`, nothing of
//!   schema `audit`, no internal `lakeward_` function; auditor: nothing of
//!   `clinical`, `claims` or `governance`, no column of those tables);
//! - a block's `-- expect: NAME` must appear in its result for the roles
//!   that may query the block's target table, `-- expect-column` asks for a
//!   column of that table, and `-- expect-auditor: NAME` must appear for the
//!   auditor.
//!
//! The files name `clinical.patients`. Every role replays them twice: as
//! written, and retargeted at `audit.access_log` (`clinical` → `audit`,
//! `patients` → `access_log`). A role that may not query the target table
//! is probing: the statements ask about a table it cannot see and must
//! learn nothing. `{{oid}}` / `{{nsp_oid}}` stand for the oid of the target
//! table / of its schema as the role's own `pg_class` reports it; a probe
//! uses the oids that a role which may query the table sees (the analyst
//! for `clinical.patients`, the auditor for `audit.access_log`).
//!
//! One test per file; a failure lists every failing statement with its line
//! and block name, the protocol, the SQLSTATE and message, and the roles.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{connect_role, server};

#[tokio::test(flavor = "multi_thread")]
async fn grafana() {
    replay("grafana.sql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metabase() {
    replay("metabase.sql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlalchemy() {
    replay("sqlalchemy.sql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dbeaver() {
    replay("dbeaver.sql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pgjdbc() {
    replay("pgjdbc.sql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn psql() {
    replay("psql.sql").await;
}

/// The demo roles and the purpose each declares (`connect_role` gives the
/// clinician site S01).
const ROLES: [(&str, &str); 4] = [
    ("analyst", "operations"),
    ("clinician", "treatment"),
    ("researcher", "research"),
    ("auditor", "operations"),
];

/// One statement's time limit: a hang is reported, not waited out.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The files
// ---------------------------------------------------------------------------

/// One block of a capture file.
#[derive(Debug)]
struct Query {
    /// The `-- name:` of the block.
    name: String,
    /// 1-based line of the `-- name:` line.
    line: usize,
    sql: String,
    /// Names that must appear in the result for the roles that may query
    /// the target table (retargeted with the SQL for the auditor).
    expect: Vec<String>,
    /// Names that must appear in the result for the auditor.
    expect_auditor: Vec<String>,
    /// The result must name a column of the target table.
    expect_column: bool,
    /// A known gap (docs/clients.md): where the statement fails it must be
    /// refused cleanly with this SQLSTATE; where it answers, the answer must
    /// reveal nothing the role may not query.
    gap: Option<String>,
}

/// Metadata lines a block may start with (right after `-- name:`); any
/// other line, comments included, belongs to the statement.
const META_KEYS: [&str; 7] = [
    "gap",
    "source",
    "binds",
    "expect",
    "expect-auditor",
    "expect-column",
    "note",
];

fn meta(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.strip_prefix("-- ")?.split_once(':')?;
    META_KEYS.contains(&key).then(|| (key, value.trim()))
}

/// Parse a capture file: text before the first `-- name:` is a header; each
/// block runs to the next `-- name:`; a trailing `;` is dropped.
fn parse(text: &str) -> Vec<Query> {
    let mut out: Vec<Query> = Vec::new();
    let mut in_meta = false;
    for (i, line) in text.lines().enumerate() {
        if let Some(name) = line.strip_prefix("-- name:") {
            out.push(Query {
                name: name.trim().to_owned(),
                line: i + 1,
                sql: String::new(),
                expect: Vec::new(),
                expect_auditor: Vec::new(),
                expect_column: false,
                gap: None,
            });
            in_meta = true;
            continue;
        }
        let Some(q) = out.last_mut() else { continue };
        if in_meta {
            match meta(line) {
                Some(("expect", v)) => q.expect.push(v.to_owned()),
                Some(("expect-auditor", v)) => q.expect_auditor.push(v.to_owned()),
                Some(("expect-column", _)) => q.expect_column = true,
                Some(("gap", v)) => {
                    q.gap = v.split_whitespace().next().map(str::to_owned);
                }
                Some(_) => {}
                None => in_meta = false,
            }
            if in_meta {
                continue;
            }
        }
        q.sql.push_str(line);
        q.sql.push('\n');
    }
    for q in &mut out {
        q.sql = q.sql.trim().trim_end_matches(';').trim_end().to_owned();
    }
    out
}

fn load(file: &str) -> Vec<Query> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/introspection")
        .join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let queries = parse(&text);
    assert!(!queries.is_empty(), "{file}: no `-- name:` block");
    let mut seen = std::collections::BTreeSet::new();
    for q in &queries {
        assert!(
            !q.sql.is_empty(),
            "{file}:{} [{}]: empty statement",
            q.line,
            q.name
        );
        assert!(
            seen.insert(&q.name),
            "{file}:{} duplicate name [{}]",
            q.line,
            q.name
        );
    }
    queries
}

/// A `$1`-style placeholder outside string literals and quoted identifiers.
fn has_placeholder(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &c) in b.iter().enumerate() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == b'\'' || c == b'"' => quote = Some(c),
            None if c == b'$' && b.get(i + 1).is_some_and(u8::is_ascii_digit) => return true,
            None => {}
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Targets and substitution
// ---------------------------------------------------------------------------

/// The table a replay asks about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `clinical.patients`, as written in the files.
    Clinical,
    /// `audit.access_log`: the files retargeted for the auditor.
    Audit,
}

impl Target {
    fn schema(self) -> &'static str {
        match self {
            Target::Clinical => "clinical",
            Target::Audit => "audit",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Target::Clinical => "patients",
            Target::Audit => "access_log",
        }
    }

    /// A column of the target table (for `-- expect-column`).
    fn column(self) -> &'static str {
        match self {
            Target::Clinical => "patient_id",
            Target::Audit => "event_id",
        }
    }

    fn qualified(self) -> String {
        format!("{}.{}", self.schema(), self.table())
    }

    /// Retarget SQL text or an expected name written for clinical.patients.
    fn apply(self, text: &str) -> String {
        match self {
            Target::Clinical => text.to_owned(),
            Target::Audit => replace_word(
                &replace_word(text, "clinical", "audit"),
                "patients",
                "access_log",
            ),
        }
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Replace `from` where it stands as a whole identifier.
fn replace_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find(from) {
        let start = i + pos;
        let end = start + from.len();
        let before_ok = start == 0 || !is_ident(b[start - 1]);
        let after_ok = end == b.len() || !is_ident(b[end]);
        out.push_str(&text[i..start]);
        out.push_str(if before_ok && after_ok { to } else { from });
        i = end;
    }
    out.push_str(&text[i..]);
    out
}

/// The oids `{{oid}}` and `{{nsp_oid}}` stand for.
#[derive(Clone, Debug)]
struct Oids {
    table: String,
    schema: String,
}

impl Oids {
    const UNKNOWN: Oids = Oids {
        table: String::new(),
        schema: String::new(),
    };

    fn substitute(&self, sql: &str) -> String {
        let or_zero = |s: &str| {
            if s.is_empty() {
                "0".to_owned()
            } else {
                s.to_owned()
            }
        };
        sql.replace("{{oid}}", &or_zero(&self.table))
            .replace("{{nsp_oid}}", &or_zero(&self.schema))
    }
}

/// The target's oids as this session's catalog reports them; `None` when
/// the role cannot see the table (or the catalog cannot answer).
async fn own_oids(client: &Client, target: Target) -> Option<Oids> {
    let sql = format!(
        "SELECT c.oid, n.oid FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{}' AND c.relname = '{}'",
        target.schema(),
        target.table()
    );
    let rows = tokio::time::timeout(STATEMENT_TIMEOUT, simple(client, &sql))
        .await
        .ok()?
        .ok()?;
    let row = rows.first()?;
    let number = |v: &Option<String>| {
        v.as_deref()
            .filter(|s| s.parse::<i64>().is_ok())
            .map(str::to_owned)
    };
    Some(Oids {
        table: number(row.first()?)?,
        schema: number(row.get(1)?)?,
    })
}

// ---------------------------------------------------------------------------
// Running statements
// ---------------------------------------------------------------------------

type Rows = Vec<Vec<Option<String>>>;

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => format!("client error: {e}"),
    }
}

/// Simple query protocol: values as the server's text.
async fn simple(client: &Client, sql: &str) -> Result<Rows, String> {
    let messages = client.simple_query(sql).await.map_err(|e| describe(&e))?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect())
}

/// Any value, as the bytes the server sent.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Extended protocol (Parse/Describe/Bind/Execute, binary results): values
/// as their raw bytes read as UTF-8, so names inside text, `name` and array
/// values are still seen.
async fn extended(client: &Client, sql: &str) -> Result<Rows, String> {
    let rows = client.query(sql, &[]).await.map_err(|e| describe(&e))?;
    rows.iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<_, Option<Raw>>(i)
                        .map(|v| v.map(|raw| String::from_utf8_lossy(&raw.0).into_owned()))
                        .map_err(|e| format!("client error decoding column {i}: {e}"))
                })
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------
// What a role may see
// ---------------------------------------------------------------------------

/// Names a role's results must not contain.
struct Forbidden {
    /// Matched as a whole identifier anywhere in a value.
    words: &'static [&'static str],
    /// Matched as a schema or relation name: the whole value, or qualifying
    /// a name (`audit.access_log`, `"audit".x`).
    names: &'static [&'static str],
    /// Matched as the start of an identifier.
    prefixes: &'static [&'static str],
}

/// analyst, clinician, researcher: clinical.* and claims.claims only.
const PHI_ROLES: Forbidden = Forbidden {
    words: &[
        "governance",
        "consents",
        "recorded_at",
        "expires_at",
        "access_log",
        "break_glass_access",
        "denied_attempts",
        "access_by_purpose",
        "daily_activity",
        "patient_access",
        "patients_returned",
        "unusual_access",
        "shadow_differences",
        "shadow_decision",
        "query_fingerprint",
        "prev_hash",
    ],
    names: &["audit", "statements"],
    prefixes: &["lakeward_"],
};

/// auditor: audit.access_log and the audit views only.
const AUDITOR: Forbidden = Forbidden {
    words: &[
        "clinical",
        "patients",
        "encounters",
        "observations",
        "governance",
        "consents",
        "mrn",
        "ssn",
        "first_name",
        "last_name",
        "birth_date",
        "encounter_id",
        "observation_id",
        "loinc_code",
        "attending_npi",
        "primary_dx",
        "claim_id",
        "cpt_code",
        "icd10_code",
        "billed_amount",
        "allowed_amount",
        "denial_reason",
    ],
    names: &["claims"],
    prefixes: &["lakeward_"],
};

/// Whether `role` may query `target`'s table.
fn sees(role: &str, target: Target) -> bool {
    (role == "auditor") == (target == Target::Audit)
}

fn forbidden(role: &str) -> &'static Forbidden {
    if role == "auditor" {
        &AUDITOR
    } else {
        &PHI_ROLES
    }
}

/// The identifiers of a value, lower-cased, with their byte ranges.
fn tokens(value: &str) -> Vec<(String, usize, usize)> {
    let b = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if is_ident(b[i]) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            out.push((value[start..i].to_ascii_lowercase(), start, i));
        } else {
            i += 1;
        }
    }
    out
}

/// The forbidden name a value contains, if any.
fn leak(rules: &Forbidden, value: &str) -> Option<&'static str> {
    let whole = value.trim().trim_matches('"').to_ascii_lowercase();
    for (tok, _, end) in tokens(value) {
        if let Some(w) = rules.words.iter().find(|w| **w == tok) {
            return Some(w);
        }
        if let Some(p) = rules.prefixes.iter().find(|p| tok.starts_with(**p)) {
            return Some(p);
        }
        if let Some(n) = rules.names.iter().find(|n| **n == tok) {
            let rest = value[end..].trim_start_matches('"');
            if whole == *n || rest.starts_with('.') {
                return Some(n);
            }
        }
    }
    None
}

/// Whether some value of `rows` holds `name` as an identifier.
fn mentions(rows: &Rows, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    rows.iter()
        .flatten()
        .flatten()
        .any(|v| tokens(v).iter().any(|(t, _, _)| *t == name))
}

/// A value shortened for a failure message.
fn clip(v: &str) -> String {
    let v: String = v
        .chars()
        .map(|c| if c.is_control() { '·' } else { c })
        .collect();
    if v.chars().count() > 80 {
        format!("{}…", v.chars().take(80).collect::<String>())
    } else {
        v
    }
}

// ---------------------------------------------------------------------------
// The replay
// ---------------------------------------------------------------------------

/// Failures grouped by (query index, what went wrong): the protocols and
/// the runs (role and target) that saw it.
type Failures = BTreeMap<(usize, String), (std::collections::BTreeSet<&'static str>, Vec<String>)>;

fn record(failures: &mut Failures, idx: usize, what: String, protocol: &'static str, who: String) {
    let (protocols, whos) = failures.entry((idx, what)).or_default();
    protocols.insert(protocol);
    if !whos.contains(&who) {
        whos.push(who);
    }
}

struct Run<'a> {
    role: &'a str,
    target: Target,
    oids: Oids,
}

impl Run<'_> {
    fn who(&self) -> String {
        match (sees(self.role, self.target), self.target) {
            (true, Target::Clinical) => self.role.to_owned(),
            (true, Target::Audit) => format!("{} (retargeted at audit.access_log)", self.role),
            (false, t) => format!("{} (probe of {})", self.role, t.qualified()),
        }
    }

    /// Whether this run's role may query its target table.
    fn sees_target(&self) -> bool {
        sees(self.role, self.target)
    }

    /// Only the leak check of [`Run::check`].
    fn check_no_leak(&self, rows: &Rows) -> Vec<String> {
        let q = Query {
            name: String::new(),
            line: 0,
            sql: String::new(),
            expect: Vec::new(),
            expect_auditor: Vec::new(),
            expect_column: false,
            gap: None,
        };
        self.check(&q, rows)
    }

    fn check(&self, q: &Query, rows: &Rows) -> Vec<String> {
        let mut problems = Vec::new();
        let rules = forbidden(self.role);
        'rows: for (r, row) in rows.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                if let Some(v) = v
                    && let Some(name) = leak(rules, v)
                {
                    problems.push(format!("names `{name}` (row {r}, column {c}: {})", clip(v)));
                    break 'rows;
                }
            }
        }
        if self.sees_target() {
            for name in &q.expect {
                let name = self.target.apply(name);
                if !mentions(rows, &name) {
                    problems.push(format!(
                        "`{name}` missing from the result ({} rows)",
                        rows.len()
                    ));
                }
            }
        }
        if self.sees_target() && q.expect_column && !mentions(rows, self.target.column()) {
            problems.push(format!(
                "column `{}` of {} missing from the result ({} rows)",
                self.target.column(),
                self.target.qualified(),
                rows.len()
            ));
        }
        if self.role == "auditor" {
            for name in &q.expect_auditor {
                if !mentions(rows, name) {
                    problems.push(format!(
                        "`{name}` missing from the result ({} rows)",
                        rows.len()
                    ));
                }
            }
        }
        problems
    }
}

async fn connect(addr: SocketAddr, role: &str, purpose: &str) -> Client {
    connect_role(addr, role, purpose).await
}

async fn replay(file: &str) {
    let queries = load(file);
    let addr = server().addr;
    let mut failures = Failures::new();
    let mut setup: Vec<String> = Vec::new();
    let mut runs = 0usize;
    // The oids a probe uses: the target's oids as a role that may query it
    // sees them (the analyst for clinical.patients, the auditor for
    // audit.access_log).
    let mut probe_oids = BTreeMap::new();
    for (role, purpose, target) in [
        ("analyst", "operations", Target::Clinical),
        ("auditor", "operations", Target::Audit),
    ] {
        let client = connect(addr, role, purpose).await;
        let oids = own_oids(&client, target).await.unwrap_or_else(|| {
            setup.push(format!(
                "{role} cannot look up the oid of {}",
                target.qualified()
            ));
            Oids::UNKNOWN
        });
        probe_oids.insert(target.schema(), oids);
    }
    for (role, purpose) in ROLES {
        let mut client = connect(addr, role, purpose).await;
        for target in [Target::Clinical, Target::Audit] {
            let oids = if sees(role, target) {
                own_oids(&client, target).await.unwrap_or_else(|| {
                    setup.push(format!(
                        "{role} cannot look up the oid of {}",
                        target.qualified()
                    ));
                    Oids::UNKNOWN
                })
            } else {
                probe_oids[target.schema()].clone()
            };
            let run = Run { role, target, oids };
            for (idx, q) in queries.iter().enumerate() {
                let sql = run.oids.substitute(&target.apply(&q.sql));
                let mut protocols: Vec<&'static str> = vec!["simple"];
                if !has_placeholder(&sql) {
                    protocols.push("extended");
                }
                for protocol in protocols {
                    runs += 1;
                    let result = match protocol {
                        "simple" => {
                            tokio::time::timeout(STATEMENT_TIMEOUT, simple(&client, &sql)).await
                        }
                        _ => tokio::time::timeout(STATEMENT_TIMEOUT, extended(&client, &sql)).await,
                    };
                    let timed_out = result.is_err();
                    let problems = match (result, &q.gap) {
                        // A gap may still answer where nothing is found
                        // (a probe of a table the role may not query); the
                        // answer must reveal nothing.
                        (Ok(Ok(rows)), Some(_)) => run.check_no_leak(&rows),
                        (Ok(Ok(rows)), None) => run.check(q, &rows),
                        (Ok(Err(e)), Some(code)) if e.contains(&format!(" {code}:")) => vec![],
                        (Ok(Err(e)), _) => vec![e],
                        (Err(_), _) => vec![format!("no answer within {STATEMENT_TIMEOUT:?}")],
                    };
                    for p in problems {
                        record(&mut failures, idx, p, protocol, run.who());
                    }
                    if client.is_closed() || timed_out {
                        let lost = "the connection was lost".to_owned();
                        record(&mut failures, idx, lost, protocol, run.who());
                        client = connect(addr, role, purpose).await;
                    }
                }
            }
        }
    }
    setup.dedup();
    if failures.is_empty() && setup.is_empty() {
        return;
    }
    let failing: std::collections::BTreeSet<usize> = failures.keys().map(|(i, _)| *i).collect();
    let mut report = format!(
        "{file}: {} of {} statements failed ({} problems over {runs} runs)\n",
        failing.len(),
        queries.len(),
        failures.len()
    );
    for problem in &setup {
        let _ = writeln!(report, "setup: {problem}");
    }
    let every_run = ROLES.len() * 2;
    for ((idx, what), (protocols, who)) in &failures {
        let q = &queries[*idx];
        let who = if who.len() == every_run {
            "every role, as written and retargeted".to_owned()
        } else {
            who.join(", ")
        };
        let protocols: Vec<&str> = protocols.iter().copied().collect();
        let _ = writeln!(
            report,
            "tests/introspection/{file}:{} [{}] ({}) {what}\n    as {who}",
            q.line,
            q.name,
            protocols.join(" + "),
        );
    }
    panic!("{report}");
}

// ---------------------------------------------------------------------------
// The helpers themselves
// ---------------------------------------------------------------------------

#[test]
fn capture_files_parse() {
    for file in [
        "grafana.sql",
        "metabase.sql",
        "sqlalchemy.sql",
        "dbeaver.sql",
        "pgjdbc.sql",
        "psql.sql",
    ] {
        let queries = load(file);
        for q in &queries {
            assert!(
                !q.sql.starts_with("-- source:") && !q.sql.starts_with("-- binds:"),
                "{file}:{} [{}]: metadata left in the statement",
                q.line,
                q.name
            );
        }
        assert!(
            queries.iter().any(|q| !q.expect.is_empty()),
            "{file}: no positive check (`-- expect:`)"
        );
    }
}

#[test]
fn parse_splits_blocks_and_metadata() {
    let text = "-- header\n\n-- name: a\n-- source: x\n-- expect: patients\nSELECT 1;\n\n-- name: b\n-- ping\n";
    let q = parse(text);
    assert_eq!(q.len(), 2);
    assert_eq!(
        (q[0].name.as_str(), q[0].line, q[0].sql.as_str()),
        ("a", 3, "SELECT 1")
    );
    assert_eq!(q[0].expect, ["patients"]);
    assert_eq!(q[1].sql, "-- ping");
}

#[test]
fn leak_rules() {
    assert_eq!(leak(&PHI_ROLES, "governance"), Some("governance"));
    assert_eq!(leak(&PHI_ROLES, "audit"), Some("audit"));
    assert_eq!(leak(&PHI_ROLES, "\"audit\".\"access_log\""), Some("audit"));
    assert_eq!(leak(&PHI_ROLES, "audit.denied_attempts"), Some("audit"));
    assert_eq!(
        leak(&PHI_ROLES, "pg_catalog.lakeward_mask(x)"),
        Some("lakeward_")
    );
    assert_eq!(leak(&PHI_ROLES, "records every audit event"), None);
    assert_eq!(leak(&PHI_ROLES, "clinical.patients"), None);
    assert_eq!(leak(&PHI_ROLES, "lakeward"), None);
    assert_eq!(leak(&AUDITOR, "claims"), Some("claims"));
    assert_eq!(leak(&AUDITOR, "claims.claims"), Some("claims"));
    assert_eq!(leak(&AUDITOR, "JWT claims"), None);
    assert_eq!(leak(&AUDITOR, "{patient_id,ssn}"), Some("ssn"));
    assert_eq!(leak(&AUDITOR, "audit.access_log"), None);
}

#[test]
fn retarget_and_placeholders() {
    assert_eq!(
        Target::Audit.apply(
            "WHERE n.nspname = 'clinical' AND relname ~ '^(patients)$' -- patients_x clinical_y"
        ),
        "WHERE n.nspname = 'audit' AND relname ~ '^(access_log)$' -- patients_x clinical_y"
    );
    assert!(has_placeholder("SELECT $1"));
    assert!(!has_placeholder("SELECT '$1', \"$2\", '^(x)$'"));
    let oids = Oids {
        table: "16389".into(),
        schema: "16385".into(),
    };
    assert_eq!(
        oids.substitute("c.oid = '{{oid}}' AND n = {{nsp_oid}}"),
        "c.oid = '16389' AND n = 16385"
    );
    assert_eq!(Oids::UNKNOWN.substitute("{{oid}}"), "0");
}

/// Catalog answers drivers depend on beyond the captured files: numeric
/// precision and scale (SQLAlchemy's `format_type(atttypid, atttypmod)`),
/// `pg_cursors` (psycopg closing a named cursor), `pg_stat_activity`
/// (Superset's stop button), and the functions asyncpg and Superset call.
#[tokio::test(flavor = "multi_thread")]
async fn driver_catalog_gaps() {
    let client = connect(server().addr, "analyst", "operations").await;

    let rows = client
        .query(
            "SELECT a.attname, a.atttypmod, format_type(a.atttypid, a.atttypmod) \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON a.attrelid = c.oid \
             JOIN pg_catalog.pg_namespace n ON c.relnamespace = n.oid \
             WHERE n.nspname = 'claims' AND c.relname = 'claims' \
               AND a.attname IN ('billed_amount', 'allowed_amount', 'claim_id', 'payer') \
             ORDER BY a.attname",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i32, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("allowed_amount".into(), 786_438, "numeric(12,2)".into()),
            ("billed_amount".into(), 786_438, "numeric(12,2)".into()),
            ("claim_id".into(), -1, "bigint".into()),
            ("payer".into(), -1, "text".into()),
        ]
    );

    let rows = client
        .query(
            "SELECT column_name, numeric_precision, numeric_scale, numeric_precision_radix, \
                    character_maximum_length \
             FROM information_schema.columns \
             WHERE table_schema = 'claims' AND table_name = 'claims' \
               AND column_name IN ('billed_amount', 'claim_id', 'payer') \
             ORDER BY column_name",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, Option<i32>, Option<i32>, Option<i32>, Option<i32>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("billed_amount".into(), Some(12), Some(2), Some(10), None),
            ("claim_id".into(), Some(64), Some(0), Some(2), None),
            ("payer".into(), None, None, None, None),
        ]
    );

    // psycopg: `SELECT 1 FROM pg_catalog.pg_cursors WHERE name = %s`.
    let rows = client
        .query(
            "SELECT 1 FROM pg_catalog.pg_cursors WHERE name = $1",
            &[&"c1"],
        )
        .await
        .unwrap();
    assert!(rows.is_empty());
    client
        .simple_query(
            "SELECT name, statement, is_holdable, is_binary, is_scrollable, creation_time \
             FROM pg_cursors",
        )
        .await
        .unwrap();

    // Superset's stop button: at most the session's own row, never its text.
    let rows = client
        .query(
            "SELECT pid, usename, query FROM pg_catalog.pg_stat_activity",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() <= 1, "pg_stat_activity lists other sessions");
    for r in &rows {
        assert_eq!(r.get::<_, Option<String>>(2), None);
        assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some("analyst"));
    }
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = '1626'",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.is_empty());
    let row = client
        .query_one(
            "SELECT pg_my_temp_schema(), pg_cancel_backend(1626), pg_terminate_backend(1626)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 0);
    assert!(!row.get::<_, bool>(1));
    assert!(!row.get::<_, bool>(2));

    // asyncpg at connect.
    let row = client
        .query_one(
            "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(1), "off");
    for setting in ["lakeward.purpose", "lakeward.role", "search_path"] {
        let err = client
            .query_one(
                &format!("SELECT set_config('{setting}', 'research', false)"),
                &[],
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "set_config('{setting}')"
        );
    }
    // Nothing changed: the session still reads with its own purpose.
    let row = client
        .query_one("SELECT current_setting('lakeward.purpose')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "operations");
}
