//! The real psql binary against lakeward over TLS.

use std::process::Command;

use crate::support::{server, start, token};

fn psql(port: u16, sslmode: &str, args: &[&str]) -> std::process::Output {
    let conn = format!(
        "host=localhost port={port} dbname=lakeward user=analyst sslmode={sslmode} options='-c lakeward.purpose=operations'"
    );
    Command::new("psql")
        .arg(conn)
        .env("PGPASSWORD", token("analyst", "analyst", None))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-A", "-t"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql must be installed (apt-get install postgresql-client)")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn psql_queries_over_tls() {
    let out = psql(
        server().port(),
        "require",
        &[
            "-c",
            "SELECT count(DISTINCT site_id) FROM clinical.patients",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12");
}

#[test]
fn psql_multi_statement_simple_query() {
    let out = psql(
        server().port(),
        "require",
        &["-c", "SELECT 1 AS a; SELECT 'two' AS b; SHOW search_path"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // The analyst role starts with the policy's search path.
    assert_eq!(lines, ["1", "two", "clinical, claims, public"], "{stdout}");
}

#[test]
fn psql_conninfo_reports_tls() {
    let out = psql(server().port(), "require", &["-c", "\\conninfo"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = text(&out);
    assert!(s.contains("SSL connection"), "{s}");
    assert!(s.contains("TLSv1.3"), "{s}");
}

#[test]
fn plaintext_is_refused_when_not_allowed() {
    let strict = start(|c| c.tls.allow_plaintext_loopback = false);
    let out = psql(strict.port(), "disable", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("TLS is required"), "{}", text(&out));
    let ok = psql(strict.port(), "require", &["-c", "SELECT 1"]);
    assert!(ok.status.success(), "{}", text(&ok));
    strict.shutdown();
}
