//! The baseline for benchmarks: plain DataFusion over the same Delta
//! tables lakeward serves, with no policy, no wire protocol and no audit.
//! `bench/run.sh` runs it next to lakeward and PostgreSQL to show what
//! enforcement costs. A benchmark tool, not part of the server: built only
//! with the `bench-tools` feature (`cargo build --features bench-tools
//! --bin lakeward-baseline`). Prints one JSON object per run.
//!
//! * `point` plans `SELECT … WHERE patient_id = $1` once and binds a random
//!   id per execution, as a prepared statement does, from C concurrent tasks
//!   (ids from `1..=patients`, or drawn from the ids a column holds with
//!   `--ids-from`: record ids are opaque, so they cannot be computed);
//! * `query` plans and runs a statement R times (`--file` or `--sql`);
//! * `export` is `query` for one large result, reported as rows/s;
//! * `dump` writes one table as CSV to stdout (no header; NULL is an empty
//!   field), which `bench/postgres/load.sh` copies into PostgreSQL so that
//!   both servers hold the same rows;
//! * `audit-fill` writes years of audit history straight into a Delta audit
//!   table (no server): N statements, each a `statement` and a `completion`
//!   record chained as lakeward chains them, with the patient sets of
//!   patient access accounting (`bench/audit/patient-access.sh`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use datafusion::catalog::TableProvider;
use datafusion::common::ParamValues;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

/// What `lakeward-baseline` measures.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    Point,
    Query,
    Export,
    Dump,
    AuditFill,
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Point => "point",
        Mode::Query => "query",
        Mode::Export => "export",
        Mode::Dump => "dump",
        Mode::AuditFill => "audit-fill",
    }
}

/// Plain DataFusion over lakeward's Delta tables: the benchmarks' baseline.
#[derive(Debug, Parser)]
#[command(name = "lakeward-baseline")]
pub struct BaselineArgs {
    #[arg(value_enum)]
    pub mode: Mode,
    /// Folder with the Delta tables (`<schema>/<table>`); every mode but
    /// `audit-fill` reads it.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Point lookups: ids are drawn from 1..=patients. `audit-fill`: the
    /// patients (ids 1..=patients) the history's statements touch.
    #[arg(long, default_value_t = 1_000_000)]
    pub patients: i64,
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub sql: Option<String>,
    /// `point`: draw the ids from those `schema.table.column` holds (at
    /// most about a million of them, evenly spread) instead of
    /// `1..=patients`. Record ids (encounter, observation, claim) are keyed
    /// permutations, not computable from patient ids.
    #[arg(long)]
    pub ids_from: Option<String>,
    /// `dump`: the table to write, `schema.table`. `audit-fill`: the folder
    /// (or URL) of the Delta audit table to create and fill.
    #[arg(long)]
    pub table: Option<String>,
    #[command(flatten)]
    pub fill: FillArgs,
    /// Which Delta scan: lakeward's (the one it serves with) or deltalake's
    /// stock table provider.
    #[arg(long, value_enum, default_value = "lakeward")]
    pub scan: Scan,
}

/// The Delta table provider of a baseline run.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Scan {
    Lakeward,
    Deltalake,
}

fn main() -> std::process::ExitCode {
    let args = BaselineArgs::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Run one measurement and print its JSON line.
async fn run(a: BaselineArgs) -> anyhow::Result<()> {
    if let Mode::AuditFill = a.mode {
        return audit_fill(&a).await;
    }
    let data = a
        .data
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("{} needs --data", mode_name(a.mode)))?;
    let ctx = context(data, a.scan).await?;
    match a.mode {
        Mode::Point => point(ctx, &a).await,
        Mode::Query | Mode::Export => query(ctx, &a).await,
        Mode::Dump => dump(ctx, &a).await?,
        Mode::AuditFill => {}
    }
    Ok(())
}

const POINT: &str = "SELECT patient_id, sex, site_id FROM clinical.patients WHERE patient_id = $1";

/// Every Delta table under `data`, registered as `schema.table`.
async fn context(data: &std::path::Path, scan: Scan) -> anyhow::Result<SessionContext> {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema("datafusion", "public")
        .with_create_default_catalog_and_schema(true)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let ctx = SessionContext::new_with_config(config);
    for loc in lakeward::engine::discover_tables(data).map_err(|e| anyhow::anyhow!("{e}"))? {
        if loc.name.schema == "audit" {
            continue;
        }
        let provider: Arc<dyn TableProvider> = match scan {
            Scan::Lakeward => {
                // The scan lakeward serves with (snapshot file list and
                // statistics kept in memory), without the policy around it.
                let p = lakeward::engine::delta::LatestDeltaProvider::open_with_refresh(
                    &loc.url,
                    Duration::from_secs(24 * 3600),
                )
                .await?;
                p.update_datafusion_session(&ctx.state())?;
                Arc::new(p)
            }
            Scan::Deltalake => {
                let url = deltalake::ensure_table_uri(&loc.url)?;
                let table = deltalake::open_table(url).await?;
                table.update_datafusion_session(&ctx.state())?;
                table.table_provider().await?
            }
        };
        ctx.sql(&format!("CREATE SCHEMA IF NOT EXISTS {}", loc.name.schema))
            .await?;
        ctx.register_table(format!("{}.{}", loc.name.schema, loc.name.table), provider)?;
    }
    Ok(ctx)
}

