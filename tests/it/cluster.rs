//! Distributed execution on loopback: a coordinator (`lakeward serve` with
//! `[cluster] workers`) and two `lakeward worker` processes over the shared
//! dataset, compared with a single-node server statement by statement, for
//! every role, patient accounting included; workers refusing requests
//! without the cluster token, over plaintext, or with a stage that reads a
//! table outside a policy barrier; a worker killed between statements.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    self, ANALYST, AUDITOR, CLINICIAN_S01, RESEARCHER, Role, ServeOpts, Served, connect_role,
    data_dir, serve_binary_opts, sqlstate, temp_dir,
};

pub(crate) const TOKEN_ENV: &str = "LAKEWARD_CLUSTER_TOKEN";
pub(crate) const TOKEN: &str = "cluster-token-for-the-loopback-tests-0123456789";

/// A running `lakeward worker`.
pub(crate) struct WorkerProcess {
    child: std::process::Child,
    port: u16,
}

impl WorkerProcess {
    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `lakeward worker` over the shared dataset with `token`.
fn start_worker(token: &str) -> WorkerProcess {
    start_worker_on(token, &data_dir().display().to_string(), &[])
}

/// Start `lakeward worker` serving the tables under `root` (a directory or
/// an object store URL) with `token` and more environment variables, the
/// shared dataset's certificate and keys.
pub(crate) fn start_worker_on(token: &str, root: &str, env: &[(&str, &str)]) -> WorkerProcess {
    let data = data_dir();
    let port = free_port();
    let config = format!(
        r#"[tls]
cert_file = "{d}/tls/server.crt"
key_file = "{d}/tls/server.key"
[data]
root = "{root}"
[auth]
issuer = "{iss}"
audience = "{aud}"
public_keys = [{{ kid = "demo-es256", alg = "ES256", file = "{d}/keys/jwt-public.pem" }}]
[policy]
pseudonym_key_env = "{pseudonym_env}"
[cluster]
listen = "127.0.0.1:{port}"
ca_file = "{d}/tls/server.crt"
token_env = "{TOKEN_ENV}"
"#,
        d = data.display(),
        iss = lakeward::config::DEMO_ISSUER,
        aud = lakeward::config::DEMO_AUDIENCE,
        pseudonym_env = support::process::PSEUDONYM_KEY_ENV,
    );
    let cfg = temp_dir("lakeward-it-worker-cfg").join("worker.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut command = support::process::lakeward_command();
    command
        .args([
            "--log",
            "warn,lakeward=info",
            "worker",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .env(TOKEN_ENV, token)
        .envs(env.iter().copied());
    let (child, _log) = support::spawn_until_logged(command, "lakeward worker listening");
    WorkerProcess { child, port }
}

/// `[cluster]` of a coordinator distributing every statement it can.
pub(crate) fn cluster_toml(workers: &[&WorkerProcess]) -> String {
    let urls: Vec<String> = workers.iter().map(|w| format!("\"{}\"", w.url())).collect();
    format!(
        "[cluster]\nworkers = [{}]\nca_file = \"{}\"\ntoken_env = \"{TOKEN_ENV}\"\ndistribute_min_bytes = 0\nbytes_per_task = 1\nstage_metrics = true\n",
        urls.join(", "),
        data_dir().join("tls/server.crt").display()
    )
}

fn start_coordinator(audit_dir: &Path, workers: &[&WorkerProcess]) -> Served {
    let toml = cluster_toml(workers);
    serve_binary_opts(ServeOpts {
        audit_dir,
        extra_toml: &toml,
        env: &[(TOKEN_ENV, TOKEN)],
        ..Default::default()
    })
}

pub(crate) fn distributed_statements(served: &Served) -> usize {
    served
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("statement distributed"))
        .count()
}

/// What a statement answered: its rows as text (sorted unless the
/// statement orders them), or its SQLSTATE.
#[derive(Debug, PartialEq)]
enum Answer {
    Rows(Vec<Vec<Option<String>>>),
    Count(usize),
    Error(String),
}

/// The rows of a simple query's answer, as text.
pub(crate) fn cells(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

async fn answer(client: &tokio_postgres::Client, sql: &str) -> Answer {
    match client.simple_query(sql).await {
        Ok(messages) => {
            let mut rows = cells(&messages);
            let lower = sql.to_ascii_lowercase();
            if lower.contains("limit") {
                // Which rows a LIMIT keeps among ties is up to the plan.
                return Answer::Count(rows.len());
            }
            // Floating-point sums and averages depend on the order their
            // inputs are added in: twelve significant digits are compared.
            for row in &mut rows {
                for cell in row.iter_mut().flatten() {
                    if cell.contains('.')
                        && !cell.contains('-')
                        && let Ok(f) = cell.parse::<f64>()
                    {
                        *cell = format!("{f:.12e}");
                    }
                }
            }
            // Rows in any order (ties under ORDER BY, window orders).
            rows.sort();
            Answer::Rows(rows)
        }
        Err(e) => Answer::Error(sqlstate(&e).unwrap_or_else(|| "none".into())),
    }
}

/// Statements whose answer depends on the order rows are read in, on any
/// engine: random order, aggregates of values in arrival order, ranks over
/// ties (every `ssn` a role sees is NULL), plans with their timings.
const ORDER_DEPENDENT: &[&str] = &[
    "random()",
    "array_agg",
    "string_agg",
    "explain",
    "order by ssn",
];

fn workloads() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/workloads");
    [
        "claims_by_payer_month.sql",
        "hba1c_cohort.sql",
        "top_dx_per_site.sql",
        "many_small_groups.sql",
    ]
    .iter()
    .map(|f| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .trim_end_matches(';')
            .to_owned()
    })
    .collect()
}

fn corpus_file() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/queries.sql");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("--"))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect()
}

/// Every statement answers the same on the cluster as on a single node,
/// for `role`. Returns how many statements were compared.
async fn compare(single: &Served, cluster: &Served, role: Role, statements: &[String]) -> usize {
    let a = connect_role(single.addr(), role.name, role.purpose).await;
    let b = connect_role(cluster.addr(), role.name, role.purpose).await;
    let mut differing = Vec::new();
    for sql in statements {
        let lower = sql.to_ascii_lowercase();
        if ORDER_DEPENDENT.iter().any(|m| lower.contains(m)) {
            continue;
        }
        let (x, y) = (answer(&a, sql).await, answer(&b, sql).await);
        if x != y {
            let short = |a: &Answer| format!("{a:?}").chars().take(400).collect::<String>();
            differing.push(format!(
                "{sql}\n  single node: {}\n  cluster:     {}",
                short(&x),
                short(&y)
            ));
        }
    }
    assert!(
        differing.is_empty(),
        "{} of {} statements answer differently on the cluster as {}:\n{}",
        differing.len(),
        statements.len(),
        role.name,
        differing.join("\n")
    );
    statements.len()
}

fn audit_dir(name: &str) -> PathBuf {
    temp_dir(name)
}

#[test]
fn two_workers_answer_the_workloads_and_the_corpus_as_one_node_for_every_role() {
    two_workers_answer_as_one_node(&[ANALYST, CLINICIAN_S01, RESEARCHER, AUDITOR]);
}

fn two_workers_answer_as_one_node(roles: &[Role]) {
    let w1 = start_worker(TOKEN);
    let w2 = start_worker(TOKEN);
    let single_audit = audit_dir("lakeward-it-cluster-single");
    let single = serve_binary_opts(ServeOpts {
        audit_dir: &single_audit,
        ..Default::default()
    });
    let cluster_audit = audit_dir("lakeward-it-cluster-coord");
    let cluster = start_coordinator(&cluster_audit, &[&w1, &w2]);
    let mut statements = workloads();
    statements.extend(corpus_file());

    support::runtime().block_on(async {
        for role in roles {
            compare(&single, &cluster, *role, &statements).await;
        }
    });
    let distributed = distributed_statements(&cluster);
    assert!(
        distributed >= 40,
        "only {distributed} statements were distributed"
    );
    // Stage metrics: logged per stage, with what each stage sent.
    let stages: Vec<String> = cluster
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("distributed stage"))
        .cloned()
        .collect();
    assert!(
        stages
            .iter()
            .any(|l| l.contains("tasks=2") && !l.contains("bytes_sent=0")),
        "no stage of two tasks that sent bytes: {:?}",
        stages.iter().take(5).collect::<Vec<_>>()
    );
    // The patients each statement touched, as the audit accounts them, are
    // the same: the taps that ran on workers were collected.
    support::runtime().block_on(async {
        let auditor = connect_role(single.addr(), AUDITOR.name, AUDITOR.purpose).await;
        let users: Vec<String> = roles.iter().map(|r| format!("'{}'", r.name)).collect();
        let accounted = |instance: String| {
            format!(
                "SELECT s.query_fingerprint, p.disclosure, count(*), sum(p.patient_id), \
                 min(p.patient_id), max(p.patient_id), s.\"user\" \
                 FROM audit.patient_access p JOIN audit.access_log s ON s.event_id = p.event_id \
                 WHERE s.instance = '{instance}' AND s.\"user\" IN ({}) \
                 AND s.query_fingerprint NOT LIKE '%LIMIT%' \
                 GROUP BY s.query_fingerprint, p.disclosure, s.\"user\"",
                users.join(", ")
            )
        };
        let rows = |sql: String| {
            let auditor = &auditor;
            async move {
                let mut rows = cells(&auditor.simple_query(&sql).await.unwrap());
                rows.sort();
                rows
            }
        };
        // Both servers ship their records every 200 ms.
        let (mut one, mut two) = (Vec::new(), Vec::new());
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let a = rows(accounted(format!("bin-{}", single.port))).await;
            let b = rows(accounted(format!("bin-{}", cluster.port))).await;
            let settled = !a.is_empty() && a == one && b == two;
            (one, two) = (a, b);
            if settled && one == two {
                break;
            }
        }
        assert!(
            one.len() > 50,
            "too few accounted statements: {}",
            one.len()
        );
        let differing: Vec<String> = one
            .iter()
            .filter(|r| !two.contains(r))
            .chain(two.iter().filter(|r| !one.contains(r)))
            .map(|r| format!("{r:?}"))
            .collect();
        assert!(
            differing.is_empty(),
            "patient accounting differs between one node and the cluster:\n{}",
            differing.join("\n")
        );
        // (After the accounting comparison: these run once more.)
        // Every analytic workload runs on the workers for the analyst
        // (sorted results included: the head stage merges sorted stage
        // outputs on the coordinator).
        let analyst = connect_role(cluster.addr(), ANALYST.name, ANALYST.purpose).await;
        for sql in workloads() {
            let before = distributed_statements(&cluster);
            analyst.simple_query(&sql).await.expect("workload");
            let mut after = before;
            for _ in 0..40 {
                after = distributed_statements(&cluster);
                if after > before {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(after, before + 1, "ran locally: {sql}");
        }
    });
}

/// A worker URL list for a plain DataFusion session (the test acting as a
/// coordinator of its own).
#[derive(Clone)]
struct Urls(Vec<url::Url>);

impl datafusion_distributed::WorkerResolver for Urls {
    fn get_urls(&self) -> datafusion::error::Result<Vec<url::Url>> {
        Ok(self.0.clone())
    }
}

/// A DataFusion session distributing over `workers` through `channels`,
/// with one of the shared dataset's raw Parquet files registered as `raw`:
/// a plan that reads patients with no policy in between.
async fn raw_session(
    workers: &[&WorkerProcess],
    channels: Option<lakeward::cluster::coordinator::TlsChannels>,
) -> datafusion::prelude::SessionContext {
    use datafusion_distributed::{DistributedExt, SessionStateBuilderExt};
    let urls = Urls(workers.iter().map(|w| w.url().parse().unwrap()).collect());
    let mut builder = datafusion::execution::SessionStateBuilder::new()
        .with_default_features()
        .with_distributed_planner()
        .with_distributed_worker_resolver(urls)
        .with_distributed_file_scan_config_bytes_per_partition(1)
        .unwrap();
    if let Some(c) = channels {
        builder = builder.with_distributed_channel_resolver(c);
    }
    let ctx = datafusion::prelude::SessionContext::from(builder.build());
    let table = data_dir().join("clinical/patients");
    let file = std::fs::read_dir(&table)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a data file");
    ctx.register_parquet("raw", file.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    ctx
}

fn channels(token: &str) -> lakeward::cluster::coordinator::TlsChannels {
    let config = lakeward::config::ClusterConfig {
        ca_file: Some(data_dir().join("tls/server.crt")),
        ..Default::default()
    };
    lakeward::cluster::coordinator::TlsChannels::new(&config, token).unwrap()
}

const RAW_SQL: &str = "SELECT site_id, count(*) FROM raw GROUP BY site_id";

#[test]
fn workers_refuse_requests_without_the_token_over_plaintext_and_stages_reading_raw_tables() {
    let w1 = start_worker(TOKEN);
    let w2 = start_worker(TOKEN);
    support::runtime().block_on(async {
        // A plan that reads a table's files directly, with the right token:
        // refused by the worker's stage check.
        let ctx = raw_session(&[&w1, &w2], Some(channels(TOKEN))).await;
        let plan = ctx
            .sql(RAW_SQL)
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        assert!(
            plan.name() == "DistributedExec",
            "the raw plan was not distributed: {}",
            plan.name()
        );
        let err = ctx.sql(RAW_SQL).await.unwrap().collect().await.unwrap_err();
        assert!(
            err.to_string().contains("stage refused"),
            "a stage reading raw files ran: {err}"
        );
        // Another token: refused before anything is decoded.
        let wrong = "another-token-another-token-another-token-0000";
        let ctx = raw_session(&[&w1, &w2], Some(channels(wrong))).await;
        let err = ctx.sql(RAW_SQL).await.unwrap().collect().await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cluster token required") || text.contains("Unauthenticated"),
            "a request with another token was not refused as unauthenticated: {text}"
        );
        // No TLS: datafusion-distributed's own plaintext connection.
        let plain = Urls(vec![
            format!("http://127.0.0.1:{}", w1.port).parse().unwrap(),
            format!("http://127.0.0.1:{}", w2.port).parse().unwrap(),
        ]);
        use datafusion_distributed::{DistributedExt, SessionStateBuilderExt};
        let state = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
            .with_distributed_planner()
            .with_distributed_worker_resolver(plain)
            .with_distributed_channel_resolver(
                datafusion_distributed::grpc::DefaultChannelResolver::default(),
            )
            .build();
        let ctx = datafusion::prelude::SessionContext::from(state);
        assert!(
            ctx.sql(RAW_SQL).await.unwrap().collect().await.is_err(),
            "a plaintext request was answered"
        );
    });
    // Both workers still serve (a refusal is not a crash).
    let single_audit = audit_dir("lakeward-it-cluster-refusals");
    let cluster = start_coordinator(&single_audit, &[&w1, &w2]);
    support::runtime().block_on(async {
        let c = connect_role(cluster.addr(), ANALYST.name, ANALYST.purpose).await;
        let rows = c
            .simple_query("SELECT payer, count(*) FROM claims.claims GROUP BY payer")
            .await
            .unwrap();
        assert!(rows.len() > 2);
        // A distributed statement through a cursor in a transaction, a
        // prepared statement, then the session reset.
        let grouped = "SELECT payer, status, count(*) FROM claims.claims GROUP BY payer, status";
        let all = cells(&c.simple_query(grouped).await.unwrap()).len();
        c.batch_execute("BEGIN").await.unwrap();
        c.batch_execute(&format!("DECLARE cur CURSOR FOR {grouped}"))
            .await
            .unwrap();
        let first = cells(&c.simple_query("FETCH 2 FROM cur").await.unwrap());
        assert_eq!(first.len(), 2, "a cursor over a distributed statement");
        let rest = cells(&c.simple_query("FETCH ALL FROM cur").await.unwrap());
        assert_eq!(first.len() + rest.len(), all);
        c.batch_execute("CLOSE cur; ROLLBACK").await.unwrap();
        // DISCARD ALL forgets the declared purpose too.
        c.batch_execute("DISCARD ALL; SET lakeward.purpose = 'operations'")
            .await
            .unwrap();
        let prepared = c.query(grouped, &[]).await.unwrap();
        assert_eq!(prepared.len(), all, "the extended protocol answers alike");
    });
    assert!(distributed_statements(&cluster) >= 1);
}

/// The SQLSTATE of a distributed statement that failed, whose message
/// names no table or worker address.
fn clean_failure(err: &tokio_postgres::Error) -> String {
    let state = sqlstate(err).expect("a SQLSTATE");
    assert!(!state.is_empty());
    let message = err
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(
        !message.contains("claims") && !message.contains("127.0.0.1"),
        "the error names internals: {message}"
    );
    state
}

/// The SQLSTATEs (`NULL` for success) of the completion records of
/// `analyst`'s statements on `cluster` whose fingerprint is `LIKE
/// fingerprint`, in order, once `expected` of them are in the audit log
/// (or after ten seconds, whatever is there).
async fn completion_states(
    cluster: &Served,
    fingerprint: &str,
    expected: usize,
) -> Vec<Vec<String>> {
    let auditor = connect_role(cluster.addr(), AUDITOR.name, AUDITOR.purpose).await;
    let mut found = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        found = crate::audit::text_rows(
            &auditor,
            &format!(
                "SELECT c.sqlstate FROM audit.access_log c \
                 JOIN audit.access_log s ON s.event_id = c.parent_event_id \
                 WHERE c.event = 'completion' AND s.instance = 'bin-{}' \
                 AND s.\"user\" = 'analyst' AND s.query_fingerprint LIKE '{fingerprint}' \
                 ORDER BY c.seq",
                cluster.port
            ),
        )
        .await;
        if found.len() >= expected {
            break;
        }
    }
    found
}

