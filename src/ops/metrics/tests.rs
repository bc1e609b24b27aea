use super::*;

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn every_family_is_encoded() {
    let m = Metrics::new();
    let text = m.encode();
    for family in [
        "lakeward_connections_active gauge",
        "lakeward_connections counter",
        "lakeward_auth_failures counter",
        "lakeward_statements counter",
        "lakeward_statement_phase_seconds histogram",
        "lakeward_rows_sent counter",
        "lakeward_bytes_sent counter",
        "lakeward_cache_requests counter",
        "lakeward_audit_queue_depth gauge",
        "lakeward_audit_fsync_seconds histogram",
        "lakeward_audit_records counter",
        "lakeward_audit_errors counter",
        "lakeward_break_glass_sessions_active gauge",
        "lakeward_break_glass_sessions counter",
        "lakeward_limits_exceeded counter",
        "lakeward_build info",
    ] {
        assert!(
            has_line(&text, &format!("# TYPE {family}")),
            "missing {family} in\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
    let build = format!(
        "lakeward_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(has_line(&text, &build), "{text}");
    // Closed label sets exist from the start, at zero.
    assert!(has_line(
        &text,
        "lakeward_statements_total{kind=\"catalog\",decision=\"denied\"} 0"
    ));
    assert!(has_line(
        &text,
        "lakeward_auth_failures_total{reason=\"no_tls\"} 0"
    ));
    assert!(has_line(
        &text,
        "lakeward_limits_exceeded_total{limit=\"max_concurrent_statements\"} 0"
    ));
    // No table yet: no table family.
    assert!(!text.contains("lakeward_delta_table_version"));
}

#[test]
fn connections_and_auth() {
    let m = Metrics::new();
    let a = m.connection_opened();
    let b = m.connection_opened();
    let text = m.encode();
    assert!(has_line(&text, "lakeward_connections_active 2"), "{text}");
    assert!(has_line(&text, "lakeward_connections_total 2"));
    drop(a);
    drop(b);
    m.auth_failure(AuthFailureReason::Expired);
    m.auth_failure(AuthFailureReason::NoTls);
    let text = m.encode();
    assert!(has_line(&text, "lakeward_connections_active 0"));
    assert!(has_line(&text, "lakeward_connections_total 2"));
    assert!(has_line(
        &text,
        "lakeward_auth_failures_total{reason=\"expired\"} 1"
    ));
    assert!(has_line(
        &text,
        "lakeward_auth_failures_total{reason=\"no_tls\"} 1"
    ));
}

#[test]
fn statements_phases_rows() {
    let m = Metrics::new();
    m.statement(StatementClass::Select, Decision::Allowed);
    m.statement(StatementClass::Select, Decision::Allowed);
    m.statement(
        StatementClass::classify("SELECT", true),
        Decision::from_sqlstate("42501"),
    );
    m.observe_phase(Phase::Plan, Duration::from_millis(3));
    {
        let mut t = m.statement_timer();
        t.mark(Phase::ParseRewrite);
        t.mark(Phase::Execute);
        t.first_row();
        t.first_row();
        t.finish();
    }
    m.rows_sent(10);
    m.bytes_sent(1234);
    let text = m.encode();
    assert!(has_line(
        &text,
        "lakeward_statements_total{kind=\"select\",decision=\"allowed\"} 2"
    ));
    assert!(has_line(
        &text,
        "lakeward_statements_total{kind=\"catalog\",decision=\"denied\"} 1"
    ));
    for phase in ["parse_rewrite", "plan", "execute", "first_row", "total"] {
        let line = format!("lakeward_statement_phase_seconds_count{{phase=\"{phase}\"}} 1");
        assert!(has_line(&text, &line), "missing {line} in\n{text}");
    }
    // The bucket bound comes first, then the family's labels.
    assert!(has_line(
        &text,
        "lakeward_statement_phase_seconds_bucket{le=\"+Inf\",phase=\"plan\"} 1"
    ));
    assert!(has_line(
        &text,
        "# UNIT lakeward_statement_phase_seconds seconds"
    ));
    assert!(has_line(&text, "lakeward_rows_sent_total 10"));
    assert!(has_line(&text, "lakeward_bytes_sent_total 1234"));
}

#[test]
fn caches_audit_break_glass_limits() {
    let m = Metrics::new();
    m.cache(Cache::Plan, true);
    m.cache(Cache::Plan, false);
    m.cache(Cache::Token, true);
    m.set_audit_queue_depth(7);
    m.observe_audit_fsync(Duration::from_micros(800));
    m.audit_records(3);
    m.audit_error();
    let g = m.break_glass_started();
    m.limit_exceeded(Limit::MaxRows);
    m.limit_exceeded(Limit::StatementTimeout);
    let text = m.encode();
    assert!(has_line(
        &text,
        "lakeward_cache_requests_total{cache=\"plan\",result=\"hit\"} 1"
    ));
    assert!(has_line(
        &text,
        "lakeward_cache_requests_total{cache=\"plan\",result=\"miss\"} 1"
    ));
    assert!(has_line(
        &text,
        "lakeward_cache_requests_total{cache=\"token\",result=\"hit\"} 1"
    ));
    assert!(has_line(
        &text,
        "lakeward_cache_requests_total{cache=\"policy\",result=\"miss\"} 0"
    ));
    assert!(has_line(&text, "lakeward_audit_queue_depth 7"));
    assert!(has_line(&text, "lakeward_audit_fsync_seconds_count 1"));
    assert!(has_line(&text, "lakeward_audit_records_total 3"));
    assert!(has_line(&text, "lakeward_audit_errors_total 1"));
    assert!(has_line(&text, "lakeward_break_glass_sessions_active 1"));
    assert!(has_line(&text, "lakeward_break_glass_sessions_total 1"));
    assert!(has_line(
        &text,
        "lakeward_limits_exceeded_total{limit=\"max_rows\"} 1"
    ));
    assert!(has_line(
        &text,
        "lakeward_limits_exceeded_total{limit=\"statement_timeout\"} 1"
    ));
    m.spilled(0, 0);
    m.spilled(3, 4096);
    m.set_memory_probe(|| MemoryGauges {
        pool_limit_bytes: 64 << 20,
        pool_reserved_bytes: 1024,
        spill_bytes: 2048,
        spill_limit_bytes: 1 << 30,
        spill_files: 2,
    });
    drop(g);
    let text = m.encode();
    assert!(has_line(&text, "lakeward_spill_files_total 3"));
    assert!(has_line(&text, "lakeward_spilled_bytes_total 4096"));
    assert!(has_line(&text, "lakeward_statements_spilled_total 1"));
    assert!(has_line(&text, "lakeward_memory_pool_limit_bytes 67108864"));
    assert!(has_line(&text, "lakeward_memory_pool_reserved_bytes 1024"));
    assert!(has_line(&text, "lakeward_spill_disk_bytes 2048"));
    assert!(has_line(
        &text,
        "lakeward_spill_disk_limit_bytes 1073741824"
    ));
    assert!(has_line(&text, "lakeward_spill_files_active 2"));
    assert!(has_line(&text, "lakeward_break_glass_sessions_active 0"));
    assert!(has_line(&text, "lakeward_break_glass_sessions_total 1"));
}

#[test]
fn delta_tables() {
    let m = Metrics::new();
    m.set_table_version("clinical.patients", 42);
    m.set_snapshot_age("clinical.patients", 12.5);
    m.set_table_version("bad\"name\n", 1);
    let text = m.encode();
    assert!(has_line(&text, "# TYPE lakeward_delta_table_version gauge"));
    assert!(has_line(
        &text,
        "lakeward_delta_table_version{table=\"clinical.patients\"} 42"
    ));
    assert!(has_line(
        &text,
        "lakeward_delta_table_version{table=\"bad_name_\"} 1"
    ));
    assert!(has_line(
        &text,
        "# UNIT lakeward_delta_snapshot_age_seconds seconds"
    ));
    let prefix = "lakeward_delta_snapshot_age_seconds{table=\"clinical.patients\"} ";
    let age: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .expect("age series")
        .parse()
        .expect("a number");
    assert!((12.0..3600.0).contains(&age), "age {age}");
    assert!(text.ends_with("# EOF\n"));
    m.remove_table("clinical.patients");
    let text = m.encode();
    assert!(!text.contains("clinical.patients"));
}

#[test]
fn label_values_are_closed_identifiers() {
    let mut values: Vec<&str> = vec![];
    values.extend(AuthFailureReason::ALL.iter().map(|v| v.as_str()));
    values.extend(StatementClass::ALL.iter().map(|v| v.as_str()));
    values.extend(Decision::ALL.iter().map(|v| v.as_str()));
    values.extend(Phase::ALL.iter().map(|v| v.as_str()));
    values.extend(Cache::ALL.iter().map(|v| v.as_str()));
    values.extend(CacheResult::ALL.iter().map(|v| v.as_str()));
    values.extend(Limit::ALL.iter().map(|v| v.as_str()));
    for v in values {
        assert!(
            !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{v}"
        );
    }
    for (i, p) in Phase::ALL.iter().enumerate() {
        assert_eq!(p.index(), i);
    }
    assert_eq!(
        StatementClass::classify("ROLLBACK", false),
        StatementClass::Transaction
    );
    assert_eq!(
        StatementClass::classify("RESET", false),
        StatementClass::Set
    );
    assert_eq!(
        StatementClass::classify("EXPLAIN", false),
        StatementClass::Explain
    );
    assert_eq!(
        StatementClass::classify("INSERT", false),
        StatementClass::Other
    );
    assert_eq!(Decision::from_sqlstate("57014"), Decision::Error);
    assert_eq!(Decision::from_sqlstate("42501"), Decision::Denied);
    assert_eq!(Decision::from_audit("allowed"), Decision::Allowed);
}

#[test]
fn global_is_one_registry() {
    assert!(Arc::ptr_eq(Metrics::global(), Metrics::global()));
}
