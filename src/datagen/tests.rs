use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType,
};

use super::*;

fn col<'a>(b: &'a RecordBatch, name: &str) -> &'a dyn Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_ref()
}

fn strs(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    col(b, name)
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_owned))
        .collect()
}

fn i64s(b: &RecordBatch, name: &str) -> Vec<i64> {
    col(b, name).as_primitive::<Int64Type>().values().to_vec()
}

fn ts(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    col(b, name)
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .collect()
}

fn is_digits(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_digit())
}

#[test]
fn schemas_match_batches() {
    let b = chunk_batches(42, 0, 1, 200);
    for ((s, t), batch) in TABLES.iter().zip(b.into_array()) {
        assert_eq!(batch.schema(), table_schema(s, t).unwrap(), "{s}.{t}");
    }
    assert!(table_schema("clinical", "nope").is_none());
}

#[test]
fn chunk_is_deterministic() {
    let a = chunk_batches(42, 3, 196_609, 2_000);
    let b = chunk_batches(42, 3, 196_609, 2_000);
    assert_eq!(a, b);
    // a shorter chunk is a prefix of a longer one
    let short = chunk_batches(42, 3, 196_609, 500);
    assert_eq!(short.patients, a.patients.slice(0, 500));
    // other seeds / chunks differ
    let c = chunk_batches(43, 3, 196_609, 2_000);
    assert_ne!(a.patients, c.patients);
    let d = chunk_batches(42, 4, 196_609, 2_000);
    assert_ne!(a.observations, d.observations);
}

#[test]
fn field_formats() {
    let b = chunk_batches(42, 0, 1, 5_000);
    let p = &b.patients;
    let sites: BTreeSet<String> = (1..=12).map(|i| format!("S{i:02}")).collect();

    for ssn in strs(p, "ssn").into_iter().flatten() {
        let parts: Vec<&str> = ssn.split('-').collect();
        assert_eq!(parts.len(), 3, "{ssn}");
        assert_eq!(
            (parts[0].len(), parts[1].len(), parts[2].len()),
            (3, 2, 4),
            "{ssn}"
        );
        assert!(parts.iter().all(|x| is_digits(x)), "{ssn}");
        assert!(ssn.starts_with('9'), "fictitious 9xx area: {ssn}");
    }
    for zip in strs(p, "zip").into_iter().map(Option::unwrap) {
        assert!(zip.len() == 5 && is_digits(&zip), "{zip}");
    }
    let mrns: Vec<String> = strs(p, "mrn").into_iter().map(Option::unwrap).collect();
    for mrn in &mrns {
        assert!(
            mrn.len() == 11 && mrn.starts_with("MRN") && is_digits(&mrn[3..]),
            "{mrn}"
        );
    }
    assert_eq!(
        mrns.iter().collect::<BTreeSet<_>>().len(),
        mrns.len(),
        "MRNs are unique"
    );
    // Opaque: an MRN is not the patient id (padded) nor in its order.
    let ids = i64s(p, "patient_id");
    let padded = ids
        .iter()
        .zip(&mrns)
        .filter(|(id, m)| m[3..].trim_start_matches('0') == id.to_string())
        .count();
    assert_eq!(padded, 0, "MRNs spell patient ids");
    let ascending = mrns.windows(2).filter(|w| w[0] < w[1]).count();
    assert!(
        (mrns.len() * 2 / 5..mrns.len() * 3 / 5).contains(&ascending),
        "MRNs follow patient ids: {ascending}"
    );
    for phone in strs(p, "phone").into_iter().flatten() {
        assert_eq!(phone.len(), 12, "{phone}");
        assert_eq!(&phone[3..10], "-555-01", "{phone}");
    }
    for (id, email) in ids.iter().zip(strs(p, "email")) {
        let Some(email) = email else { continue };
        assert!(
            email.ends_with("@example.org") || email.ends_with("@example.com"),
            "{email}"
        );
        let local = email.split('@').next().unwrap_or_default();
        let number = local.trim_start_matches(|c: char| !c.is_ascii_digit());
        assert_ne!(number, id.to_string(), "e-mail spells the patient id");
    }
    for sex in strs(p, "sex").into_iter().map(Option::unwrap) {
        assert!(["F", "M", "U"].contains(&sex.as_str()));
    }
    for batch in [&b.patients, &b.encounters, &b.claims] {
        for s in strs(batch, "site_id").into_iter().map(Option::unwrap) {
            assert!(sites.contains(&s), "{s}");
        }
    }
    let e = &b.encounters;
    for npi in strs(e, "attending_npi").into_iter().map(Option::unwrap) {
        assert!(npi.len() == 10 && is_digits(&npi), "{npi}");
    }
    for t in strs(e, "encounter_type").into_iter().map(Option::unwrap) {
        assert!(["inpatient", "outpatient", "emergency"].contains(&t.as_str()));
    }
    let known_dx: BTreeSet<&str> = vocab::ICD10_CODES.iter().map(|(c, _)| *c).collect();
    for dx in strs(e, "primary_dx").into_iter().map(Option::unwrap) {
        assert!(known_dx.contains(dx.as_str()), "{dx}");
    }
    // units match LOINC codes
    let o = &b.observations;
    let units: BTreeMap<&str, &str> = vocab::LOINC_CODES
        .iter()
        .map(|(c, _, u)| (*c, *u))
        .collect();
    for (code, unit) in strs(o, "loinc_code").into_iter().zip(strs(o, "unit")) {
        assert_eq!(units[code.unwrap().as_str()], unit.unwrap());
    }
    // Record ids: positive, unique, and opaque: neither in patient order
    // nor carrying the patient id (or their encounter's id) in any
    // computable way.
    let enc_of: BTreeMap<i64, i64> = i64s(e, "encounter_id")
        .into_iter()
        .zip(i64s(e, "patient_id"))
        .collect();
    for (batch, name) in [
        (e, "encounter_id"),
        (o, "observation_id"),
        (&b.claims, "claim_id"),
    ] {
        let ids = i64s(batch, name);
        let pids = i64s(batch, "patient_id");
        assert!(ids.iter().all(|&i| i > 0), "{name} not positive");
        assert_eq!(
            ids.iter().collect::<BTreeSet<_>>().len(),
            ids.len(),
            "{name} not unique"
        );
        let ascending = ids.windows(2).filter(|w| w[0] < w[1]).count();
        assert!(
            (ids.len() * 2 / 5..ids.len() * 3 / 5).contains(&ascending),
            "{name} follows generation order: {ascending} of {}",
            ids.len()
        );
        for k in [10, 100, 1_000, 10_000] {
            let derived = ids.iter().zip(&pids).filter(|(i, p)| *i / k == **p).count();
            assert!(derived * 100 < ids.len(), "{name} / {k} gives patient ids");
        }
        let spelled = ids
            .iter()
            .zip(&pids)
            .filter(|(i, p)| **p >= 1_000 && i.to_string().contains(&p.to_string()))
            .count();
        assert!(spelled * 20 < ids.len(), "{name} spells patient ids");
    }
    // Observations belong to an encounter of the same patient.
    for (enc, pid) in i64s(o, "encounter_id")
        .into_iter()
        .zip(i64s(o, "patient_id"))
    {
        assert_eq!(
            enc_of.get(&enc),
            Some(&pid),
            "observation of an unknown encounter"
        );
    }
}

