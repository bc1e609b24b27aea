//! Running lakeward in production: statement limits, certificate rotation
//! by SIGHUP, graceful drain on SIGTERM with a whole audit log, and logs
//! that never carry PHI.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::process::lakeward;
use crate::support::{
    self, ServeOpts, Served, connect_role, data_dir, serve_binary_opts, sqlstate, temp_dir, token,
    try_connect, try_connect_with,
};

/// A statement that runs for several seconds on the test dataset.
const LONG_QUERY: &str = "SELECT count(*) FROM clinical.observations a CROSS JOIN clinical.observations b \
                          WHERE a.value_num + b.value_num > 1e12";

fn signal(s: &Served, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &s.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

fn limited_server() -> support::TestServer {
    support::start(|c| {
        c.limits.statement_timeout_secs = 0;
        let clinician = lakeward::config::RoleLimitsConfig {
            max_rows: Some(5),
            max_concurrent_statements: Some(1),
            ..Default::default()
        };
        c.limits.roles.insert("clinician".into(), clinician);
        let analyst = lakeward::config::RoleLimitsConfig {
            statement_timeout_secs: Some(1),
            ..Default::default()
        };
        c.limits.roles.insert("analyst".into(), analyst);
    })
}

#[tokio::test]
async fn limits_stop_statements_with_postgres_sqlstates() {
    let server = limited_server();
    let addr = server.addr;

    // Row cap: five rows stream, the sixth ends the statement with 54000.
    let clinician = connect_role(addr, "clinician", "treatment").await;
    let few = clinician
        .simple_query("SELECT patient_id FROM clinical.patients LIMIT 5")
        .await
        .expect("within the row cap");
    let rows = few
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 5);
    let err = clinician
        .query("SELECT patient_id FROM clinical.patients", &[])
        .await
        .expect_err("over the row cap");
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"), "{err}");
    // The session goes on.
    clinician
        .simple_query("SELECT 1")
        .await
        .expect("session survives");

    // Concurrency cap: an open cursor holds the clinician role's one slot.
    clinician
        .batch_execute(
            "BEGIN; DECLARE c CURSOR FOR SELECT patient_id FROM clinical.patients LIMIT 3",
        )
        .await
        .expect("declare");
    clinician
        .simple_query("FETCH 1 FROM c")
        .await
        .expect("fetch");
    let other = connect_role(addr, "clinician", "treatment").await;
    let err = other
        .query("SELECT count(*) FROM clinical.patients", &[])
        .await
        .expect_err("second running statement of the role");
    assert_eq!(sqlstate(&err).as_deref(), Some("53000"), "{err}");
    // Another role is not held back by the clinician's cap.
    let researcher = connect_role(addr, "researcher", "research").await;
    researcher
        .query("SELECT count(*) FROM clinical.encounters", &[])
        .await
        .expect("other role");
    clinician
        .batch_execute("CLOSE c; COMMIT")
        .await
        .expect("close");
    other
        .query("SELECT count(*) FROM clinical.patients", &[])
        .await
        .expect("slot free again");

    // Statement timeout: the analyst's one second ends a long statement
    // with 57014, well before it would finish.
    let analyst = connect_role(addr, "analyst", "operations").await;
    let started = Instant::now();
    let err = analyst
        .simple_query(LONG_QUERY)
        .await
        .expect_err("statement timeout");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    let message = err
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("statement timeout"),
        "message names the timeout: {message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    analyst
        .simple_query("SELECT count(*) FROM clinical.patients")
        .await
        .expect("session survives the timeout");
    server.shutdown();
}

