//! The rules around the barrier: a portal or cursor never outlives the access
//! rules it was opened under (role, purpose, break-glass, policy version,
//! token), settings follow transactions as in PostgreSQL (`SET LOCAL`,
//! `ROLLBACK`, savepoints, `RESET ALL`, `DISCARD ALL`), a statement that is
//! only parsed and described is audited, and an idle portal does not hold
//! its concurrency slot for good.
//!
//! The extended-protocol cases are written message by message (a raw
//! frontend over loopback): drivers never send Execute to a portal after a
//! Sync and a `SET`, which is exactly what an attacker does.

use std::net::SocketAddr;
use std::time::Duration;

use lakeward::auth::mint::{TokenRequest, mint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::SimpleQueryMessage;

use crate::support::{connect_role, data_dir, server, sqlstate, start, token, try_connect_with};

const WHY: &str = "patient unconscious in ED bay 4, no ID";

/// One backend message: its type byte and body.
#[derive(Debug)]
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

impl Msg {
    /// A DataRow's columns as text (NULL as `None`).
    fn columns(&self) -> Vec<Option<String>> {
        let b = &self.body;
        let n = u16::from_be_bytes([b[0], b[1]]) as usize;
        let mut at = 2;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes(b[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                out.push(None);
            } else {
                let len = len as usize;
                out.push(Some(String::from_utf8_lossy(&b[at..at + len]).into_owned()));
                at += len;
            }
        }
        out
    }

    /// An ErrorResponse's field `code` (`C` SQLSTATE, `S` severity, ...).
    fn field(&self, code: u8) -> Option<String> {
        self.body
            .split(|b| *b == 0)
            .find(|f| f.first() == Some(&code))
            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
    }
}

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0u16.to_be_bytes());
    frame(b'P', &b)
}

fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, statement);
    b.extend_from_slice(&0u16.to_be_bytes()); // parameter formats
    b.extend_from_slice(&0u16.to_be_bytes()); // parameters
    b.extend_from_slice(&0u16.to_be_bytes()); // result formats: text
    frame(b'B', &b)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend_from_slice(&max_rows.to_be_bytes());
    frame(b'E', &b)
}

fn describe_statement(name: &str) -> Vec<u8> {
    let mut b = vec![b'S'];
    cstr(&mut b, name);
    frame(b'D', &b)
}

fn sync() -> Vec<u8> {
    frame(b'S', &[])
}

fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    frame(b'Q', &b)
}

/// A frontend that writes protocol messages itself (plaintext on loopback,
/// which the test server allows).
struct Wire {
    s: TcpStream,
}

impl Wire {
    async fn connect(addr: SocketAddr, user: &str, token: &str, purpose: &str) -> Wire {
        let mut s = TcpStream::connect(addr).await.expect("tcp");
        let mut body = Vec::new();
        body.extend_from_slice(&196608u32.to_be_bytes());
        let options = format!("-c lakeward.purpose={purpose}");
        for (k, v) in [
            ("user", user),
            ("database", "lakeward"),
            ("options", options.as_str()),
        ] {
            cstr(&mut body, k);
            cstr(&mut body, v);
        }
        body.push(0);
        let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        startup.extend(body);
        s.write_all(&startup).await.unwrap();
        let mut w = Wire { s };
        let auth = w.next().await.expect("authentication request");
        assert_eq!(auth.tag, b'R', "{auth:?}");
        let mut pwd = Vec::new();
        cstr(&mut pwd, token);
        w.s.write_all(&frame(b'p', &pwd)).await.unwrap();
        let ready = w.until_ready().await;
        assert!(
            ready.iter().all(|m| m.tag != b'E'),
            "startup failed: {ready:?}"
        );
        w
    }

    async fn send(&mut self, messages: &[Vec<u8>]) {
        let all: Vec<u8> = messages.concat();
        self.s.write_all(&all).await.unwrap();
    }

