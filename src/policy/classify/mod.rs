//! `lakeward policy check --classify`: which served columns look like
//! identifiers, how each is tagged, and how each role sees it (SPEC §10).
//!
//! The command line samples the tables (`engine::sample`, a bounded number
//! of rows per data file) into one [`detect::ColumnSample`] per column; this
//! module judges the samples against the policy. It fails the check when:
//! - a column that looks like an identifier is not classified in
//!   `tables.toml` (schema drift: a new column nobody tagged);
//! - a role held to a de-identification standard (`deidentified` in
//!   `roles.toml`) sees in the clear a column that looks like an identifier
//!   the standard removes, or one tagged as such.
//!
//! No sampled value is kept or printed: the report holds classes and counts.

pub mod detect;

use std::collections::BTreeMap;

use serde::Serialize;

use self::detect::{ColumnSample, IdClass};
use super::compile::{AccessContext, ColumnAccess, Subject, compile};
use super::{Deidentification, Policy};

/// The identifier classes a standard removes.
fn removed_by(standard: Deidentification) -> &'static [IdClass] {
    match standard {
        Deidentification::SafeHarbor => &IdClass::ALL,
        Deidentification::LimitedDataSet => &[
            IdClass::Ssn,
            IdClass::Phone,
            IdClass::Email,
            IdClass::Mrn,
            IdClass::PersonName,
        ],
    }
}

/// Whether a column tagged `tags` may be shown in the clear under
/// `standard` (what the steward declared, whatever the sample says).
fn tags_allow_clear(standard: Deidentification, tags: &[String]) -> bool {
    match standard {
        Deidentification::SafeHarbor => tags.iter().all(|t| t == "safe"),
        Deidentification::LimitedDataSet => !tags.iter().any(|t| t.starts_with("phi.direct")),
    }
}

/// How a table was sampled.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TableSample {
    pub table: String,
    pub files: usize,
    pub rows: u64,
    /// Every data file sampled on its own (else: per scan partition).
    pub per_file: bool,
}

/// One column's findings.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ColumnReport {
    pub table: String,
    pub column: String,
    /// Detected identifier classes (`ssn`, `record_id`, …).
    pub classes: Vec<&'static str>,
    /// Its tags in tables.toml; empty when it is not classified.
    pub tags: Vec<String>,
    /// Non-NULL values sampled, and NULLs.
    pub sampled: u64,
    pub nulls: u64,
    /// Role → `visible`, `mask:<name>`, `null` or `denied`.
    pub seen_as: BTreeMap<String, String>,
}

