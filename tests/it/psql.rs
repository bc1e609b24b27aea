//! The real psql binary against lakeward over TLS.

use crate::support::process::text;
use crate::support::psql::{PsqlConn, psql};
use crate::support::{server, start, token};

/// psql as the analyst (a fresh token) with `sslmode`.
fn as_analyst(port: u16, sslmode: &str, args: &[&str]) -> std::process::Output {
    let token = token("analyst", "analyst", None);
    let conn = PsqlConn {
        sslmode,
        ..PsqlConn::analyst(port, &token)
    };
    psql(&conn, args)
}

#[test]
fn psql_queries_over_tls() {
    let out = as_analyst(
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
    let out = as_analyst(
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
    let out = as_analyst(server().port(), "require", &["-c", "\\conninfo"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = text(&out);
    assert!(s.contains("SSL connection"), "{s}");
    assert!(s.contains("TLSv1.3"), "{s}");
}

#[test]
fn plaintext_is_refused_when_not_allowed() {
    let strict = start(|c| c.tls.allow_plaintext_loopback = false);
    let out = as_analyst(strict.port(), "disable", &["-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("TLS is required"), "{}", text(&out));
    let ok = as_analyst(strict.port(), "require", &["-c", "SELECT 1"]);
    assert!(ok.status.success(), "{}", text(&ok));
    strict.shutdown();
}