    async fn next(&mut self) -> Option<Msg> {
        let mut head = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(30), self.s.read_exact(&mut head))
            .await
            .expect("backend answers")
            .ok()?;
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.s.read_exact(&mut body).await.ok()?;
        Some(Msg { tag: head[0], body })
    }

    /// Messages up to and including ReadyForQuery (or the end of the
    /// connection).
    async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.next().await {
            let done = m.tag == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Send, then read through ReadyForQuery.
    async fn round(&mut self, messages: &[Vec<u8>]) -> Vec<Msg> {
        self.send(messages).await;
        self.until_ready().await
    }
}

fn rows(msgs: &[Msg]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(Msg::columns)
        .collect()
}

fn error(msgs: &[Msg]) -> Option<(String, String)> {
    msgs.iter().find(|m| m.tag == b'E').map(|m| {
        (
            m.field(b'C').unwrap_or_default(),
            m.field(b'S').unwrap_or_default(),
        )
    })
}

/// A clinician of site S01 in break-glass, with a portal of every site's
/// patients (`site_id`, other sites first) opened and one row read.
async fn clinician_portal_in_break_glass(addr: SocketAddr, user: &str) -> Wire {
    let mut w = Wire::connect(
        addr,
        user,
        &token(user, "clinician", Some("S01")),
        "treatment",
    )
    .await;
    let set = w
        .round(&[query(&format!("SET lakeward.break_glass = '{WHY}'"))])
        .await;
    assert_eq!(error(&set), None, "{set:?}");
    let first = w
        .round(&[
            parse(
                "s1",
                "SELECT site_id FROM clinical.patients ORDER BY site_id DESC",
            ),
            bind("p1", "s1"),
            execute("p1", 1),
            sync(),
        ])
        .await;
    let first = rows(&first);
    assert_eq!(first.len(), 1);
    assert_ne!(
        first[0][0].as_deref(),
        Some("S01"),
        "break-glass shows other sites"
    );
    w
}

