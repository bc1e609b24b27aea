//! Criterion benchmark of the audit writer's group commit: C concurrent
//! sessions each record R statement records and wait for durability, with
//! `fdatasync` (production) and without (benchmark-only mode), so the
//! difference is the cost of durability. Reported as records per second.
//!
//! Run with `cargo bench --bench audit`; results go to docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lakeward::audit::record::RecordBody;
use lakeward::audit::{AuditSettings, Auditor, chain::SigningKey};

const PER_CLIENT: usize = 200;

fn record(i: usize) -> RecordBody {
    RecordBody {
        event_id: format!("bench-{i}"),
        ts: 1_800_000_000_000_000,
        event: "statement".into(),
        session_id: Some("s00000001".into()),
        user: "analyst".into(),
        roles: vec!["analyst".into()],
        purpose: Some("operations".into()),
        statement_kind: Some("SELECT".into()),
        query_fingerprint: Some(
            "SELECT patient_id, last_name FROM clinical.patients WHERE patient_id = $1".into(),
        ),
        tables: vec!["clinical.patients".into()],
        columns: vec![
            "clinical.patients.patient_id".into(),
            "clinical.patients.last_name".into(),
        ],
        policy_version: Some("0123456789abcdef".into()),
        decision: "allowed".into(),
        ..Default::default()
    }
}

fn auditor(rt: &tokio::runtime::Runtime, fsync: bool) -> (Auditor, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = SigningKey::generate_to_file(&dir.path().join("key.pem")).expect("key");
    let settings = AuditSettings {
        dir: dir.path().join("wal"),
        table: dir.path().join("access_log").display().to_string(),
        instance: "bench".into(),
        signing_key: Arc::new(key),
        checkpoint_every_records: 1000,
        checkpoint_every: Duration::from_secs(10),
        ship_every_records: 5000,
        ship_every: Duration::from_secs(1),
        segment_max_bytes: 64 * 1024 * 1024,
        fsync,
        accounting: true,
    };
    (rt.block_on(Auditor::open(settings)).expect("auditor"), dir)
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("audit_group_commit");
    group.sample_size(10);
    for fsync in [true, false] {
        let (auditor, _dir) = auditor(&rt, fsync);
        for clients in [1usize, 16, 64] {
            group.throughput(Throughput::Elements((clients * PER_CLIENT) as u64));
            let name = format!(
                "{}_{clients}_clients",
                if fsync { "fsync" } else { "no_fsync" }
            );
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        rt.block_on(async {
                            let tasks: Vec<_> = (0..clients)
                                .map(|c| {
                                    let a = auditor.clone();
                                    tokio::spawn(async move {
                                        for i in 0..PER_CLIENT {
                                            a.record(record(c * PER_CLIENT + i))
                                                .await
                                                .expect("durable");
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.expect("task");
                            }
                        });
                        total += started.elapsed();
                    }
                    total
                })
            });
        }
        rt.block_on(auditor.close());
    }
    group.finish();
}

criterion_group!(audit_benches, benches);
criterion_main!(audit_benches);