/// Median, 99th percentile (ms) and throughput of `lat` over `wall`.
fn report(mode: &str, lat: &mut [Duration], wall: Duration, rows: u64, extra: &str) {
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{{\"system\":\"datafusion\",\"mode\":\"{mode}\",{extra}\"n\":{},\"median_ms\":{:.3},\"p99_ms\":{:.3},\"per_s\":{:.1},\"rows\":{rows},\"rows_per_s\":{:.0}}}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat.len() as f64 / wall.as_secs_f64(),
        rows as f64 / wall.as_secs_f64(),
    );
}

async fn drain(ctx: &SessionContext, plan: datafusion::logical_expr::LogicalPlan) -> u64 {
    let mut stream = ctx
        .execute_logical_plan(plan)
        .await
        .expect("plan")
        .execute_stream()
        .await
        .expect("execute");
    let mut rows = 0u64;
    while let Some(b) = stream.next().await {
        rows += b.expect("batch").num_rows() as u64;
    }
    rows
}

/// Most ids `--ids-from` keeps in memory.
const MAX_SAMPLED_IDS: i64 = 1_000_000;

/// About [`MAX_SAMPLED_IDS`] ids of `schema.table.column`, evenly spread.
async fn sample_ids(ctx: &SessionContext, column: &str) -> anyhow::Result<Vec<i64>> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let (table, col) = column
        .rsplit_once('.')
        .filter(|(t, c)| t.contains('.') && lakeward::policy::ident::is_plain_ident(c))
        .ok_or_else(|| anyhow::anyhow!("--ids-from needs schema.table.column"))?;
    let count = ctx.table(table).await?.count().await? as i64;
    let step = (count / MAX_SAMPLED_IDS).max(1);
    let sql = format!(
        "SELECT CAST({col} AS BIGINT) FROM (SELECT {col}, row_number() OVER () AS n FROM {table}) \
         WHERE n % {step} = 0 AND {col} IS NOT NULL"
    );
    let mut ids = Vec::new();
    for b in ctx.sql(&sql).await?.collect().await? {
        ids.extend(
            b.column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied(),
        );
    }
    anyhow::ensure!(!ids.is_empty(), "{column} holds no ids");
    Ok(ids)
}

async fn point(ctx: SessionContext, a: &BaselineArgs) {
    let sql = a.sql.as_deref().unwrap_or(POINT);
    let plan = ctx.state().create_logical_plan(sql).await.expect("prepare");
    let ids: Option<Arc<Vec<i64>>> = match &a.ids_from {
        Some(column) => Some(Arc::new(
            sample_ids(&ctx, column).await.expect("--ids-from"),
        )),
        None => None,
    };
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let (ctx, plan, ids, patients) = (ctx.clone(), plan.clone(), ids.clone(), a.patients);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut rows = 0;
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ c as u64;
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = match &ids {
                    Some(ids) => ids[(x % ids.len() as u64) as usize],
                    None => (x % patients as u64) as i64 + 1,
                };
                let t = Instant::now();
                let bound = plan
                    .clone()
                    .with_param_values(ParamValues::List(vec![ScalarValue::Int64(Some(id)).into()]))
                    .expect("bind");
                rows += drain(&ctx, bound).await;
                lat.push(t.elapsed());
            }
            (lat, rows)
        }));
    }
    let mut lat = Vec::new();
    let mut rows = 0;
    for t in tasks {
        let (l, r) = t.await.expect("client");
        lat.extend(l);
        rows += r;
    }
    let extra = format!("\"clients\":{},", a.clients);
    report("point", &mut lat, start.elapsed(), rows, &extra);
}

async fn query(ctx: SessionContext, a: &BaselineArgs) {
    let sql = match (&a.sql, &a.file) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).expect("query file"),
        _ => panic!("--sql or --file"),
    };
    let name = a
        .file
        .as_ref()
        .and_then(|f| f.file_stem())
        .map_or("query".into(), |s| s.to_string_lossy().into_owned());
    let mut lat = Vec::new();
    let mut rows = 0;
    let start = Instant::now();
    for _ in 0..a.runs {
        let t = Instant::now();
        let plan = ctx.state().create_logical_plan(&sql).await.expect("plan");
        rows = drain(&ctx, plan).await;
        lat.push(t.elapsed());
    }
    let extra = format!("\"query\":\"{name}\",");
    report(mode_name(a.mode), &mut lat, start.elapsed(), rows, &extra);
}

