//! `lakeward policy check`: the policy against the real table schemas, and the
//! coverage matrix (role × table × column → visible / mask / NULL / denied).

use std::collections::BTreeMap;

use serde::Serialize;

use super::compile::{ColumnAccess, ColumnType, Subject, compile, mask_fits};
use super::{Policy, PolicyProblem};

/// One cell of the coverage matrix.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Coverage {
    pub role: String,
    pub purpose: String,
    pub table: String,
    pub column: String,
    /// `visible`, `mask:<name>`, `null`, or `denied`.
    pub access: String,
    /// Row filters and consent applied to the table.
    pub rows: String,
}

/// Result of a check.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CheckReport {
    pub policy_version: String,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub coverage: Vec<Coverage>,
}

/// Check `policy` against `schemas` (`schema.table` → `(column, type)`).
pub(crate) fn check(
    policy: &Policy,
    schemas: &BTreeMap<String, Vec<(String, ColumnType)>>,
) -> CheckReport {
    let mut errors: Vec<PolicyProblem> = Vec::new();
    let mut warnings = Vec::new();
    let err = |errors: &mut Vec<PolicyProblem>, file: &str, message: String| {
        errors.push(PolicyProblem {
            file: file.to_owned(),
            line: None,
            message,
        })
    };
    for (table, rules) in &policy.tables {
        let Some(cols) = schemas.get(table) else {
            err(
                &mut errors,
                "tables.toml",
                format!("table {table} is classified but not served"),
            );
            continue;
        };
        for col in rules.columns.keys() {
            if !cols.iter().any(|(c, _)| c == col) {
                err(
                    &mut errors,
                    "tables.toml",
                    format!("{table}.{col} is classified but the table has no such column"),
                );
            }
        }
        for key in &rules.lookup_keys {
            match cols.iter().find(|(c, _)| c == key) {
                Some((_, ColumnType::Integer | ColumnType::Text)) => {}
                Some(_) => err(
                    &mut errors,
                    "tables.toml",
                    format!("{table}.{key}: a lookup key must be an integer or text column"),
                ),
                // Reported above (classified, no such column) or by
                // validation (not classified).
                None => {}
            }
        }
        for (col, _) in cols {
            if !rules.columns.contains_key(col) {
                err(
                    &mut errors,
                    "tables.toml",
                    format!(
                        "{table}.{col} is not classified (schema drift): it is NULL for every role until tagged"
                    ),
                );
            }
        }
    }
    for table in schemas.keys() {
        if !policy.tables.contains_key(table) && !table.starts_with("audit.") {
            warnings.push(format!(
                "{table} is served but not classified: every column is NULL"
            ));
        }
    }
    let mut coverage = Vec::new();
    for (role_name, role) in &policy.roles {
        for purpose in &role.purposes {
            let subject = Subject {
                user: "policy-check".into(),
                role: role_name.clone(),
                site: Some("<site>".into()),
                purpose: *purpose,
                break_glass: false,
            };
            let names: BTreeMap<String, Vec<String>> = schemas
                .iter()
                .map(|(t, cols)| (t.clone(), cols.iter().map(|(c, _)| c.clone()).collect()))
                .collect();
            let Some(ctx) = compile(policy, &subject, &names) else {
                continue;
            };
            for (table, access) in &ctx.tables {
                let mut rows: Vec<String> = access
                    .rules
                    .iter()
                    .filter(|r| r.starts_with("filter") || r.starts_with("consent"))
                    .cloned()
                    .collect();
                if rows.is_empty() {
                    rows.push("all rows".into());
                }
                if let (Some(a), Some(_)) = (&ctx.aggregation, &access.patient_key) {
                    rows.push(format!(
                        "aggregation: aggregates only, groups of >= {} patients",
                        a.min_group_size
                    ));
                }
                for (col, a) in &access.columns {
                    let text = match a {
                        ColumnAccess::Visible => "visible".to_owned(),
                        ColumnAccess::Null => "null".to_owned(),
                        ColumnAccess::Masked { mask, kind, .. } => {
                            let ty = schemas[table]
                                .iter()
                                .find(|(c, _)| c == col)
                                .map(|(_, t)| *t)
                                .unwrap_or(ColumnType::Other);
                            if !mask_fits(kind, ty) {
                                err(
                                    &mut errors,
                                    "roles.toml",
                                    format!(
                                        "role {role_name}: mask {mask} cannot apply to {table}.{col} ({ty:?})"
                                    ),
                                );
                            }
                            format!("mask:{mask}")
                        }
                    };
                    coverage.push(Coverage {
                        role: role_name.clone(),
                        purpose: purpose.to_string(),
                        table: table.clone(),
                        column: col.clone(),
                        access: text,
                        rows: rows.join(" + "),
                    });
                }
            }
            for table in &ctx.denied {
                coverage.push(Coverage {
                    role: role_name.clone(),
                    purpose: purpose.to_string(),
                    table: table.clone(),
                    column: "*".into(),
                    access: "denied".into(),
                    rows: String::new(),
                });
            }
        }
    }
    errors.dedup();
    CheckReport {
        policy_version: policy.version.clone(),
        errors: errors.iter().map(|e| e.to_string()).collect(),
        warnings,
        coverage,
    }
}

/// The matrix as aligned text, one block per role and purpose.
pub(crate) fn render_text(report: &CheckReport) -> String {
    let mut out = format!("policy version {}\n", report.policy_version);
    let mut last = (String::new(), String::new());
    for c in &report.coverage {
        if (c.role.clone(), c.purpose.clone()) != last {
            out.push_str(&format!("\nrole {} / purpose {}\n", c.role, c.purpose));
            last = (c.role.clone(), c.purpose.clone());
        }
        if c.access == "denied" {
            out.push_str(&format!("  {:<24} denied\n", c.table));
        } else {
            out.push_str(&format!(
                "  {:<24} {:<16} {:<22} {}\n",
                c.table, c.column, c.access, c.rows
            ));
        }
    }
    out.push_str(&problems_text(&report.warnings, &report.errors));
    out
}

/// Warnings, errors and their counts, as every check report ends.
pub(crate) fn problems_text(warnings: &[String], errors: &[String]) -> String {
    let mut out = String::new();
    for w in warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    for e in errors {
        out.push_str(&format!("error: {e}\n"));
    }
    out.push_str(&format!(
        "\n{} error(s), {} warning(s)\n",
        errors.len(),
        warnings.len()
    ));
    out
}