/// The next Execute of portal `p1` sends no row and fails with `code`.
async fn portal_refused(w: &mut Wire, portal: &str, code: &str) {
    let next = w.round(&[execute(portal, 0), sync()]).await;
    assert!(
        rows(&next).is_empty(),
        "no row after the rules changed: {:?}",
        rows(&next).first()
    );
    assert_eq!(error(&next).map(|e| e.0).as_deref(), Some(code), "{next:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_portal_ends_when_break_glass_is_reset() {
    let mut w = clinician_portal_in_break_glass(server().addr, "rules_portal_bg").await;
    let reset = w.round(&[query("RESET lakeward.break_glass")]).await;
    assert_eq!(error(&reset), None);
    portal_refused(&mut w, "p1", "42501").await;
    // The portal is closed, not just paused.
    portal_refused(&mut w, "p1", "34000").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_cursor_executed_as_a_portal_ends_when_break_glass_is_reset() {
    let addr = server().addr;
    let user = "rules_cursor_bg";
    let mut w = Wire::connect(
        addr,
        user,
        &token(user, "clinician", Some("S01")),
        "treatment",
    )
    .await;
    let opened = w
        .round(&[query(&format!(
            "SET lakeward.break_glass = '{WHY}'; \
             DECLARE c CURSOR WITH HOLD FOR SELECT site_id FROM clinical.patients ORDER BY site_id DESC"
        ))])
        .await;
    assert_eq!(error(&opened), None, "{opened:?}");
    let first = w.round(&[execute("c", 1), sync()]).await;
    assert_eq!(rows(&first).len(), 1, "{first:?}");
    let reset = w.round(&[query("RESET lakeward.break_glass")]).await;
    assert_eq!(error(&reset), None);
    portal_refused(&mut w, "c", "42501").await;
    let fetch = w.round(&[query("FETCH 1 FROM c")]).await;
    assert!(rows(&fetch).is_empty());
    assert_eq!(error(&fetch).map(|e| e.0).as_deref(), Some("34000"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_portal_ends_when_the_purpose_changes() {
    let user = "rules_portal_purpose";
    let mut w = Wire::connect(
        server().addr,
        user,
        &token(user, "analyst", None),
        "operations",
    )
    .await;
    let first = w
        .round(&[
            parse(
                "s1",
                "SELECT patient_id FROM clinical.patients ORDER BY patient_id",
            ),
            bind("p1", "s1"),
            execute("p1", 1),
            sync(),
        ])
        .await;
    assert_eq!(rows(&first).len(), 1);
    // The same purpose again changes nothing.
    w.round(&[query("SET lakeward.purpose = 'operations'")])
        .await;
    let more = w.round(&[execute("p1", 1), sync()]).await;
    assert_eq!(rows(&more).len(), 1, "{more:?}");
    w.round(&[query("SET lakeward.purpose = 'payment'")]).await;
    portal_refused(&mut w, "p1", "42501").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_ends_the_session_before_a_portal_streams() {
    let addr = server().addr;
    let user = "rules_portal_expiry";
    let short = mint(
        data_dir(),
        &TokenRequest {
            user: user.to_owned(),
            roles: vec!["analyst".into()],
            site: None,
            purposes: vec![],
            family_name: None,
            ttl: Duration::from_secs(3),
        },
    )
    .expect("mint");
    let mut w = Wire::connect(addr, user, &short, "operations").await;
    let first = w
        .round(&[
            parse("s1", "SELECT patient_id FROM clinical.patients"),
            bind("p1", "s1"),
            execute("p1", 1),
            sync(),
        ])
        .await;
    assert_eq!(rows(&first).len(), 1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let next = w.round(&[execute("p1", 0), sync()]).await;
    assert!(rows(&next).is_empty(), "no row on an expired token");
    assert_eq!(
        error(&next),
        Some(("28000".to_owned(), "FATAL".to_owned())),
        "{next:?}"
    );
}

/// `SET` inside a transaction block follows it; `DISCARD ALL` (a pooler's
/// reset query) leaves nothing of the previous client behind.
#[tokio::test(flavor = "multi_thread")]
async fn settings_follow_transactions_and_discard_all_resets_everything() {
    let addr = server().addr;
    let c = try_connect_with(
        addr,
        "rules_txn",
        &token("rules_txn", "clinician", Some("S01")),
        "require",
        Some("treatment"),
    )
    .await
    .expect("connect");
    let other_sites = "SELECT count(*) FROM clinical.patients WHERE site_id <> 'S01'";
    let count = |msgs: Vec<SimpleQueryMessage>| -> i64 {
        msgs.into_iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(|v| v.parse().unwrap()),
                _ => None,
            })
            .unwrap()
    };
    let show = |msgs: Vec<SimpleQueryMessage>| -> String {
        msgs.into_iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap()
    };
    // SET LOCAL ends with COMMIT.
    c.batch_execute(&format!("BEGIN; SET LOCAL lakeward.break_glass = '{WHY}'"))
        .await
        .unwrap();
    assert!(count(c.simple_query(other_sites).await.unwrap()) > 0);
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(count(c.simple_query(other_sites).await.unwrap()), 0);
    assert_eq!(
        show(c.simple_query("SHOW lakeward.break_glass").await.unwrap()),
        "off"
    );
    // A rolled-back SET is undone, also after an error in the block.
    c.batch_execute(&format!("BEGIN; SET lakeward.break_glass = '{WHY}'"))
        .await
        .unwrap();
    assert!(c.simple_query("SELECT 1/0").await.is_err());
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count(c.simple_query(other_sites).await.unwrap()), 0);
    // A savepoint rolled back to undoes what followed it.
    c.batch_execute(&format!(
        "BEGIN; SAVEPOINT a; SET lakeward.break_glass = '{WHY}'; ROLLBACK TO SAVEPOINT a"
    ))
    .await
    .unwrap();
    assert_eq!(count(c.simple_query(other_sites).await.unwrap()), 0);
    c.batch_execute("COMMIT").await.unwrap();
    // A committed SET stays; DISCARD ALL ends it, the purpose, cursors and
    // prepared statements.
    c.batch_execute(&format!(
        "BEGIN; SET lakeward.break_glass = '{WHY}'; COMMIT; \
         DECLARE kept CURSOR WITH HOLD FOR SELECT site_id FROM clinical.patients"
    ))
    .await
    .unwrap();
    assert!(count(c.simple_query(other_sites).await.unwrap()) > 0);
    let prepared = c.prepare("SELECT 1").await.unwrap();
    let e = c.batch_execute("BEGIN; DISCARD ALL").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("25001"));
    c.batch_execute("ROLLBACK").await.unwrap();
    c.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(
        show(c.simple_query("SHOW lakeward.break_glass").await.unwrap()),
        "off"
    );
    assert_eq!(
        show(c.simple_query("SHOW lakeward.purpose").await.unwrap()),
        ""
    );
    let e = c.simple_query(other_sites).await.unwrap_err();
    assert_eq!(
        sqlstate(&e).as_deref(),
        Some("42501"),
        "no purpose declared"
    );
    let e = c.simple_query("FETCH 1 FROM kept").await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("34000"), "cursors closed");
    let e = c.query(&prepared, &[]).await.unwrap_err();
    assert_eq!(
        sqlstate(&e).as_deref(),
        Some("26000"),
        "statements deallocated"
    );
}

/// A statement parsed and described but never executed disclosed its
/// columns: it has a record, once the statement is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_parsed_and_never_executed_is_audited() {
    let addr = server().addr;
    let user = "rules_parse_only";
    let mut w = Wire::connect(addr, user, &token(user, "analyst", None), "operations").await;
    let described = w
        .round(&[
            parse(
                "probe",
                "SELECT ssn, mrn FROM clinical.patients WHERE patient_id = 7",
            ),
            describe_statement("probe"),
            sync(),
        ])
        .await;
    assert!(described.iter().any(|m| m.tag == b'T'), "{described:?}");
    // Executed statements need no second record.
    let ran = w
        .round(&[
            parse("", "SELECT count(*) FROM clinical.encounters"),
            bind("", ""),
            execute("", 0),
            sync(),
        ])
        .await;
    assert_eq!(rows(&ran).len(), 1);
    w.send(&[frame(b'X', &[])]).await;
    drop(w);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let auditor = connect_role(addr, "auditor", "operations").await;
    let records = crate::audit::text_rows(
        &auditor,
        &format!(
            "SELECT decision, coalesce(reason, ''), array_to_string(tables, ','), query_fingerprint \
             FROM audit.access_log WHERE \"user\" = '{user}' AND event = 'statement' ORDER BY seq"
        ),
    )
    .await;
    let probe: Vec<_> = records
        .iter()
        .filter(|r| r[1] == lakeward::audit::events::NEVER_EXECUTED)
        .collect();
    assert_eq!(probe.len(), 1, "{records:?}");
    assert_eq!(probe[0][0], "allowed");
    assert_eq!(probe[0][2], "clinical.patients");
    assert!(!probe[0][3].contains('7'), "no literal: {}", probe[0][3]);
    assert_eq!(
        records.len(),
        2,
        "one record for the probe, one for the executed count: {records:?}"
    );
}

/// A suspended portal is closed after the idle-portal timeout: its
/// concurrency slot goes back, and its next Execute says why it is gone.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_portal_gives_back_its_concurrency_slot() {
    let s = start(|c| {
        c.limits.idle_portal_timeout_secs = 1;
        c.limits.roles.insert(
            "analyst".into(),
            lakeward::config::RoleLimitsConfig {
                max_concurrent_statements: Some(1),
                ..Default::default()
            },
        );
    });
    let user = "rules_idle_portal";
    let mut w = Wire::connect(s.addr, user, &token(user, "analyst", None), "operations").await;
    let first = w
        .round(&[
            parse("s1", "SELECT patient_id FROM clinical.patients"),
            bind("p1", "s1"),
            execute("p1", 1),
            sync(),
        ])
        .await;
    assert_eq!(rows(&first).len(), 1);
    let other = connect_role(s.addr, "analyst", "operations").await;
    let e = other.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        sqlstate(&e).as_deref(),
        Some("53000"),
        "the suspended portal holds the analysts' only slot"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    other
        .simple_query("SELECT 1")
        .await
        .expect("the idle portal gave its slot back");
    portal_refused(&mut w, "p1", "55000").await;
}
