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
//!   both servers hold the same rows.

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
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Point => "point",
        Mode::Query => "query",
        Mode::Export => "export",
        Mode::Dump => "dump",
    }
}

/// Plain DataFusion over lakeward's Delta tables: the benchmarks' baseline.
#[derive(Debug, Parser)]
#[command(name = "lakeward-baseline")]
pub struct BaselineArgs {
    #[arg(value_enum)]
    pub mode: Mode,
    /// Folder with the Delta tables (`<schema>/<table>`).
    #[arg(long)]
    pub data: PathBuf,
    /// Point lookups: ids are drawn from 1..=patients.
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
    /// `dump`: the table to write, `schema.table`.
    #[arg(long)]
    pub table: Option<String>,
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
    let ctx = context(&a.data, a.scan).await?;
    match a.mode {
        Mode::Point => point(ctx, &a).await,
        Mode::Query | Mode::Export => query(ctx, &a).await,
        Mode::Dump => dump(ctx, &a).await?,
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