#[test]
fn a_killed_worker_fails_the_statement_cleanly_and_it_is_audited() {
    let w1 = start_worker(TOKEN);
    let mut w2 = start_worker(TOKEN);
    let audit = audit_dir("lakeward-it-cluster-killed");
    let cluster = start_coordinator(&audit, &[&w1, &w2]);
    let sql = "SELECT payer, status, count(*) FROM claims.claims GROUP BY payer, status";
    support::runtime().block_on(async {
        let c = connect_role(cluster.addr(), ANALYST.name, ANALYST.purpose).await;
        assert!(c.simple_query(sql).await.is_ok(), "the cluster answers");
        let _ = w2.child.kill();
        let _ = w2.child.wait();
        let err = c
            .simple_query(sql)
            .await
            .expect_err("a statement over a killed worker must fail");
        let state = clean_failure(&err);
        // The session and the server carry on.
        assert!(
            c.simple_query("SELECT 1").await.is_ok(),
            "the session survives the failed statement"
        );
        // The failed statement's completion record says how it ended.
        let found = completion_states(&cluster, "%GROUP BY payer, status%", 2).await;
        assert_eq!(found.len(), 2, "two completion records: {found:?}");
        assert_eq!(
            found[0][0], "NULL",
            "the first statement succeeded: {found:?}"
        );
        assert_eq!(
            found[1][0], state,
            "the second failed as the client saw: {found:?}"
        );
    });
}

