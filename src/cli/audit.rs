//! `audit verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;

use super::services::audit_signing_key;

/// A `--from`/`--to` bound: a sequence number, a date or an RFC 3339 time.
fn parse_bound(text: &str, end: bool) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    if let Ok(seq) = text.parse::<i64>() {
        return Ok((Some(seq), None));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok((None, Some(t.timestamp_micros())));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let t = if end {
            d.and_hms_micro_opt(23, 59, 59, 999_999)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        if let Some(t) = t {
            return Ok((None, Some(t.and_utc().timestamp_micros())));
        }
    }
    anyhow::bail!("{text:?} is not a sequence number, a date (YYYY-MM-DD) or an RFC 3339 time")
}

pub(super) async fn audit_verify(
    data_dir: &Path,
    config: Option<&Path>,
    public_keys: &[PathBuf],
    from: Option<String>,
    to: Option<String>,
) -> anyhow::Result<ExitCode> {
    use crate::audit::chain::VerifyingKey;
    let config = match config {
        Some(f) => Config::load(f)?,
        None => Config::demo(data_dir, "127.0.0.1:6432".parse()?),
    };
    let keys = if public_keys.is_empty() {
        vec![audit_signing_key(&config)?.verifying_key()]
    } else {
        public_keys
            .iter()
            .map(|f| VerifyingKey::load_file(f))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut range = crate::audit::verify::Range::default();
    if let Some(f) = &from {
        (range.from_seq, range.from_ts) = parse_bound(f, false)?;
    }
    if let Some(t) = &to {
        (range.to_seq, range.to_ts) = parse_bound(t, true)?;
    }
    let location = config
        .audit
        .table_location(&config.data)
        .ok_or_else(|| anyhow::anyhow!("no audit table configured"))?;
    let table =
        crate::audit::delta::AuditTable::open_existing(&location, crate::audit::record::schema())
            .await?;
    let report =
        crate::audit::verify::verify(&table, config.audit.dir.as_deref(), &keys, range).await?;
    let total: usize = report.records.values().sum();
    match report.first_bad {
        None => {
            println!(
                "audit log whole: {total} records in {} chain(s), {} signed checkpoint(s) verified",
                report.records.len(),
                report.checkpoints
            );
            for (instance, n) in &report.records {
                println!("  {instance}: {n} records");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(bad) => {
            println!("audit log NOT whole: first bad record: {bad}");
            Ok(ExitCode::FAILURE)
        }
    }
}