/// Every row of `--table` as CSV on stdout, batch by batch.
async fn dump(ctx: SessionContext, a: &BaselineArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let table = a
        .table
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("dump needs --table schema.table"))?;
    let df = ctx.table(table).await?;
    let mut stream = df.execute_stream().await?;
    let stdout = std::io::stdout().lock();
    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(false)
        .with_date_format("%Y-%m-%d".into())
        .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.f".into())
        .build(std::io::BufWriter::with_capacity(1 << 20, stdout));
    while let Some(batch) = stream.next().await {
        writer.write(&batch?)?;
    }
    writer.into_inner().flush()?;
    Ok(())
}

// --- audit-fill -----------------------------------------------------------------

/// `audit-fill`: the shape of the audit history it writes. Every statement
/// is a point read, a cohort or an aggregate (the point reads are what the
/// two shares leave); each is a `statement` record and a `completion`
/// record carrying its patient set, exactly as lakeward writes them.
#[derive(Debug, clap::Args)]
pub struct FillArgs {
    /// Statements to write (twice as many records).
    #[arg(long, default_value_t = 10_000_000)]
    pub statements: u64,
    /// Seed of everything drawn (users, sessions, patients, ids, times).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of statements returning a cohort (`--cohort-min` to
    /// `--cohort-max` patients, log-uniform, random ids).
    #[arg(long, default_value_t = 0.03)]
    pub cohort_share: f64,
    /// Share of statements aggregating over most of the patients (their
    /// set goes to `patients_aggregated`).
    #[arg(long, default_value_t = 0.02)]
    pub aggregate_share: f64,
    /// Share of the patients an aggregate leaves out, drawn per statement
    /// (consent opt-outs, filters): 0.05 = all but a random 5 %.
    #[arg(long, default_value_t = 0.05)]
    pub aggregate_gap: f64,
    /// Share of point reads returning 2 or 3 patients (2 twice as often as
    /// 3, random ids); the others return one.
    #[arg(long, default_value_t = 0.3)]
    pub multi_patient_share: f64,
    #[arg(long, default_value_t = 10)]
    pub cohort_min: u32,
    #[arg(long, default_value_t = 5000)]
    pub cohort_max: u32,
    /// Years the history spans, ending now.
    #[arg(long, default_value_t = 7.0)]
    pub years: f64,
    /// Records per Delta commit (a commit also ends before its patient
    /// sets pass 1 GiB of text: an Arrow string column holds 2 GiB).
    #[arg(long, default_value_t = 100_000)]
    pub batch_records: usize,
    /// The chain's instance name (a serving lakeward sharing the table
    /// needs another); the commits carry `lakeward-audit:<instance>`.
    #[arg(long, default_value = "bench-history")]
    pub instance: String,
}

mod fill {
    //! The history `audit-fill` writes: users, sessions, statements, their
    //! patient sets, and the chain.

    use lakeward::audit::record::{AuditRecord, RecordBody, decision, event};
    use rand::{Rng, RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use roaring::{RoaringBitmap, RoaringTreemap};

    use super::FillArgs;

    /// What a role does and may declare.
    struct Role {
        name: &'static str,
        purposes: &'static [&'static str],
        users: usize,
    }

    const ROLES: &[Role] = &[
        Role {
            name: "clinician",
            purposes: &["treatment"],
            users: 240,
        },
        Role {
            name: "analyst",
            purposes: &["operations", "payment"],
            users: 40,
        },
        Role {
            name: "researcher",
            purposes: &["research"],
            users: 20,
        },
    ];
    const CLINICIAN: usize = 0;
    const ANALYST: usize = 1;
    const RESEARCHER: usize = 2;

    const SURNAMES: &[&str] = &[
        "smith",
        "johnson",
        "williams",
        "brown",
        "jones",
        "garcia",
        "miller",
        "davis",
        "rodriguez",
        "martinez",
        "hernandez",
        "lopez",
        "gonzalez",
        "wilson",
        "anderson",
        "thomas",
        "taylor",
        "moore",
        "jackson",
        "martin",
        "lee",
        "perez",
        "thompson",
        "white",
        "harris",
        "sanchez",
        "clark",
        "ramirez",
        "lewis",
        "robinson",
        "walker",
        "young",
        "allen",
        "king",
        "wright",
        "scott",
        "torres",
        "nguyen",
        "hill",
        "flores",
    ];
    const APPS: &[&str] = &[
        "psql",
        "chart-viewer",
        "care-dashboard",
        "tableau",
        "jupyter",
        "PostgreSQL JDBC Driver",
        "DBeaver",
    ];
    const BREAK_GLASS: &[&str] = &[
        "ED: unconscious patient, no consent on file",
        "rapid response: transfer from outside facility",
        "covering physician, after hours",
        "trauma activation",
    ];