#[test]
fn a_worker_killed_while_its_stage_streams_fails_the_statement_cleanly() {
    let w1 = start_worker(TOKEN);
    let mut w2 = start_worker(TOKEN);
    let audit = audit_dir("lakeward-it-cluster-killed-mid");
    let cluster = start_coordinator(&audit, &[&w1, &w2]);
    // Tens of millions of rows: the stages are still streaming when the
    // cursor has handed out its first rows.
    let sql = "SELECT a.claim_id, b.claim_id FROM claims.claims a \
               JOIN claims.claims b ON a.payer = b.payer";
    support::runtime().block_on(async {
        let c = connect_role(cluster.addr(), ANALYST.name, ANALYST.purpose).await;
        c.batch_execute("BEGIN").await.unwrap();
        c.batch_execute(&format!("DECLARE big CURSOR FOR {sql}"))
            .await
            .unwrap();
        let first = cells(&c.simple_query("FETCH 5 FROM big").await.unwrap());
        assert_eq!(first.len(), 5, "the distributed join streams");
        assert_eq!(
            distributed_statements(&cluster),
            1,
            "the join runs on the workers"
        );
        let _ = w2.child.kill();
        let _ = w2.child.wait();
        let err = c
            .simple_query("FETCH ALL FROM big")
            .await
            .expect_err("a stage lost mid-stream must fail the statement");
        let state = clean_failure(&err);
        c.batch_execute("ROLLBACK").await.unwrap();
        assert!(
            c.simple_query("SELECT 1").await.is_ok(),
            "the session survives the failed statement"
        );
        let found = completion_states(&cluster, "%a.payer = b.payer%", 1).await;
        assert_eq!(found.len(), 1, "one completion record: {found:?}");
        assert_eq!(
            found[0][0], state,
            "it records the failure the client saw: {found:?}"
        );
    });
}