/// A tokio-postgres connection whose TLS trusts only `cert`.
async fn connect_trusting(
    port: u16,
    cert: &Path,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .port(port)
        .user("analyst")
        .password(token("analyst", "analyst", None))
        .dbname("lakeward")
        .options("-c lakeward.purpose=operations")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Sessions opened before and after a rotation both still answer.
async fn still_serve(before: &tokio_postgres::Client, after: &tokio_postgres::Client) {
    for (client, when) in [(before, "before"), (after, "after")] {
        client
            .simple_query("SELECT count(*) FROM clinical.patients")
            .await
            .unwrap_or_else(|e| panic!("session opened {when} the rotation: {e}"));
    }
}

#[tokio::test]
async fn sighup_serves_a_rotated_certificate_to_new_connections() {
    let tls = temp_dir("lakeward-it-tls-live");
    for f in ["server.crt", "server.key"] {
        std::fs::copy(data_dir().join("tls").join(f), tls.join(f)).unwrap();
    }
    let next = temp_dir("lakeward-it-tls-next");
    lakeward::server::tls::ensure_dev_certificate(&next).unwrap();
    let audit = temp_dir("lakeward-it-tls-audit");
    let served = serve_binary_opts(ServeOpts {
        audit_dir: &audit,
        tls_dir: Some(&tls),
        ..Default::default()
    });
    let old_cert = data_dir().join("tls/server.crt");
    let new_cert = next.join("server.crt");

    let before = connect_trusting(served.port, &old_cert)
        .await
        .expect("old certificate served");
    assert!(
        connect_trusting(served.port, &new_cert).await.is_err(),
        "the new certificate is not served before the reload"
    );

    // A broken pair is refused and the old certificate stays.
    std::fs::write(tls.join("server.crt"), "not a certificate").unwrap();
    signal(&served, "-HUP");
    std::thread::sleep(Duration::from_millis(800));
    std::fs::copy(data_dir().join("tls/server.crt"), tls.join("server.crt")).unwrap();
    connect_trusting(served.port, &old_cert)
        .await
        .expect("old certificate still served after a refused reload");

    // Rotate: the new pair goes in place, SIGHUP, new handshakes get it.
    std::fs::copy(next.join("server.crt"), tls.join("server.crt")).unwrap();
    std::fs::copy(next.join("server.key"), tls.join("server.key")).unwrap();
    signal(&served, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match connect_trusting(served.port, &new_cert).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("rotated certificate not served: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    assert!(
        connect_trusting(served.port, &old_cert).await.is_err(),
        "the old certificate is no longer served"
    );
    // Established sessions were not dropped.
    still_serve(&before, &after).await;
    let log = served.log.lock().unwrap().join("\n");
    assert!(log.contains("TLS certificate reload rejected"), "{log}");
    assert!(log.contains("TLS certificate reloaded"), "{log}");
}

/// A token for the analyst signed with the demo-style key of `keys_dir`.
fn token_signed_in(keys_dir: &Path) -> String {
    let req = lakeward::auth::mint::TokenRequest {
        user: "analyst".into(),
        roles: vec!["analyst".into()],
        site: None,
        purposes: vec![],
        family_name: None,
        ttl: Duration::from_secs(600),
    };
    lakeward::auth::mint::mint(keys_dir, &req).expect("mint")
}

async fn analyst_with(
    served: &Served,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    try_connect_with(
        served.addr(),
        "analyst",
        password,
        "require",
        Some("operations"),
    )
    .await
}

fn refused_as_bad_credentials(
    r: Result<tokio_postgres::Client, tokio_postgres::Error>,
    what: &str,
) {
    match r {
        Ok(_) => panic!("{what}: the connection was accepted"),
        Err(e) => {
            let code = sqlstate(&e);
            assert!(
                matches!(code.as_deref(), Some("28000" | "28P01")),
                "{what}: {code:?} {e}"
            );
        }
    }
}

#[tokio::test]
async fn sighup_rotates_the_token_verification_keys() {
    // The served key file starts as the dataset's demo key.
    let live = temp_dir("lakeward-it-jwt-live").join("jwt-public.pem");
    std::fs::copy(data_dir().join("keys/jwt-public.pem"), &live).unwrap();
    // The identity provider's next key pair (same kid, new key material).
    let next = temp_dir("lakeward-it-jwt-next");
    lakeward::auth::mint::ensure_demo_keys(&next).unwrap();
    let audit = temp_dir("lakeward-it-jwt-audit");
    let served = serve_binary_opts(ServeOpts {
        audit_dir: &audit,
        jwt_public_key: Some(&live),
        ..Default::default()
    });
    let old_token = token_signed_in(data_dir());
    let new_token = token_signed_in(&next);

    let before = analyst_with(&served, &old_token)
        .await
        .expect("a token of the current key is accepted");
    refused_as_bad_credentials(
        analyst_with(&served, &new_token).await,
        "a token of the next key before the reload",
    );

    // A broken key file is refused and the previous keys stay in service.
    std::fs::write(
        &live,
        "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    signal(&served, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("token key reload rejected"))
    {
        assert!(
            Instant::now() < deadline,
            "the broken key file was not reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    analyst_with(&served, &old_token)
        .await
        .expect("the previous key still verifies after a refused reload");

    // Rotate: the new public key goes in place, SIGHUP.
    std::fs::copy(next.join("keys/jwt-public.pem"), &live).unwrap();
    signal(&served, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        match analyst_with(&served, &new_token).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("the rotated key is not used: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    // The retired key no longer verifies, even for a token seen before
    // (the token cache is emptied by the reload).
    refused_as_bad_credentials(
        analyst_with(&served, &old_token).await,
        "a token of the retired key after the rotation",
    );
    // Sessions established before the rotation keep working.
    still_serve(&before, &after).await;
    let log = served.log.lock().unwrap().join("\n");
    assert!(log.contains("token verification keys reloaded"), "{log}");
}

#[test]
fn sigterm_lets_a_running_statement_finish_and_leaves_a_whole_audit_log() {
    let audit = temp_dir("lakeward-it-drain-audit");
    let instance = format!("drain-{}", std::process::id());
    let mut served = serve_binary_opts(ServeOpts {
        audit_dir: &audit,
        instance: Some(&instance),
        ..Default::default()
    });
    let port = served.port;
    let rt = support::runtime();
    let query = rt.spawn(async move {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let client = connect_role(addr, "analyst", "operations").await;
        let started = Instant::now();
        let rows = client.query(LONG_QUERY, &[]).await;
        (rows.map(|r| r[0].get::<_, i64>(0)), started.elapsed())
    });
    // Let the statement start, then ask the server to stop.
    std::thread::sleep(Duration::from_millis(1200));
    signal(&served, "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    let refused = rt.block_on(async move {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            try_connect(addr, "analyst", "require"),
        )
        .await
    });
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "no new session once draining"
    );
    let (result, took) = rt.block_on(query).unwrap();
    let count = result.expect("the running statement finishes during the drain");
    assert_eq!(count, 0, "no pair passes the filter");
    assert!(
        took > Duration::from_millis(1500),
        "the statement ran across the SIGTERM: {took:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = served.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after the drain"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "clean exit: {status:?}");
    let log = served.log.lock().unwrap().join("\n");
    assert!(log.contains("shutdown complete"), "{log}");

    // The audit log is whole and holds this instance's records.
    let out = lakeward(&[
        "audit",
        "verify",
        "--config",
        served.config.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "audit verify: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{instance}:")))
        .unwrap_or_else(|| panic!("no chain for {instance}: {stdout}"));
    let records: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        records >= 3,
        "connect, statement and completion records: {line}"
    );
    served.stop();
}

#[tokio::test]
async fn logs_carry_no_phi_literals_values_or_tokens() {
    const SENTINEL: &str = "PHI-SENTINEL-7731";
    let audit = temp_dir("lakeward-it-phi-audit");
    let served = serve_binary_opts(ServeOpts {
        audit_dir: &audit,
        log_filter: Some("debug"),
        log_json: true,
        ..Default::default()
    });
    let addr = served.addr();
    let clinician_token = token("clinician", "clinician", Some("S01"));
    let clinician = try_connect_with(
        addr,
        "clinician",
        &clinician_token,
        "require",
        Some("treatment"),
    )
    .await
    .expect("clinician");

    // Real values the clinician is shown: none of them may be logged.
    let rows = clinician
        .query(
            "SELECT mrn, first_name, last_name, ssn, phone, email FROM clinical.patients ORDER BY patient_id LIMIT 20",
            &[],
        )
        .await
        .expect("patients");
    let mut values: Vec<String> = Vec::new();
    for r in &rows {
        for i in 0..6 {
            if let Some(v) = r.get::<_, Option<String>>(i) {
                values.push(v);
            }
        }
    }
    assert!(values.len() > 40, "the clinician sees identifiers");

    // Literals and bound values in statements that succeed and that fail.
    let statements = [
        format!("SELECT patient_id FROM clinical.patients WHERE mrn = '{SENTINEL}'"),
        format!("SELECT count(*) FROM clinical.patients WHERE last_name LIKE '{SENTINEL}%'"),
        format!("SELECT CAST('{SENTINEL}' AS INT)"),
        format!("SELECT '{SENTINEL}' FRM clinical.patients"),
        format!("SET lakeward.purpose = '{SENTINEL}'"),
    ];
    for sql in &statements {
        let _ = clinician.simple_query(sql).await;
    }
    let _ = clinician
        .query(
            "SELECT patient_id FROM clinical.patients WHERE mrn = $1 OR ssn = $1",
            &[&SENTINEL],
        )
        .await;
    // A bad token carrying the sentinel.
    let _ = try_connect_with(
        addr,
        "clinician",
        &format!("{SENTINEL}.a.b"),
        "require",
        None,
    )
    .await;
    drop(clinician);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let log = served.log.lock().unwrap().clone();
    assert!(log.len() > 10, "the server logged its work: {}", log.len());
    for line in &log {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "every log line is JSON: {line}"
        );
        assert!(!line.contains(SENTINEL), "sentinel logged: {line}");
        assert!(!line.contains(&clinician_token), "token logged: {line}");
        for v in &values {
            assert!(
                v.len() < 4 || !line.contains(v.as_str()),
                "a value shown to the client was logged: {line}"
            );
        }
    }
    // The statement spans carry who and which statement shape.
    assert!(
        log.iter()
            .any(|l| l.contains("\"fingerprint\"") && l.contains("\"session\"")),
        "statement spans in the log"
    );
    // Every table version loaded says which scan reads it (none of these
    // events is lost among the storage crates' own), and all of the demo's
    // tables, `timestampNtz` columns included, are read by the snapshot scan.
    for table in [
        "claims/claims",
        "clinical/encounters",
        "clinical/observations",
        "clinical/patients",
        "governance/consents",
    ] {
        assert!(
            log.iter()
                .any(|l| l.contains("snapshot scan") && l.contains(table)),
            "{table}: its scan is logged and is the snapshot scan"
        );
    }
    // Other crates are capped at warn whatever the filter asks for.
    for line in &log {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let target = v["target"].as_str().unwrap_or_default();
        let level = v["level"].as_str().unwrap_or_default();
        assert!(
            target.starts_with("lakeward") || level == "WARN" || level == "ERROR",
            "a {level} event of {target} passed the cap"
        );
    }
}

/// The admin endpoint's address, from the server's start-up log.
fn admin_addr(served: &Served) -> std::net::SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = served.log.lock().unwrap().iter().find_map(|l| {
            let at = l.find("admin=")? + "admin=".len();
            l[at..].split_whitespace().next()?.parse().ok()
        });
        if let Some(a) = found {
            return a;
        }
        assert!(Instant::now() < deadline, "no admin endpoint in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on the admin endpoint: (status code, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the first sample of `metric` whose line contains every
/// one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test]
async fn metrics_health_and_readiness_follow_the_workload() {
    let audit = temp_dir("lakeward-it-metrics-audit");
    let served = serve_binary_opts(ServeOpts {
        audit_dir: &audit,
        ..Default::default()
    });
    let admin = admin_addr(&served);
    assert_eq!(http_get(admin, "/health").await.0, 200);
    let (status, report) = http_get(admin, "/ready").await;
    assert_eq!(status, 200, "{report}");
    assert!(report.contains("\"policy\":true"), "{report}");
    assert_eq!(http_get(admin, "/nope").await.0, 404);

    let (status, before) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "lakeward_connections_active",
        "lakeward_connections_total",
        "lakeward_auth_failures_total",
        "lakeward_statements_total",
        "lakeward_statement_phase_seconds",
        "lakeward_rows_sent_total",
        "lakeward_bytes_sent_total",
        "lakeward_cache_requests_total",
        "lakeward_audit_queue_depth",
        "lakeward_audit_fsync_seconds",
        "lakeward_audit_unshipped_records",
        "lakeward_audit_ship_failures_total",
        "lakeward_break_glass_sessions_active",
        "lakeward_delta_table_version",
        "lakeward_delta_snapshot_age_seconds",
        "lakeward_limits_exceeded_total",
    ] {
        assert!(before.contains(family), "{family} exposed:\n{before}");
    }
    assert!(
        before.contains("table=\"clinical.patients\""),
        "table versions by name"
    );

    // A workload: statements allowed and denied, rows, an auth failure.
    let analyst = connect_role(served.addr(), "analyst", "operations").await;
    for _ in 0..5 {
        analyst
            .query("SELECT patient_id FROM clinical.patients LIMIT 10", &[])
            .await
            .unwrap();
    }
    let _ = analyst
        .simple_query("SELECT ssn FROM clinical.patients")
        .await;
    let _ = try_connect_with(served.addr(), "analyst", "not.a.token", "require", None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, after) = http_get(admin, "/metrics").await;

    let grew = |metric: &str, labels: &[&str], by: f64| {
        let (b, a) = (
            sample(&before, metric, labels),
            sample(&after, metric, labels),
        );
        assert!(
            a - b.max(0.0) >= by,
            "{metric}{labels:?}: {b} -> {a}\n{after}"
        );
    };
    grew("lakeward_connections_total", &[], 2.0);
    grew(
        "lakeward_statements_total",
        &["kind=\"select\"", "decision=\"allowed\""],
        5.0,
    );
    grew("lakeward_rows_sent_total", &[], 50.0);
    grew("lakeward_bytes_sent_total", &[], 50.0);
    grew(
        "lakeward_auth_failures_total",
        &["reason=\"bad_token\""],
        1.0,
    );
    grew("lakeward_audit_fsync_seconds_count", &[], 1.0);
    grew(
        "lakeward_statement_phase_seconds_count",
        &["phase=\"plan\""],
        1.0,
    );
    grew(
        "lakeward_cache_requests_total",
        &["cache=\"token\"", "result=\"miss\""],
        1.0,
    );
    assert!(sample(&after, "lakeward_connections_active", &[]) >= 1.0);
}

/// Simple statements that differ only in their key literals share one
/// cached plan (the literals are bound as its parameters), return what
/// the statement as written returns, and are audited with `?` for the
/// literals.
#[tokio::test]
async fn simple_statements_differing_in_key_literals_share_one_plan() {
    let audit = temp_dir("lakeward-it-lift-audit");
    let served = serve_binary_opts(ServeOpts {
        audit_dir: &audit,
        ..Default::default()
    });
    let admin = admin_addr(&served);
    let raw = crate::support::raw_patients(
        &crate::support::raw_context(crate::support::data_dir()).await,
    )
    .await;
    let c = crate::audit::as_user(
        served.addr(),
        "lifter",
        "clinician",
        Some("S01"),
        "treatment",
    )
    .await;
    // Warm: the shape is planned once.
    let first = raw
        .iter()
        .find(|p| p.site == "S01")
        .expect("an S01 patient");
    c.simple_query(&format!(
        "SELECT patient_id, ssn, site_id FROM clinical.patients WHERE patient_id = {} AND site_id = 'S01'",
        first.id
    ))
    .await
    .expect("warm");
    let (_, before) = http_get(admin, "/metrics").await;
    let sample_ids: Vec<&crate::support::RawPatient> = raw.iter().step_by(7).take(30).collect();
    for p in &sample_ids {
        let rows = crate::audit::text_rows(
            &c,
            &format!(
                "SELECT patient_id, ssn, site_id FROM clinical.patients WHERE patient_id = {} AND site_id = '{}'",
                p.id, p.site
            ),
        )
        .await;
        if p.site == "S01" {
            assert_eq!(rows.len(), 1, "patient {} of the clinician's site", p.id);
            assert_eq!(rows[0][0], p.id.to_string());
            if let Some(ssn) = &p.ssn {
                assert_ne!(&rows[0][1], ssn, "masked");
                assert!(rows[0][1].ends_with(&ssn[ssn.len() - 4..]));
            }
        } else {
            assert!(rows.is_empty(), "patient {} is outside the row scope", p.id);
        }
    }
    // A literal whose column is not a key-typed one is planned as written.
    let rows = crate::audit::text_rows(
        &c,
        "SELECT count(*) FROM clinical.patients WHERE patient_id = 1.5",
    )
    .await;
    assert_eq!(rows, vec![vec!["0"]]);
    let (_, after) = http_get(admin, "/metrics").await;
    let hits = sample(
        &after,
        "lakeward_cache_requests_total",
        &["cache=\"plan\"", "result=\"hit\""],
    ) - sample(
        &before,
        "lakeward_cache_requests_total",
        &["cache=\"plan\"", "result=\"hit\""],
    )
    .max(0.0);
    assert!(
        hits >= sample_ids.len() as f64,
        "{hits} plan-cache hits for {} statements of one shape",
        sample_ids.len()
    );
    drop(c);
    let auditor =
        crate::audit::as_user(served.addr(), "lift_auditor", "auditor", None, "operations").await;
    let prints = crate::audit::text_rows(
        &auditor,
        "SELECT DISTINCT query_fingerprint FROM audit.access_log WHERE \"user\" = 'lifter' AND event = 'statement'",
    )
    .await;
    assert!(!prints.is_empty());
    for p in prints.iter().map(|r| &r[0]) {
        assert!(!p.contains('$'), "literals are audited as ?: {p}");
        assert!(
            !sample_ids
                .iter()
                .any(|s| p.contains(&format!("= {}", s.id))),
            "a literal reached the audit log: {p}"
        );
    }
}
