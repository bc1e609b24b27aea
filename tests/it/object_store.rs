//! Tables and the audit table on S3-compatible object storage: moto's S3
//! server on loopback, datagen writing to it, two lakeward instances
//! serving the same tables and auditing into one shared audit table.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::process::lakeward_with_env;
use crate::support::{ServeOpts, Served, connect_role, serve_binary_opts, temp_dir};

/// moto's S3 API in server mode on a free loopback port.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server with a bucket `lakeward` holding datagen's five Delta
/// tables (300 patients, written straight to the bucket) under `s3://lakeward/lake`;
/// the environment that reaches it.
fn moto_with_lake() -> (Moto, Vec<(&'static str, String)>, &'static str) {
    let moto = start_moto();
    moto.create_bucket("lakeward");
    let env = moto.env();
    let root = "s3://lakeward/lake";
    let out = lakeward_with_env(
        env.clone(),
        &["datagen", "--data-dir", root, "--patients", "300"],
    );
    assert!(
        out.status.success(),
        "datagen to S3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (moto, env, root)
}

fn start_moto() -> Moto {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m moto.server (pip install 'moto[server]')");
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

impl Moto {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment lakeward reads its S3 credentials and endpoint from.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "lakeward-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "lakeward-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_CONDITIONAL_PUT", "etag".into()),
        ]
    }

    fn create_bucket(&self, bucket: &str) {
        let script = format!(
            "import boto3\nboto3.client('s3', endpoint_url='{}', aws_access_key_id='x', \
             aws_secret_access_key='x', region_name='us-east-1').create_bucket(Bucket='{bucket}')",
            self.endpoint()
        );
        let ok = Command::new("python3")
            .args(["-c", &script])
            .status()
            .expect("python3")
            .success();
        assert!(ok, "create bucket {bucket}");
    }
}

async fn analyst_count(served: &Served, sql: &str) -> i64 {
    let client = connect_role(served.addr(), "analyst", "operations").await;
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_serve_and_audit_over_one_object_store() {
    let (moto, env, root) = moto_with_lake();

    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let audit_table = format!("{root}/audit/access_log");
    let wal_a = temp_dir("lakeward-it-s3-wal-a");
    let wal_b = temp_dir("lakeward-it-s3-wal-b");
    let start = |wal: &std::path::Path, instance: &'static str| {
        serve_binary_opts(ServeOpts {
            audit_dir: wal,
            instance: Some(instance),
            env: &env_ref,
            data_root: Some(root),
            audit_table: Some(&audit_table),
            ..Default::default()
        })
    };
    let mut a = start(&wal_a, "replica-a");
    let mut b = start(&wal_b, "replica-b");

    // Both replicas serve the same data.
    let patients_sql = "SELECT count(*) FROM clinical.patients";
    let (na, nb) = (
        analyst_count(&a, patients_sql).await,
        analyst_count(&b, patients_sql).await,
    );
    assert!(na > 250, "the analyst sees the consenting patients: {na}");
    assert_eq!(na, nb, "replicas agree");

    // Both audit at once into the shared table: statements in parallel.
    let work = |served: &Served| {
        let addr = served.addr();
        async move {
            let client = connect_role(addr, "analyst", "operations").await;
            for i in 0..15 {
                client
                    .query(
                        "SELECT count(*) FROM claims.claims WHERE patient_id > $1",
                        &[&(i as i64)],
                    )
                    .await
                    .expect("statement");
            }
        }
    };
    tokio::join!(work(&a), work(&b));

    // Each replica's auditor sees the other's records in the shared table.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let client = connect_role(a.addr(), "auditor", "operations").await;
        let n: i64 = client
            .query_one(
                "SELECT count(DISTINCT instance) FROM audit.access_log \
                 WHERE instance IN ('replica-a', 'replica-b')",
                &[],
            )
            .await
            .expect("audit query")
            .get(0);
        if n == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both chains in the shared audit table"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Drain both (the last records and checkpoints are shipped), then
    // verify the shared table with each replica's segment log.
    tokio::task::block_in_place(|| {
        a.stop();
        b.stop();
    });
    for served in [&a, &b] {
        let out = lakeward_with_env(
            env.clone(),
            &[
                "audit",
                "verify",
                "--config",
                served.config.to_str().unwrap(),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "audit verify: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for instance in ["replica-a", "replica-b"] {
            assert!(
                stdout.contains(&format!("{instance}:")),
                "{instance} chain verified: {stdout}"
            );
        }
    }
}

/// A coordinator and two `lakeward worker`s over tables on object storage:
/// the workers read the files of a scan they never planned, through the
/// store each registers for its tables when it opens them, and answer as a
/// single node does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_read_tables_on_object_storage() {
    use crate::cluster::{TOKEN, TOKEN_ENV, cluster_toml, distributed_statements, start_worker_on};
    let (moto, env, root) = moto_with_lake();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (w1, w2) = tokio::task::block_in_place(|| {
        (
            start_worker_on(TOKEN, root, &env_ref),
            start_worker_on(TOKEN, root, &env_ref),
        )
    });
    let mut coordinator_env = env_ref.clone();
    coordinator_env.push((TOKEN_ENV, TOKEN));
    let toml = cluster_toml(&[&w1, &w2]);
    let audit_table = format!("{root}/audit/access_log");
    let (wal_single, wal_cluster) = (
        temp_dir("lakeward-it-s3-cluster-single"),
        temp_dir("lakeward-it-s3-cluster"),
    );
    let single = serve_binary_opts(ServeOpts {
        audit_dir: &wal_single,
        instance: Some("s3-single"),
        env: &env_ref,
        data_root: Some(root),
        audit_table: Some(&audit_table),
        ..Default::default()
    });
    let cluster = serve_binary_opts(ServeOpts {
        audit_dir: &wal_cluster,
        instance: Some("s3-cluster"),
        env: &coordinator_env,
        data_root: Some(root),
        audit_table: Some(&audit_table),
        extra_toml: &toml,
        ..Default::default()
    });
    for sql in [
        "SELECT payer, status, count(*) FROM claims.claims GROUP BY payer, status ORDER BY 1, 2",
        "SELECT e.encounter_type, count(*) FROM clinical.observations o \
         JOIN clinical.encounters e ON o.encounter_id = e.encounter_id \
         GROUP BY e.encounter_type ORDER BY 1",
    ] {
        let rows = |served: &Served| {
            let addr = served.addr();
            async move {
                let client = connect_role(addr, "analyst", "operations").await;
                let rows = client.simple_query(sql).await.expect(sql);
                format!("{:?}", crate::cluster::cells(&rows))
            }
        };
        let (one, many) = (rows(&single).await, rows(&cluster).await);
        assert!(one.len() > 20, "the single node answers: {one}");
        assert_eq!(one, many, "{sql}");
    }
    assert_eq!(
        distributed_statements(&cluster),
        2,
        "both statements ran on the workers"
    );
}