    /// One statement shape: its literal-free text (the key condition is
    /// appended), tables and columns, rows per patient.
    struct Shape {
        text: &'static str,
        tables: &'static [&'static str],
        columns: &'static [&'static str],
        rows_per_patient: u32,
    }

    const POINT: &[Shape] = &[
        Shape {
            text: "SELECT patient_id, mrn, last_name, birth_date, site_id FROM clinical.patients WHERE patient_id",
            tables: &["clinical.patients"],
            columns: &[
                "clinical.patients.patient_id",
                "clinical.patients.mrn",
                "clinical.patients.last_name",
                "clinical.patients.birth_date",
                "clinical.patients.site_id",
            ],
            rows_per_patient: 1,
        },
        Shape {
            text: "SELECT encounter_id, admit_ts, encounter_type, primary_dx FROM clinical.encounters WHERE patient_id",
            tables: &["clinical.encounters"],
            columns: &[
                "clinical.encounters.encounter_id",
                "clinical.encounters.admit_ts",
                "clinical.encounters.encounter_type",
                "clinical.encounters.primary_dx",
                "clinical.encounters.patient_id",
            ],
            rows_per_patient: 6,
        },
        Shape {
            text: "SELECT observation_id, loinc_code, value_num, unit, observed_at FROM clinical.observations WHERE patient_id",
            tables: &["clinical.observations"],
            columns: &[
                "clinical.observations.observation_id",
                "clinical.observations.loinc_code",
                "clinical.observations.value_num",
                "clinical.observations.unit",
                "clinical.observations.observed_at",
                "clinical.observations.patient_id",
            ],
            rows_per_patient: 40,
        },
        Shape {
            text: "SELECT claim_id, service_date, cpt_code, billed_amount, status FROM claims.claims WHERE patient_id",
            tables: &["claims.claims"],
            columns: &[
                "claims.claims.claim_id",
                "claims.claims.service_date",
                "claims.claims.cpt_code",
                "claims.claims.billed_amount",
                "claims.claims.status",
                "claims.claims.patient_id",
            ],
            rows_per_patient: 9,
        },
    ];

    const COHORT: &[Shape] = &[
        Shape {
            text: "SELECT o.patient_id, o.value_num, o.observed_at FROM clinical.observations AS o WHERE o.loinc_code = ? AND o.value_num >= ?",
            tables: &["clinical.observations"],
            columns: &[
                "clinical.observations.patient_id",
                "clinical.observations.value_num",
                "clinical.observations.observed_at",
                "clinical.observations.loinc_code",
            ],
            rows_per_patient: 3,
        },
        Shape {
            text: "SELECT patient_id, birth_date, zip, sex FROM clinical.patients WHERE site_id = ? AND birth_date < ?",
            tables: &["clinical.patients"],
            columns: &[
                "clinical.patients.patient_id",
                "clinical.patients.birth_date",
                "clinical.patients.zip",
                "clinical.patients.sex",
                "clinical.patients.site_id",
            ],
            rows_per_patient: 1,
        },
        Shape {
            text: "SELECT e.patient_id, e.admit_ts, e.primary_dx FROM clinical.encounters AS e WHERE e.primary_dx LIKE ? AND e.admit_ts >= ?",
            tables: &["clinical.encounters"],
            columns: &[
                "clinical.encounters.patient_id",
                "clinical.encounters.admit_ts",
                "clinical.encounters.primary_dx",
            ],
            rows_per_patient: 2,
        },
    ];

    const AGGREGATE: &[Shape] = &[
        Shape {
            text: "SELECT payer, date_trunc(?, service_date) AS month, count(*) AS claims, sum(billed_amount) AS billed FROM claims.claims GROUP BY payer, date_trunc(?, service_date) ORDER BY payer, month",
            tables: &["claims.claims"],
            columns: &[
                "claims.claims.payer",
                "claims.claims.service_date",
                "claims.claims.billed_amount",
            ],
            rows_per_patient: 0,
        },
        Shape {
            text: "SELECT e.encounter_type, count(DISTINCT o.patient_id) AS patients, avg(o.value_num) AS mean FROM clinical.observations AS o JOIN clinical.encounters AS e ON e.encounter_id = o.encounter_id WHERE o.loinc_code = ? GROUP BY e.encounter_type",
            tables: &["clinical.encounters", "clinical.observations"],
            columns: &[
                "clinical.encounters.encounter_id",
                "clinical.encounters.encounter_type",
                "clinical.observations.encounter_id",
                "clinical.observations.loinc_code",
                "clinical.observations.patient_id",
                "clinical.observations.value_num",
            ],
            rows_per_patient: 0,
        },
        Shape {
            text: "SELECT site_id, sex, count(*) FROM clinical.patients GROUP BY site_id, sex",
            tables: &["clinical.patients"],
            columns: &["clinical.patients.site_id", "clinical.patients.sex"],
            rows_per_patient: 0,
        },
    ];

    struct User {
        name: String,
        role: usize,
        addr: String,
        app: &'static str,
    }

    struct Session {
        id: String,
        user: usize,
        purpose: &'static str,
        break_glass: Option<String>,
        left: u32,
    }

    /// Counts of what was written.
    #[derive(Debug, Default, Clone)]
    pub struct Tally {
        pub statements: u64,
        pub records: u64,
        pub point: u64,
        pub point_multi: u64,
        pub cohort: u64,
        pub aggregate: u64,
        /// Patients in all sets together (one per statement and patient).
        pub patient_refs: u64,
        /// Characters of base64 patient-set text.
        pub set_text_bytes: u64,
        pub set_text_aggregate_bytes: u64,
    }

    pub struct Generator {
        rng: ChaCha8Rng,
        args: FillArgsCopy,
        users: Vec<User>,
        by_role: [Vec<usize>; 3],
        sessions: [Option<Session>; 3],
        policy_versions: Vec<String>,
        start_us: i64,
        step_us: f64,
        next: u64,
        seq: i64,
        prev_hash: String,
        pub tally: Tally,
        /// Reused bitmap bytes of aggregate sets.
        bits: Vec<u8>,
    }

    /// The arguments the generator keeps.
    struct FillArgsCopy {
        statements: u64,
        patients: u64,
        cohort_share: f64,
        aggregate_share: f64,
        aggregate_gap: f64,
        multi_patient_share: f64,
        cohort_min: u32,
        cohort_max: u32,
        instance: String,
    }

    impl Generator {
        pub fn new(a: &FillArgs, patients: u64, end_us: i64) -> anyhow::Result<Generator> {
            anyhow::ensure!(
                (1..u64::from(u32::MAX)).contains(&patients),
                "--patients must be between 1 and {}",
                u32::MAX - 1
            );
            anyhow::ensure!(
                a.cohort_share >= 0.0
                    && a.aggregate_share >= 0.0
                    && a.cohort_share + a.aggregate_share <= 1.0,
                "--cohort-share and --aggregate-share are shares whose sum is at most 1"
            );
            anyhow::ensure!(
                (0.0..1.0).contains(&a.aggregate_gap),
                "--aggregate-gap must be in [0, 1)"
            );
            anyhow::ensure!(
                (0.0..=1.0).contains(&a.multi_patient_share),
                "--multi-patient-share must be in [0, 1]"
            );
            anyhow::ensure!(
                1 <= a.cohort_min && a.cohort_min <= a.cohort_max,
                "--cohort-min must be at least 1 and at most --cohort-max"
            );
            let mut seed = [0u8; 32];
            seed[0..8].copy_from_slice(&a.seed.to_le_bytes());
            seed[8..32].copy_from_slice(b"lakeward-audit-fill-----");
            let mut rng = ChaCha8Rng::from_seed(seed);
            let mut users = Vec::new();
            let mut by_role: [Vec<usize>; 3] = Default::default();
            for (r, role) in ROLES.iter().enumerate() {
                for n in 0..role.users {
                    let surname = SURNAMES[rng.random_range(0..SURNAMES.len())];
                    let initial = (b'a' + rng.random_range(0..26u8)) as char;
                    by_role[r].push(users.len());
                    users.push(User {
                        name: format!("{initial}{surname}{n:02}"),
                        role: r,
                        addr: format!(
                            "10.{}.{}.{}",
                            10 + r,
                            rng.random_range(0..=255u8),
                            rng.random_range(1..=254u8)
                        ),
                        app: APPS[rng.random_range(0..APPS.len())],
                    });
                }
            }
            // A policy change every three months or so.
            let years_us = (a.years * 365.25 * 86_400e6) as i64;
            let versions = ((a.years * 4.0).ceil() as usize).max(1);
            let policy_versions = (0..versions)
                .map(|_| {
                    let mut b = [0u8; 32];
                    rng.fill_bytes(&mut b);
                    hex::encode(b)
                })
                .collect();
            let statements = a.statements.max(1);
            Ok(Generator {
                rng,
                args: FillArgsCopy {
                    statements,
                    patients,
                    cohort_share: a.cohort_share,
                    aggregate_share: a.aggregate_share,
                    aggregate_gap: a.aggregate_gap,
                    multi_patient_share: a.multi_patient_share,
                    cohort_min: a.cohort_min,
                    cohort_max: a.cohort_max,
                    instance: a.instance.clone(),
                },
                users,
                by_role,
                sessions: [None, None, None],
                policy_versions,
                start_us: end_us - years_us,
                step_us: years_us as f64 / statements as f64,
                next: 0,
                seq: 0,
                prev_hash: lakeward::audit::chain::GENESIS.to_owned(),
                tally: Tally::default(),
                bits: Vec::new(),
            })
        }

        pub fn done(&self) -> bool {
            self.next >= self.args.statements
        }

        pub fn head(&self) -> (i64, &str) {
            (self.seq, &self.prev_hash)
        }

        fn uuid(&mut self) -> String {
            let mut b = [0u8; 16];
            self.rng.fill_bytes(&mut b);
            uuid::Builder::from_random_bytes(b).into_uuid().to_string()
        }

        fn unit(&mut self) -> f64 {
            // (0, 1]
            (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 + f64::EPSILON / 2.0
        }

        fn patient(&mut self) -> u64 {
            self.rng.random_range(1..=self.args.patients)
        }

        /// The session a statement of `role` runs in (sessions last a few
        /// dozen statements).
        fn session(&mut self, role: usize) -> usize {
            if self.sessions[role].as_ref().is_none_or(|s| s.left == 0) {
                let users = &self.by_role[role];
                let user = users[self.rng.random_range(0..users.len())];
                let purposes = ROLES[role].purposes;
                let purpose = purposes[self.rng.random_range(0..purposes.len())];
                let break_glass = (role == CLINICIAN && self.rng.random_bool(0.005))
                    .then(|| BREAK_GLASS[self.rng.random_range(0..BREAK_GLASS.len())].to_owned());
                let left = 1 + (-(self.unit().ln()) * 20.0) as u32;
                let id = self.uuid();
                self.sessions[role] = Some(Session {
                    id,
                    user,
                    purpose,
                    break_glass,
                    left,
                });
            }
            if let Some(s) = self.sessions[role].as_mut() {
                s.left -= 1;
                s.user
            } else {
                0
            }
        }

        /// All patients but a random `gap` share of them.
        fn aggregate_set(&mut self) -> RoaringTreemap {
            let p = self.args.patients;
            let bytes = (p as usize + 1).div_ceil(8);
            self.bits.clear();
            self.bits.resize(bytes, 0xFF);
            // Ids 1..=p: no 0, nothing past p.
            self.bits[0] &= !1;
            for id in p + 1..(bytes as u64 * 8) {
                self.bits[(id / 8) as usize] &= !(1u8 << (id % 8));
            }
            let gap = self.args.aggregate_gap;
            if gap > 0.0 {
                let scale = 1.0 / (1.0 - gap).ln();
                let mut id = 0u64;
                loop {
                    // Geometric distance to the next patient left out.
                    id += 1 + (self.unit().ln() * scale) as u64;
                    if id > p {
                        break;
                    }
                    self.bits[(id / 8) as usize] &= !(1u8 << (id % 8));
                }
            }
            RoaringTreemap::from_bitmaps([(0u32, RoaringBitmap::from_lsb0_bytes(0, &self.bits))])
        }

        /// The next statement: its two records, sealed.
        pub fn statement(&mut self) -> [AuditRecord; 2] {
            let i = self.next;
            self.next += 1;
            let draw = self.unit();
            let (kind, role) = if draw <= self.args.aggregate_share {
                (
                    2,
                    if self.rng.random_bool(0.7) {
                        ANALYST
                    } else {
                        RESEARCHER
                    },
                )
            } else if draw <= self.args.aggregate_share + self.args.cohort_share {
                let r = self.unit();
                (
                    1,
                    if r < 0.5 {
                        RESEARCHER
                    } else if r < 0.8 {
                        ANALYST
                    } else {
                        CLINICIAN
                    },
                )
            } else {
                (
                    0,
                    if self.rng.random_bool(0.85) {
                        CLINICIAN
                    } else {
                        ANALYST
                    },
                )
            };
            let user = self.session(role);
            let mut set = RoaringTreemap::new();
            let (shape, text, aggregated, rows, duration_ms) = match kind {
                0 => {
                    let n = if self.rng.random_bool(self.args.multi_patient_share) {
                        self.tally.point_multi += 1;
                        if self.rng.random_bool(2.0 / 3.0) {
                            2
                        } else {
                            3
                        }
                    } else {
                        1
                    };
                    while set.len() < n {
                        let p = self.patient();
                        set.insert(p);
                    }
                    self.tally.point += 1;
                    let shape = &POINT[self.rng.random_range(0..POINT.len())];
                    let key = match n {
                        1 => " = ?".to_owned(),
                        n => format!(" IN ({})", vec!["?"; n as usize].join(", ")),
                    };
                    let rows = n * u64::from(shape.rows_per_patient);
                    let ms = 1.0 + 6.0 * self.unit() * self.unit();
                    (shape, format!("{}{key}", shape.text), false, rows, ms)
                }
                1 => {
                    let (lo, hi) = (
                        f64::from(self.args.cohort_min).ln(),
                        f64::from(self.args.cohort_max).ln(),
                    );
                    let n = ((lo + (hi - lo) * self.unit()).exp().round() as u64)
                        .clamp(1, self.args.patients);
                    while set.len() < n {
                        let p = self.patient();
                        set.insert(p);
                    }
                    self.tally.cohort += 1;
                    let shape = &COHORT[self.rng.random_range(0..COHORT.len())];
                    let rows = n * u64::from(shape.rows_per_patient);
                    let ms = 40.0 + 400.0 * self.unit();
                    (shape, shape.text.to_owned(), false, rows, ms)
                }
                _ => {
                    set = self.aggregate_set();
                    self.tally.aggregate += 1;
                    let shape = &AGGREGATE[self.rng.random_range(0..AGGREGATE.len())];
                    let rows = self.rng.random_range(4..400u64);
                    let ms = 150.0 + 2500.0 * self.unit();
                    (shape, shape.text.to_owned(), true, rows, ms)
                }
            };
            let encoded = lakeward::audit::patients::encode(&set);
            let bounds = lakeward::audit::patients::bounds(&set);
            self.tally.patient_refs += set.len();
            let text_len = encoded.as_ref().map_or(0, |t| t.len() as u64);
            self.tally.set_text_bytes += text_len;
            if aggregated {
                self.tally.set_text_aggregate_bytes += text_len;
            }
            let ts = self.start_us
                + (i as f64 * self.step_us) as i64
                + (self.unit() * self.step_us * 0.5) as i64;
            let version = ((i as u128 * self.policy_versions.len() as u128)
                / u128::from(self.args.statements)) as usize;
            let statement_id = self.uuid();
            let completion_id = self.uuid();
            let u = &self.users[user];
            let session = self.sessions[role]
                .as_ref()
                .map(|s| (s.id.clone(), s.purpose, s.break_glass.clone()))
                .unwrap_or_default();
            let statement = RecordBody {
                instance: self.args.instance.clone(),
                seq: 0,
                event_id: statement_id.clone(),
                ts,
                event: event::STATEMENT.into(),
                parent_event_id: None,
                session_id: Some(session.0),
                user: u.name.clone(),
                roles: vec![ROLES[u.role].name.to_owned()],
                purpose: Some(session.1.to_owned()),
                break_glass: session.2,
                client_addr: Some(u.addr.clone()),
                application_name: Some(u.app.to_owned()),
                statement_kind: Some("SELECT".into()),
                query_fingerprint: Some(text),
                tables: shape.tables.iter().map(|t| (*t).to_owned()).collect(),
                columns: shape.columns.iter().map(|c| (*c).to_owned()).collect(),
                policy_version: Some(self.policy_versions[version].clone()),
                decision: decision::ALLOWED.into(),
                ..Default::default()
            };
            let (returned, aggregated) = if aggregated {
                (None, encoded)
            } else {
                (encoded, None)
            };
            let completion = RecordBody {
                event_id: completion_id,
                ts: ts + (duration_ms * 1000.0) as i64,
                event: event::COMPLETION.into(),
                parent_event_id: Some(statement_id),
                rows_returned: Some(rows as i64),
                duration_ms: Some((duration_ms * 1000.0).round() / 1000.0),
                patients_returned: returned,
                patients_aggregated: aggregated,
                patient_id_min: bounds.map(|b| b.0),
                patient_id_max: bounds.map(|b| b.1),
                ..statement.clone()
            };
            self.tally.statements += 1;
            self.tally.records += 2;
            [self.seal(statement), self.seal(completion)]
        }

        fn seal(&mut self, mut body: RecordBody) -> AuditRecord {
            self.seq += 1;
            body.seq = self.seq;
            let record = body.seal(&self.prev_hash);
            self.prev_hash.clone_from(&record.hash);
            record
        }
    }
}

