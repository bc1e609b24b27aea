//! The oracle side of the tests: what the raw Delta tables hold, read with
//! plain DataFusion (or lakeward's engine with no policy), never through the
//! server under test.

use std::path::Path;
use std::sync::OnceLock;

use super::{engine, off_runtime, runtime};

/// Load an oracle once per test run: `load` runs on a plain thread in the
/// background runtime with the shared dataset's folder; every later call
/// returns what the first one loaded.
pub fn load_once<T, F, Fut>(cell: &'static OnceLock<T>, load: F) -> &'static T
where
    T: Send + Sync,
    F: FnOnce(std::path::PathBuf) -> Fut + Send,
    Fut: std::future::Future<Output = T>,
{
    cell.get_or_init(|| {
        let dir = super::data_dir().to_path_buf();
        off_runtime(move || runtime().block_on(load(dir)))
    })
}

/// Oracle: the patient ids a role sees under `purpose` by consent alone,
/// computed in Rust from the raw consent rows (not through lakeward's SQL).
pub fn consented_patients(purpose: &str) -> std::collections::BTreeSet<i64> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use futures::StreamExt;
    static CACHE: OnceLock<
        std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeSet<i64>>>,
    > = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(s) = cache.lock().unwrap().get(purpose) {
        return s.clone();
    }
    let purpose_owned = purpose.to_owned();
    let set = off_runtime(move || {
        runtime().block_on(async move {
            let engine = engine();
            let state = engine.state_for(None);
            let run = |sql: String| {
                let state = state.clone();
                let engine = engine.clone();
                async move {
                    let stmt = lakeward::rewrite::gate::parse(&sql, Default::default()).unwrap().remove(0);
                    let plan = engine.plan(&state, stmt).await.unwrap();
                    let mut stream = engine.execute(&state, plan, false).await.unwrap();
                    let mut batches = Vec::new();
                    while let Some(b) = stream.next().await {
                        batches.push(b.unwrap());
                    }
                    batches
                }
            };
            let now = chrono::Utc::now().naive_utc().and_utc().timestamp_micros();
            // Latest unexpired record per patient for this purpose.
            let mut latest: std::collections::BTreeMap<i64, (i64, bool)> = Default::default();
            for b in run("SELECT patient_id, granted, recorded_at, expires_at, purpose FROM governance.consents".into()).await {
                let b = datafusion::arrow::compute::cast(b.column(4), &datafusion::arrow::datatypes::DataType::Utf8)
                    .map(|p| (b, p))
                    .unwrap();
                let (b, p) = b;
                let ids = b.column(0).as_primitive::<Int64Type>();
                let granted = b.column(1).as_boolean();
                let rec = b.column(2).as_primitive::<TimestampMicrosecondType>();
                let exp = b.column(3).as_primitive::<TimestampMicrosecondType>();
                let p = p.as_string::<i32>();
                for i in 0..b.num_rows() {
                    if p.value(i) != purpose_owned || (!exp.is_null(i) && exp.value(i) <= now) {
                        continue;
                    }
                    let (id, r, g) = (ids.value(i), rec.value(i), granted.value(i));
                    let e = latest.entry(id).or_insert((r, g));
                    // Latest wins; on a tie a refusal wins.
                    if r > e.0 || (r == e.0 && !g) {
                        *e = (r, g);
                    }
                }
            }
            let opt_in = purpose_owned == "research";
            let mut visible = std::collections::BTreeSet::new();
            for b in run("SELECT patient_id FROM clinical.patients".into()).await {
                let ids = b.column(0).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    let id = ids.value(i);
                    let ok = match latest.get(&id) {
                        Some((_, g)) => *g,
                        None => !opt_in,
                    };
                    if ok {
                        visible.insert(id);
                    }
                }
            }
            visible
        })
    });
    cache
        .lock()
        .unwrap()
        .insert(purpose.to_owned(), set.clone());
    set
}

/// How many patients the analyst sees under `purpose` (all sites, consent only).
pub fn visible_patients(purpose: &str) -> u64 {
    consented_patients(purpose).len() as u64
}

/// Raw rows as text (`None` for NULL), read with plain DataFusion from the
/// test dataset: the oracle side of the enforcement tests, never lakeward.
pub async fn raw_rows(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> Vec<Vec<Option<String>>> {
    use datafusion::arrow::util::display::array_value_to_string;
    let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| (!c.is_null(i)).then(|| array_value_to_string(c, i).unwrap()))
                    .collect(),
            );
        }
    }
    out
}

/// A DataFusion context over the raw demo tables, registered by bare table
/// name (`patients`, `encounters`, `observations`, `claims`).
pub async fn raw_context(dir: &Path) -> datafusion::prelude::SessionContext {
    let ctx = datafusion::prelude::SessionContext::new();
    for (schema, table) in [
        ("clinical", "patients"),
        ("clinical", "encounters"),
        ("clinical", "observations"),
        ("claims", "claims"),
    ] {
        let path = dir.join(schema).join(table);
        let url = deltalake::ensure_table_uri(path.to_str().unwrap()).unwrap();
        let delta = deltalake::open_table(url)
            .await
            .expect("open raw delta table");
        delta.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table(table, delta.table_provider().await.unwrap())
            .unwrap();
    }
    ctx
}

/// One raw patient row (the oracle's view: every value unmasked).
#[derive(Debug, Clone)]
pub struct RawPatient {
    pub id: i64,
    pub mrn: String,
    pub first: String,
    pub last: String,
    pub ssn: Option<String>,
    pub birth: chrono::NaiveDate,
    pub zip: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub site: String,
}

/// Every raw patient of a [`raw_context`].
pub async fn raw_patients(ctx: &datafusion::prelude::SessionContext) -> Vec<RawPatient> {
    let text = |v: &Option<String>| v.clone().unwrap();
    let sql = "SELECT patient_id, mrn, first_name, last_name, ssn, birth_date, zip, phone, email, site_id FROM patients";
    raw_rows(ctx, sql)
        .await
        .iter()
        .map(|r| RawPatient {
            id: r[0].as_deref().unwrap().parse().unwrap(),
            mrn: text(&r[1]),
            first: text(&r[2]),
            last: text(&r[3]),
            ssn: r[4].clone(),
            birth: chrono::NaiveDate::parse_from_str(r[5].as_deref().unwrap(), "%Y-%m-%d").unwrap(),
            zip: text(&r[6]),
            phone: r[7].clone(),
            email: r[8].clone(),
            site: text(&r[9]),
        })
        .collect()
}

/// An amount as its text spells it, in cents: "126.60" → 12660.
pub fn cents(s: &str) -> i64 {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<2}");
    let v = whole.parse::<i64>().expect("amount") * 100 + frac[..2].parse::<i64>().expect("amount");
    if neg { -v } else { v }
}