/// Properties of a 10,000-patient generation (one chunk).
#[test]
fn ten_thousand_patients() {
    let b = chunk_batches(42, 0, 1, 10_000);
    println!(
        "rows: patients={} encounters={} observations={} claims={} consents={}",
        b.patients.num_rows(),
        b.encounters.num_rows(),
        b.observations.num_rows(),
        b.claims.num_rows(),
        b.consents.num_rows()
    );
    assert_eq!(b.patients.num_rows(), 10_000);
    let per_patient = |n: usize| n as f64 / 10_000.0;
    let enc = per_patient(b.encounters.num_rows());
    assert!((4.0..6.5).contains(&enc), "encounters/patient {enc}");
    let obs_per_enc = b.observations.num_rows() as f64 / b.encounters.num_rows() as f64;
    assert!(
        (3.0..5.5).contains(&obs_per_enc),
        "observations/encounter {obs_per_enc}"
    );

    // > 89 years old on 2026-01-01 (~3%)
    let births = col(&b.patients, "birth_date")
        .as_primitive::<Date32Type>()
        .values()
        .to_vec();
    let cutoff_90 = days_from_civil(1936, 1, 1); // born on/before => >= 90 at the anchor
    let over_89 = births.iter().filter(|&&d| d <= cutoff_90).count();
    assert!((150..=500).contains(&over_89), "over-89 count {over_89}");
    assert!(births.iter().all(|&d| d < ANCHOR_DAY));

    let deceased = col(&b.patients, "deceased").as_boolean().true_count();
    assert!((50..800).contains(&deceased), "deceased {deceased}");
    let email_nulls = col(&b.patients, "email").null_count();
    assert!(email_nulls > 0 && email_nulls < 2_000);

    // open encounters exist; discharge after admit otherwise
    let admit = ts(&b.encounters, "admit_ts");
    let discharge = ts(&b.encounters, "discharge_ts");
    let open = discharge.iter().filter(|d| d.is_none()).count();
    assert!(open > 0, "no open encounters");
    for (a, d) in admit.iter().zip(&discharge) {
        let a = a.unwrap();
        assert!(a < ANCHOR_TS);
        if let Some(d) = d {
            assert!(*d > a && *d <= ANCHOR_TS);
        }
    }

    // HbA1c cohort exists with realistic values
    let o = &b.observations;
    let codes = strs(o, "loinc_code");
    let values = col(o, "value_num")
        .as_primitive::<Float64Type>()
        .values()
        .to_vec();
    let a1c: Vec<f64> = codes
        .iter()
        .zip(&values)
        .filter(|(c, _)| c.as_deref() == Some("4548-4"))
        .map(|(_, v)| *v)
        .collect();
    assert!(a1c.len() > 1_000, "HbA1c observations {}", a1c.len());
    assert!(a1c.iter().all(|v| (4.0..=15.0).contains(v)));
    assert!(a1c.iter().filter(|v| **v >= 6.5).count() > 300);

    // claims: denial_reason iff denied, allowed null iff pending
    let c = &b.claims;
    let status = strs(c, "status");
    let denial = strs(c, "denial_reason");
    let allowed = col(c, "allowed_amount").as_primitive::<Decimal128Type>();
    let billed = col(c, "billed_amount").as_primitive::<Decimal128Type>();
    let mut counts = BTreeMap::new();
    for i in 0..c.num_rows() {
        let s = status[i].as_deref().unwrap();
        *counts.entry(s.to_owned()).or_insert(0usize) += 1;
        assert_eq!(s == "denied", denial[i].is_some());
        assert_eq!(s == "pending", allowed.is_null(i));
        assert!(billed.value(i) > 0);
        if s == "paid" {
            assert!(allowed.value(i) > 0 && allowed.value(i) <= billed.value(i));
        }
    }
    assert!(counts["paid"] > counts["denied"] && counts["denied"] > 0 && counts["pending"] > 0);

    // consents: repeated records per (patient, purpose), expired ones, latest-wins rates
    let k = &b.consents;
    let pid = i64s(k, "patient_id");
    let purpose = strs(k, "purpose");
    let granted = col(k, "granted").as_boolean();
    let recorded = ts(k, "recorded_at");
    let expires = ts(k, "expires_at");
    let mut latest: BTreeMap<(i64, String), (i64, bool)> = BTreeMap::new();
    let mut per_key: BTreeMap<(i64, String), usize> = BTreeMap::new();
    let mut expired = 0;
    for i in 0..k.num_rows() {
        let key = (pid[i], purpose[i].clone().unwrap());
        let rec = recorded[i].unwrap();
        *per_key.entry(key.clone()).or_default() += 1;
        let e = latest.entry(key).or_insert((rec, granted.value(i)));
        assert!(rec >= e.0, "consents not chronological");
        *e = (rec, granted.value(i));
        if let Some(x) = expires[i] {
            assert!(x > rec);
            if x < ANCHOR_TS {
                expired += 1;
            }
        }
    }
    let repeated = per_key.values().filter(|&&n| n > 1).count();
    assert!(repeated > 1_000, "repeated consent keys {repeated}");
    assert!(expired > 500, "expired consents {expired}");
    assert!(expires.iter().filter(|x| x.is_none()).count() > k.num_rows() / 2);
    let rate = |p: &str| {
        let v: Vec<bool> = latest
            .iter()
            .filter(|((_, q), _)| q == p)
            .map(|(_, (_, g))| *g)
            .collect();
        v.iter().filter(|g| **g).count() as f64 / v.len() as f64
    };
    // Research opt-in among all patients (latest record granted; no record = no consent).
    let research_latest: Vec<(i64, bool)> = latest
        .iter()
        .filter(|((_, q), _)| q == "research")
        .map(|((_, _), (rec, g))| (*rec, *g))
        .collect();
    let research = research_latest.iter().filter(|(_, g)| *g).count() as f64 / 10_000.0;
    println!("research opt-in (latest record granted, all patients): {research:.3}");
    assert!(
        (0.30..=0.42).contains(&research),
        "research opt-in {research}"
    );
    assert!(rate("research") < 0.5);
    for p in ["treatment", "payment", "operations"] {
        let r = rate(p);
        assert!((0.95..=0.98).contains(&r), "{p} opt-in {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_writes_readable_delta_tables() {
    use datafusion::prelude::{SessionConfig, SessionContext};

    let dir = tempfile::tempdir().unwrap();
    let opts = DatagenOptions {
        data_dir: dir.path().to_path_buf(),
        patients: 3_000,
        seed: 42,
    };
    let report = generate(&opts).await.unwrap();
    assert_eq!(report.tables.len(), 5);
    assert_eq!(report.tables[0], ("clinical.patients".to_string(), 3_000));

    let expected = chunk_batches(42, 0, 1, 3_000).into_array();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    for (((s, t), (name, rows)), batch) in TABLES.iter().zip(&report.tables).zip(&expected) {
        assert_eq!(name, &format!("{s}.{t}"));
        assert_eq!(*rows, batch.num_rows() as u64, "{name}");
        let path = table_dir(dir.path(), s, t);
        let url = deltalake::ensure_table_uri(path.to_str().unwrap()).unwrap();
        let table = deltalake::open_table(url).await.unwrap();
        assert_eq!(table.version(), Some(0));
        table.update_datafusion_session(&ctx.state()).unwrap();
        let provider = table.table_provider().await.unwrap();
        // Same names, order and nullability; Utf8 columns are exposed as Utf8View
        // by the Delta scan.
        let provider_schema = provider.schema();
        for (got, want) in provider_schema.fields().iter().zip(batch.schema().fields()) {
            assert_eq!(got.name(), want.name(), "{name}");
            assert_eq!(
                got.is_nullable(),
                want.is_nullable(),
                "{name}.{}",
                got.name()
            );
            let want_type = match want.data_type() {
                DataType::Utf8 => DataType::Utf8View,
                t => t.clone(),
            };
            assert_eq!(got.data_type(), &want_type, "{name}.{}", got.name());
        }
        assert_eq!(provider_schema.fields().len(), batch.num_columns());
        ctx.register_table(format!("{s}_{t}"), provider).unwrap();
        let out = ctx
            .sql(&format!("SELECT * FROM {s}_{t}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        // single file per table for one chunk => scan order == generation order
        let out = datafusion::arrow::compute::concat_batches(&provider_schema, &out).unwrap();
        // Strings come back as Utf8View: cast to the generator's schema to compare.
        let cols = out
            .columns()
            .iter()
            .zip(batch.schema().fields())
            .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()).unwrap())
            .collect();
        let out = RecordBatch::try_new(batch.schema(), cols).unwrap();
        assert_eq!(&out, batch, "{name} round trip");
    }

    // A second run must refuse to overwrite.
    let err = generate(&opts).await.unwrap_err();
    assert!(err.to_string().contains("already exist"), "{err}");
}

/// Timing: `DATAGEN_BENCH_PATIENTS=100000 cargo test --lib datagen::tests::bench -- --ignored --nocapture`
/// (`DATAGEN_BENCH_DIR=<dir>` keeps the output, `DATAGEN_BENCH_WRITE_ONLY=1` skips the
/// generation-only pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_generate() {
    let patients: u64 = std::env::var("DATAGEN_BENCH_PATIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = match std::env::var("DATAGEN_BENCH_DIR") {
        Ok(d) => {
            let p = PathBuf::from(d);
            let _ = std::fs::remove_dir_all(&p);
            p
        }
        Err(_) => tempfile::tempdir().unwrap().keep(),
    };
    if std::env::var_os("DATAGEN_BENCH_WRITE_ONLY").is_none() {
        let t0 = Instant::now();
        let mut gen_rows = 0;
        for chunk in 0..patients.div_ceil(CHUNK_PATIENTS) {
            let first = chunk * CHUNK_PATIENTS;
            let n = CHUNK_PATIENTS.min(patients - first) as usize;
            let b = chunk_batches(42, chunk, first as i64 + 1, n);
            gen_rows += b.into_array().iter().map(|b| b.num_rows()).sum::<usize>();
        }
        println!("generation only: {gen_rows} rows in {:?}", t0.elapsed());
    }

    let opts = DatagenOptions {
        data_dir: dir.clone(),
        patients,
        seed: 42,
    };
    let report = generate(&opts).await.unwrap();
    let total: u64 = report.tables.iter().map(|(_, n)| n).sum();
    println!(
        "generate(): {patients} patients, {total} rows in {:?}",
        report.elapsed
    );
    for (t, n) in &report.tables {
        println!("  {t}: {n}");
    }
    let size = dir_size(&dir);
    println!(
        "  on disk: {:.1} MiB ({})",
        size as f64 / 1048576.0,
        dir.display()
    );
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}