/// One commit's worth of records, as an Arrow batch.
struct FillBatch {
    batch: datafusion::arrow::record_batch::RecordBatch,
    last_seq: i64,
    tally: fill::Tally,
    generate: Duration,
}

/// Bytes of the files under `path` (0 for a URL), and how many of them
/// are Parquet files.
fn disk_usage(path: &std::path::Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut parquet = 0;
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    bytes += m.len();
                    if e.path().extension().is_some_and(|x| x == "parquet") {
                        parquet += 1;
                    }
                }
                Err(_) => {}
            }
        }
    }
    (bytes, parquet)
}

/// `audit-fill`: create the audit table and write the history into it, one
/// commit per batch, generation (one thread) overlapping the Parquet
/// writing (the runtime's).
async fn audit_fill(a: &BaselineArgs) -> anyhow::Result<()> {
    use lakeward::audit::delta::AuditTable;
    let location = a
        .table
        .clone()
        .ok_or_else(|| anyhow::anyhow!("audit-fill needs --table <folder of the audit table>"))?;
    let f = &a.fill;
    anyhow::ensure!(f.batch_records >= 2, "--batch-records must be at least 2");
    let local = !location.contains("://");
    if local {
        std::fs::create_dir_all(&location)?;
    }
    let t0 = Instant::now();
    let table = AuditTable::open_or_create(&location, lakeward::audit::record::schema()).await?;
    let app = lakeward::audit::app_id(&f.instance);
    if let Some(v) = table.committed_version(&app).await? {
        anyhow::bail!(
            "{location} already holds records of instance {} (up to seq {v}): delete it, or fill another table",
            f.instance
        );
    }
    let end_us = chrono::Utc::now().timestamp_micros();
    let mut generator = fill::Generator::new(f, a.patients as u64, end_us)?;
    let batch_records = f.batch_records;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<FillBatch>>(1);
    let producer = std::thread::spawn(move || {
        const MAX_SET_TEXT: u64 = 1 << 30;
        while !generator.done() {
            let started = Instant::now();
            let before = generator.tally.clone();
            let mut records = Vec::with_capacity(batch_records);
            while !generator.done()
                && records.len() + 2 <= batch_records.max(2)
                && generator.tally.set_text_bytes - before.set_text_bytes < MAX_SET_TEXT
            {
                records.extend(generator.statement());
            }
            let batch = lakeward::audit::record::to_batch(&records)
                .map_err(|e| anyhow::anyhow!("records to Arrow: {e}"));
            let last_seq = generator.head().0;
            drop(records);
            let now = generator.tally.clone();
            let item = batch.map(|batch| FillBatch {
                batch,
                last_seq,
                tally: fill::Tally {
                    records: now.records - before.records,
                    set_text_bytes: now.set_text_bytes - before.set_text_bytes,
                    ..Default::default()
                },
                generate: started.elapsed(),
            });
            if tx.blocking_send(item).is_err() {
                break;
            }
        }
        generator
    });
    let total_records = f.statements.max(1) * 2;
    let mut written = 0u64;
    let mut commits = 0u64;
    let mut generate = Duration::ZERO;
    let mut write = Duration::ZERO;
    while let Some(item) = rx.recv().await {
        let item = item?;
        let t = Instant::now();
        table.append(vec![item.batch], &app, item.last_seq).await?;
        write += t.elapsed();
        generate += item.generate;
        written += item.tally.records;
        commits += 1;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "[{secs:7.1} s] {written}/{total_records} records ({:.0} records/s), commit {commits}: {} records, {:.1} MB of patient sets",
            written as f64 / secs,
            item.tally.records,
            item.tally.set_text_bytes as f64 / 1e6,
        );
    }
    let generator = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
    let seconds = t0.elapsed().as_secs_f64();
    let t = &generator.tally;
    let (head_seq, head_hash) = generator.head();
    let (bytes, files) = if local {
        disk_usage(std::path::Path::new(&location))
    } else {
        (0, 0)
    };
    eprintln!(
        "audit-fill: {} statements ({} records; {} point reads, {} of them of 2-3 patients, {} cohorts, {} aggregates) over {} patients in {seconds:.0} s; table {:.2} GB in {files} Parquet files, {commits} commits; patient sets {:.2} GB of text ({:.2} GB of it aggregates); chain head seq {head_seq} {head_hash}",
        t.statements,
        t.records,
        t.point,
        t.point_multi,
        t.cohort,
        t.aggregate,
        a.patients,
        bytes as f64 / 1e9,
        t.set_text_bytes as f64 / 1e9,
        t.set_text_aggregate_bytes as f64 / 1e9,
    );
    println!(
        "{}",
        serde_json::json!({
            "mode": "audit-fill",
            "table": location,
            "instance": f.instance,
            "seed": f.seed,
            "patients": a.patients,
            "statements": t.statements,
            "records": t.records,
            "point": t.point,
            "point_multi": t.point_multi,
            "cohort": t.cohort,
            "aggregate": t.aggregate,
            "patient_refs": t.patient_refs,
            "set_text_bytes": t.set_text_bytes,
            "set_text_aggregate_bytes": t.set_text_aggregate_bytes,
            "commits": commits,
            "parquet_files": files,
            "table_bytes": bytes,
            "seconds": (seconds * 10.0).round() / 10.0,
            "generate_seconds": (generate.as_secs_f64() * 10.0).round() / 10.0,
            "write_seconds": (write.as_secs_f64() * 10.0).round() / 10.0,
            "head_seq": head_seq,
            "head_hash": head_hash,
            "end_ts_us": end_us,
            "years": f.years,
            "shares": {
                "cohort": f.cohort_share,
                "aggregate": f.aggregate_share,
                "aggregate_gap": f.aggregate_gap,
                "multi_patient": f.multi_patient_share,
            },
        })
    );
    Ok(())
}