/// The whole classification.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClassifyReport {
    pub policy_version: String,
    pub rows_per_file: usize,
    pub tables: Vec<TableSample>,
    pub columns: Vec<ColumnReport>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Judge `samples` (`schema.table` → column → sample, in the table's
/// column order) against `policy`.
pub(crate) fn judge(
    policy: &Policy,
    tables: Vec<TableSample>,
    samples: &BTreeMap<String, Vec<(String, ColumnSample)>>,
    rows_per_file: usize,
    today: i32,
) -> ClassifyReport {
    let names: BTreeMap<String, Vec<String>> = samples
        .iter()
        .map(|(t, cols)| (t.clone(), cols.iter().map(|(c, _)| c.clone()).collect()))
        .collect();
    // Column treatment depends on the role alone; a role's first purpose
    // stands for it (grants do not depend on the purpose either).
    let contexts: Vec<(String, Option<Deidentification>, AccessContext)> = policy
        .roles
        .iter()
        .filter_map(|(name, role)| {
            let purpose = *role.purposes.first()?;
            let subject = Subject {
                user: "policy-check".into(),
                role: name.clone(),
                site: Some("<site>".into()),
                purpose,
                break_glass: false,
            };
            compile(policy, &subject, &names).map(|c| (name.clone(), role.deidentified, c))
        })
        .collect();
    let mut columns = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (table, cols) in samples {
        for (column, sample) in cols {
            let classes = sample.classes(today);
            let tags: Vec<String> = policy
                .tables
                .get(table)
                .and_then(|t| t.columns.get(column))
                .cloned()
                .unwrap_or_default();
            let class_names =
                |cs: &[IdClass]| cs.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
            if tags.is_empty() && !classes.is_empty() {
                errors.push(format!(
                    "{table}.{column} is not classified in tables.toml and looks like {}: tag it before anyone sees it",
                    class_names(&classes)
                ));
            } else if !tags.is_empty() && tags.iter().all(|t| t == "safe") && !classes.is_empty() {
                warnings.push(format!(
                    "{table}.{column} is tagged safe but looks like {}",
                    class_names(&classes)
                ));
            }
            let mut seen_as = BTreeMap::new();
            for (role, standard, ctx) in &contexts {
                let access = match ctx.tables.get(table) {
                    None => None,
                    Some(t) => t.columns.iter().find(|(c, _)| c == column).map(|(_, a)| a),
                };
                seen_as.insert(
                    role.clone(),
                    match access {
                        None if !ctx.tables.contains_key(table) => "denied".to_owned(),
                        None | Some(ColumnAccess::Null) => "null".to_owned(),
                        Some(ColumnAccess::Visible) => "visible".to_owned(),
                        Some(ColumnAccess::Masked { mask, .. }) => format!("mask:{mask}"),
                    },
                );
                let (Some(standard), Some(ColumnAccess::Visible)) = (standard, access) else {
                    continue;
                };
                let removed: Vec<IdClass> = classes
                    .iter()
                    .copied()
                    .filter(|c| removed_by(*standard).contains(c))
                    .collect();
                if !removed.is_empty() {
                    errors.push(format!(
                        "{table}.{column} looks like {} and role {role} ({}) sees it in the clear",
                        class_names(&removed),
                        standard.as_str()
                    ));
                } else if !tags_allow_clear(*standard, &tags) {
                    errors.push(format!(
                        "{table}.{column} is tagged {} and role {role} ({}) sees it in the clear",
                        tags.join(", "),
                        standard.as_str()
                    ));
                }
            }
            columns.push(ColumnReport {
                table: table.clone(),
                column: column.clone(),
                classes: classes.iter().map(|c| c.as_str()).collect(),
                tags,
                sampled: sample.sampled(),
                nulls: sample.nulls(),
                seen_as,
            });
        }
    }
    ClassifyReport {
        policy_version: policy.version.clone(),
        rows_per_file,
        tables,
        columns,
        errors,
        warnings,
    }
}

/// The detector's view of an Arrow type.
pub(crate) fn sample_type(t: &datafusion::arrow::datatypes::DataType) -> detect::SampleType {
    use datafusion::arrow::datatypes::DataType as D;
    use detect::SampleType as S;
    match t {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            S::Integer
        }
        D::Float16 | D::Float32 | D::Float64 => S::Float,
        D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) | D::Decimal256(..) => S::Decimal,
        D::Utf8 | D::LargeUtf8 | D::Utf8View => S::Text,
        D::Date32 | D::Date64 => S::Date,
        D::Timestamp(..) => S::Timestamp,
        D::Boolean => S::Boolean,
        _ => S::Other,
    }
}

/// Feed one sampled batch (the table's columns, in `samples`' order) to
/// the detectors; the batch is not kept.
pub(crate) fn add_batch(
    samples: &mut [(String, ColumnSample)],
    batch: &datafusion::arrow::record_batch::RecordBatch,
) {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{
        DataType as D, Date32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    };
    use detect::{SampleType as S, SampleValue as V};
    for (i, (_, sample)) in samples.iter_mut().enumerate() {
        let Some(column) = batch.columns().get(i) else {
            continue;
        };
        let ty = sample_type(column.data_type());
        let target = match ty {
            S::Integer => Some(D::Int64),
            S::Text => Some(D::Utf8),
            S::Date => Some(D::Date32),
            S::Timestamp => Some(D::Timestamp(TimeUnit::Microsecond, None)),
            _ => None,
        };
        let cast_column = target.and_then(|t| cast(column, &t).ok());
        for row in 0..column.len() {
            if column.is_null(row) {
                sample.add_null();
                continue;
            }
            let value = match (&cast_column, ty) {
                (Some(c), S::Integer) => V::Int(c.as_primitive::<Int64Type>().value(row)),
                (Some(c), S::Text) => V::Text(c.as_string::<i32>().value(row)),
                (Some(c), S::Date) => V::Date(c.as_primitive::<Date32Type>().value(row)),
                (Some(c), S::Timestamp) => {
                    V::Timestamp(c.as_primitive::<TimestampMicrosecondType>().value(row))
                }
                _ => V::Other,
            };
            sample.add(value);
        }
    }
}

/// The report as text: per table, one line per column.
pub(crate) fn render_text(report: &ClassifyReport) -> String {
    let mut out = format!(
        "policy version {}: column classification (at most {} rows per data file; no value is shown)\n",
        report.policy_version, report.rows_per_file
    );
    for t in &report.tables {
        out.push_str(&format!(
            "\n{} ({} rows sampled from {} {})\n",
            t.table,
            t.rows,
            t.files,
            if t.per_file {
                "files"
            } else {
                "scan partitions"
            }
        ));
        for c in report.columns.iter().filter(|c| c.table == t.table) {
            let classes = if c.classes.is_empty() {
                "-".to_owned()
            } else {
                c.classes.join(",")
            };
            let tags = if c.tags.is_empty() {
                "UNTAGGED".to_owned()
            } else {
                c.tags.join(",")
            };
            let seen: Vec<String> = c
                .seen_as
                .iter()
                .map(|(role, access)| format!("{role}={access}"))
                .collect();
            out.push_str(&format!(
                "  {:<18} {:<22} {:<26} {}\n",
                c.column,
                classes,
                tags,
                seen.join(" ")
            ));
        }
    }
    out.push_str(&super::check::problems_text(
        &report.warnings,
        &report.errors,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::detect::{SampleType, SampleValue};
    use super::*;

    fn ids(name: &str, n: i64) -> ColumnSample {
        let mut s = ColumnSample::new(name, SampleType::Integer);
        for i in 0..n {
            s.add(SampleValue::Int(1_000 + i * 7));
        }
        s
    }

    fn ssns(name: &str) -> ColumnSample {
        let mut s = ColumnSample::new(name, SampleType::Text);
        for i in 0..200 {
            s.add(SampleValue::Text(&format!(
                "9{:02}-{:02}-{:04}",
                i % 97,
                1 + i % 89,
                1 + i
            )));
        }
        s
    }

    fn encounters(
        extra: Option<(&str, ColumnSample)>,
    ) -> BTreeMap<String, Vec<(String, ColumnSample)>> {
        let mut cols = vec![
            ("encounter_id".to_owned(), ids("encounter_id", 500)),
            ("patient_id".to_owned(), {
                let mut s = ColumnSample::new("patient_id", SampleType::Integer);
                for i in 0..500 {
                    s.add(SampleValue::Int(i % 40));
                }
                s
            }),
        ];
        if let Some((name, s)) = extra {
            cols.push((name.to_owned(), s));
        }
        BTreeMap::from([("clinical.encounters".to_owned(), cols)])
    }

    #[test]
    fn the_shipped_policy_passes_and_an_untagged_ssn_column_fails() {
        let policy = Policy::load(None).unwrap();
        let report = judge(&policy, vec![], &encounters(None), 100, 20_000);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let id = &report.columns[0];
        assert_eq!(id.classes, vec!["record_id"]);
        assert_eq!(id.seen_as["researcher"], "mask:pseudonym");
        assert_eq!(id.seen_as["analyst"], "visible");
        assert_eq!(id.seen_as["auditor"], "denied");

        let report = judge(
            &policy,
            vec![],
            &encounters(Some(("tax_ref", ssns("tax_ref")))),
            100,
            20_000,
        );
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(report.errors[0].contains("clinical.encounters.tax_ref is not classified"));
        assert!(report.errors[0].contains("ssn"));
        // Untagged: NULL for every role that may read the table.
        let col = report
            .columns
            .iter()
            .find(|c| c.column == "tax_ref")
            .unwrap();
        assert!(col.tags.is_empty());
        assert_eq!(col.seen_as["analyst"], "null");
    }

    #[test]
    fn a_record_id_shown_to_the_safe_harbor_role_fails() {
        let policy = crate::policy::tests::demo_with_roles(|t| {
            let from = "\"tag:phi.record_key\" = \"pseudonym\"";
            assert!(t.contains(from));
            t.replacen(from, "\"tag:phi.record_key\" = \"visible\"", 1)
        });
        let report = judge(&policy, vec![], &encounters(None), 100, 20_000);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert!(
            report.errors[0]
                .contains("clinical.encounters.encounter_id looks like record_id and role researcher (safe_harbor)"),
            "{}",
            report.errors[0]
        );
    }
}
