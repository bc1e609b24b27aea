//! `lakeward policy diff`: what a policy change does, per role × purpose ×
//! table × column, and whether it widens access (SPEC §10).
//!
//! Both policies are compiled for the same subjects over the same table
//! schemas and the access contexts compared: a table granted or refused, a
//! column visible / masked (which mask, and the mask's definition) / NULL,
//! the row filter's text, the consent model, break-glass, the aggregation
//! policy. Each change has a direction. A change lakeward cannot prove
//! narrows access (a different mask, a rewritten filter) counts as widening:
//! the diff is a CI gate, and a gate fails closed.
//!
//! Row counts (`--data-dir`) are the engine's business; the command line
//! adds them to the report (`RowCount`) through the secured tables.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::compile::{ColumnAccess, ConsentCheck, Subject, TableAccess, compile};
use super::{ConsentModel, MaskKind, Policy, Purpose};

/// Which way a change moves access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Direction {
    /// More rows, more columns, or clearer values for someone.
    Widens,
    /// A change whose direction is not provable (another mask, another
    /// filter): reviewed as widening.
    Changes,
    Narrows,
}

impl Direction {
    /// Does this change need the approval a widening needs?
    pub(crate) fn needs_approval(self) -> bool {
        matches!(self, Direction::Widens | Direction::Changes)
    }

    fn label(self) -> &'static str {
        match self {
            Direction::Widens => "WIDENS",
            Direction::Changes => "CHANGES",
            Direction::Narrows => "narrows",
        }
    }
}

/// One change of access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Change {
    pub role: String,
    /// The purpose declared (`treatment`, …); `*` for a role-wide setting.
    pub purpose: String,
    /// Whether the session has break-glass on.
    pub break_glass: bool,
    /// `schema.table`, or `*` for a role-wide setting.
    pub table: String,
    /// The column, for a column's treatment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// `grant`, `column`, `row_filter`, `consent`, `aggregation`,
    /// `break_glass`, `purpose` or `rows`.
    pub what: &'static str,
    pub before: String,
    pub after: String,
    pub direction: Direction,
}

/// Rows one subject sees in one table under each policy (`--data-dir`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RowCount {
    pub role: String,
    pub purpose: String,
    pub break_glass: bool,
    pub table: String,
    /// `None`: refused under that policy.
    pub before: Option<u64>,
    pub after: Option<u64>,
}

/// The whole diff.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DiffReport {
    pub from_version: String,
    pub to_version: String,
    /// The site bound to site-scoped subjects (row filters and counts).
    pub site: String,
    pub changes: Vec<Change>,
    /// Filled by the command line when it has the tables.
    pub rows: Vec<RowCount>,
}

impl DiffReport {
    /// Does the new policy widen (or possibly widen) anyone's access?
    pub(crate) fn widens(&self) -> bool {
        self.changes.iter().any(|c| c.direction.needs_approval())
    }

    /// The roles whose access widens, for the summary line.
    pub(crate) fn widened_roles(&self) -> BTreeSet<&str> {
        self.changes
            .iter()
            .filter(|c| c.direction.needs_approval())
            .map(|c| c.role.as_str())
            .collect()
    }

    /// Row counts that grew become changes of their own: evidence that a
    /// rewritten filter widens.
    pub(crate) fn add_row_changes(&mut self) {
        for r in &self.rows {
            let (Some(b), Some(a)) = (r.before, r.after) else {
                continue;
            };
            if a == b {
                continue;
            }
            self.changes.push(Change {
                role: r.role.clone(),
                purpose: r.purpose.clone(),
                break_glass: r.break_glass,
                table: r.table.clone(),
                column: None,
                what: "rows",
                before: b.to_string(),
                after: a.to_string(),
                direction: if a > b {
                    Direction::Widens
                } else {
                    Direction::Narrows
                },
            });
        }
    }
}

/// The subjects a diff compares: every role of either policy, every
/// purpose either lets it declare, with break-glass off and (where either
/// policy allows break-glass) on.
pub(crate) fn subjects(old: &Policy, new: &Policy, site: &str) -> Vec<Subject> {
    let roles: BTreeSet<&String> = old.roles.keys().chain(new.roles.keys()).collect();
    let mut out = Vec::new();
    for role in roles {
        let purposes: BTreeSet<Purpose> = [old.role(role), new.role(role)]
            .into_iter()
            .flatten()
            .flat_map(|r| r.purposes.iter().copied())
            .collect();
        let break_glass = [old.role(role), new.role(role)]
            .into_iter()
            .flatten()
            .any(|r| r.break_glass);
        for purpose in purposes {
            for bg in [false, true] {
                if bg && !break_glass {
                    continue;
                }
                out.push(Subject {
                    user: "policy-diff".into(),
                    role: role.clone(),
                    site: Some(site.to_owned()),
                    purpose,
                    break_glass: bg,
                });
            }
        }
    }
    out
}

/// Compare `old` and `new` over `schemas` (`schema.table` → column names).
pub(crate) fn diff(
    old: &Policy,
    new: &Policy,
    schemas: &BTreeMap<String, Vec<String>>,
    site: &str,
) -> DiffReport {
    let mut changes = Vec::new();
    role_settings(old, new, &mut changes);
    for subject in subjects(old, new, site) {
        let before = compile(old, &subject, schemas);
        let after = compile(new, &subject, schemas);
        let at =
            |table: &str, column: Option<&str>, what, before: String, after: String, d| Change {
                role: subject.role.clone(),
                purpose: subject.purpose.to_string(),
                break_glass: subject.break_glass,
                table: table.to_owned(),
                column: column.map(str::to_owned),
                what,
                before,
                after,
                direction: d,
            };
        if !subject.break_glass && before.is_some() != after.is_some() {
            let (b, a, d) = if after.is_some() {
                ("not declarable", "declarable", Direction::Widens)
            } else {
                ("declarable", "not declarable", Direction::Narrows)
            };
            changes.push(at("*", None, "purpose", b.into(), a.into(), d));
        }
        if !subject.break_glass {
            let agg = |c: &Option<super::compile::AccessContext>| {
                c.as_ref()
                    .and_then(|c| c.aggregation)
                    .map(|a| a.min_group_size)
            };
            let (b, a) = (agg(&before), agg(&after));
            if before.is_some() && after.is_some() && b != a {
                let d = match (b, a) {
                    (Some(_), None) => Direction::Widens,
                    (None, Some(_)) => Direction::Narrows,
                    (Some(x), Some(y)) if y < x => Direction::Widens,
                    _ => Direction::Narrows,
                };
                let text = |m: Option<u32>| match m {
                    Some(m) => format!("aggregates only, groups of >= {m} patients"),
                    None => "row-level".to_owned(),
                };
                changes.push(at("*", None, "aggregation", text(b), text(a), d));
            }
        }
        for (table, columns) in schemas {
            let b = before.as_ref().and_then(|c| c.tables.get(table));
            let a = after.as_ref().and_then(|c| c.tables.get(table));
            match (b, a) {
                (None, None) => {}
                (None, Some(a)) => {
                    changes.push(at(
                        table,
                        None,
                        "grant",
                        "refused".into(),
                        format!("granted ({})", rows_text(a)),
                        Direction::Widens,
                    ));
                    for (col, access) in &a.columns {
                        if *access != ColumnAccess::Null {
                            changes.push(at(
                                table,
                                Some(col),
                                "column",
                                "refused".into(),
                                column_text(access),
                                Direction::Widens,
                            ));
                        }
                    }
                }
                (Some(b), None) => changes.push(at(
                    table,
                    None,
                    "grant",
                    format!("granted ({})", rows_text(b)),
                    "refused".into(),
                    Direction::Narrows,
                )),
                (Some(b), Some(a)) => {
                    for col in columns {
                        let cb = column_of(b, col);
                        let ca = column_of(a, col);
                        if let Some(d) = column_direction(cb, ca) {
                            changes.push(at(
                                table,
                                Some(col),
                                "column",
                                column_text(cb),
                                column_text(ca),
                                d,
                            ));
                        }
                    }
                    let fb = b.row_filter.as_ref().map(|e| e.to_string());
                    let fa = a.row_filter.as_ref().map(|e| e.to_string());
                    if fb != fa {
                        let d = match (&fb, &fa) {
                            (Some(_), None) => Direction::Widens,
                            (None, Some(_)) => Direction::Narrows,
                            _ => Direction::Changes,
                        };
                        let text = |f: Option<String>| f.unwrap_or_else(|| "no row filter".into());
                        changes.push(at(table, None, "row_filter", text(fb), text(fa), d));
                    }
                    if b.consent != a.consent {
                        changes.push(at(
                            table,
                            None,
                            "consent",
                            consent_text(&b.consent),
                            consent_text(&a.consent),
                            consent_direction(&b.consent, &a.consent),
                        ));
                    }
                }
            }
        }
    }
    changes.sort_by(|x, y| {
        (
            &x.role,
            &x.purpose,
            x.break_glass,
            &x.table,
            &x.column,
            x.what,
        )
            .cmp(&(
                &y.role,
                &y.purpose,
                y.break_glass,
                &y.table,
                &y.column,
                y.what,
            ))
    });
    DiffReport {
        from_version: old.version.clone(),
        to_version: new.version.clone(),
        site: site.to_owned(),
        changes,
        rows: Vec::new(),
    }
}

/// Role-wide settings: the role itself and break-glass.
fn role_settings(old: &Policy, new: &Policy, changes: &mut Vec<Change>) {
    let roles: BTreeSet<&String> = old.roles.keys().chain(new.roles.keys()).collect();
    for role in roles {
        let (b, a) = (old.role(role), new.role(role));
        let change = |what, before: &str, after: &str, direction| Change {
            role: role.clone(),
            purpose: "*".into(),
            break_glass: false,
            table: "*".into(),
            column: None,
            what,
            before: before.into(),
            after: after.into(),
            direction,
        };
        match (b, a) {
            (None, Some(_)) => changes.push(change("role", "absent", "defined", Direction::Widens)),
            (Some(_), None) => {
                changes.push(change("role", "defined", "absent", Direction::Narrows))
            }
            (Some(b), Some(a)) if b.break_glass != a.break_glass => changes.push(change(
                "break_glass",
                if b.break_glass {
                    "allowed"
                } else {
                    "not allowed"
                },
                if a.break_glass {
                    "allowed"
                } else {
                    "not allowed"
                },
                if a.break_glass {
                    Direction::Widens
                } else {
                    Direction::Narrows
                },
            )),
            _ => {}
        }
    }
}

fn column_of<'a>(t: &'a TableAccess, col: &str) -> &'a ColumnAccess {
    t.columns
        .iter()
        .find(|(c, _)| c == col)
        .map(|(_, a)| a)
        .unwrap_or(&ColumnAccess::Null)
}

/// How open a column's treatment is: NULL < masked < visible.
fn openness(a: &ColumnAccess) -> u8 {
    match a {
        ColumnAccess::Null => 0,
        ColumnAccess::Masked { .. } => 1,
        ColumnAccess::Visible => 2,
    }
}

fn column_direction(before: &ColumnAccess, after: &ColumnAccess) -> Option<Direction> {
    if before == after {
        return None;
    }
    Some(match openness(after).cmp(&openness(before)) {
        std::cmp::Ordering::Greater => Direction::Widens,
        std::cmp::Ordering::Less => Direction::Narrows,
        // Another mask, or the same mask name defined differently.
        std::cmp::Ordering::Equal => Direction::Changes,
    })
}

fn column_text(a: &ColumnAccess) -> String {
    match a {
        ColumnAccess::Visible => "visible".into(),
        ColumnAccess::Null => "null".into(),
        ColumnAccess::Masked { mask, kind, .. } => format!("mask:{mask} ({})", mask_text(kind)),
    }
}

/// A mask's definition, short: a change of definition under the same name
/// shows.
fn mask_text(kind: &MaskKind) -> String {
    match kind {
        MaskKind::Null => "null".into(),
        MaskKind::Redact { .. } => "redact".into(),
        MaskKind::Partial { keep_last, .. } => format!("partial, last {keep_last}"),
        MaskKind::Pseudonym => "pseudonym".into(),
        MaskKind::Year => "year".into(),
        MaskKind::YearOrNullOverAge { max_age } => format!("year, NULL over {max_age}"),
        MaskKind::Zip3 => "zip3".into(),
        MaskKind::Round { step } => format!("round to {step}"),
    }
}

fn rows_text(t: &TableAccess) -> String {
    let mut parts = Vec::new();
    if let Some(f) = &t.row_filter {
        parts.push(format!("filter {f}"));
    }
    if let Some(c) = &t.consent {
        parts.push(consent_text(&Some(c.clone())));
    }
    if parts.is_empty() {
        "all rows".into()
    } else {
        parts.join(", ")
    }
}

fn consent_text(c: &Option<ConsentCheck>) -> String {
    match c {
        None => "no consent check".into(),
        Some(c) => format!(
            "{} consent for {} through {}",
            match c.model {
                ConsentModel::OptIn => "opt-in",
                ConsentModel::OptOut => "opt-out",
            },
            c.purpose,
            c.patient_key
        ),
    }
}

fn consent_direction(before: &Option<ConsentCheck>, after: &Option<ConsentCheck>) -> Direction {
    match (before, after) {
        (Some(_), None) => Direction::Widens,
        (None, Some(_)) => Direction::Narrows,
        (Some(b), Some(a)) if b.patient_key == a.patient_key && b.purpose == a.purpose => {
            match (b.model, a.model) {
                (ConsentModel::OptIn, ConsentModel::OptOut) => Direction::Widens,
                (ConsentModel::OptOut, ConsentModel::OptIn) => Direction::Narrows,
                _ => Direction::Changes,
            }
        }
        _ => Direction::Changes,
    }
}

/// The report as text: one line per change, then the row counts, then the
/// verdict.
pub(crate) fn render_text(report: &DiffReport) -> String {
    let mut out = format!(
        "policy diff {} -> {} (site-scoped roles as site {})\n\n",
        report.from_version, report.to_version, report.site
    );
    if report.changes.is_empty() {
        out.push_str("no change of access\n");
    }
    for c in &report.changes {
        let who = format!(
            "{} / {}{}",
            c.role,
            c.purpose,
            if c.break_glass { " (break-glass)" } else { "" }
        );
        let target = match &c.column {
            Some(col) => format!("{}.{col}", c.table),
            None if c.table == "*" => c.what.to_owned(),
            None => format!("{} [{}]", c.table, c.what),
        };
        out.push_str(&format!(
            "{:<8} {:<32} {:<36} {} -> {}\n",
            c.direction.label(),
            who,
            target,
            c.before,
            c.after
        ));
    }
    if !report.rows.is_empty() {
        out.push_str("\nrows seen (before -> after):\n");
        for r in &report.rows {
            let n = |v: Option<u64>| v.map_or_else(|| "refused".to_owned(), |v| v.to_string());
            out.push_str(&format!(
                "  {:<32} {:<24} {} -> {}{}\n",
                format!(
                    "{} / {}{}",
                    r.role,
                    r.purpose,
                    if r.break_glass { " (break-glass)" } else { "" }
                ),
                r.table,
                n(r.before),
                n(r.after),
                if r.before != r.after { "  *" } else { "" }
            ));
        }
    }
    let widened = report.widened_roles();
    if widened.is_empty() {
        out.push_str("\nverdict: no access widens\n");
    } else {
        out.push_str(&format!(
            "\nverdict: access widens for {}: needs a privacy officer's approval\n",
            widened.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Policy {
        Policy::load(None).expect("the demo policy loads")
    }

    fn schemas(p: &Policy) -> BTreeMap<String, Vec<String>> {
        p.tables
            .iter()
            .map(|(t, r)| (t.clone(), r.columns.keys().cloned().collect()))
            .collect()
    }

    #[test]
    fn the_same_policy_changes_nothing() {
        let p = demo();
        let r = diff(&p, &p, &schemas(&p), "S01");
        assert!(r.changes.is_empty(), "{:?}", r.changes);
        assert!(!r.widens());
    }

    #[test]
    fn unmasking_zip_for_the_analyst_widens_exactly_that_column() {
        let old = demo();
        let new = crate::policy::tests::demo_with_roles(|t| {
            let from = "[roles.analyst.columns]\n";
            assert!(t.contains(from));
            t.replacen(
                from,
                &format!("{from}\"clinical.patients.zip\" = \"visible\"\n"),
                1,
            )
        });
        let r = diff(&old, &new, &schemas(&old), "S01");
        assert!(r.widens());
        assert_eq!(r.changes.len(), 2, "{:?}", r.changes);
        for (c, purpose) in r.changes.iter().zip(["operations", "payment"]) {
            assert_eq!(c.role, "analyst");
            assert_eq!(c.purpose, purpose);
            assert_eq!(c.table, "clinical.patients");
            assert_eq!(c.column.as_deref(), Some("zip"));
            assert_eq!(c.direction, Direction::Widens);
            assert_eq!(c.before, "mask:zip3 (zip3)");
            assert_eq!(c.after, "visible");
        }
        // The reverse change narrows and needs no approval.
        let back = diff(&new, &old, &schemas(&old), "S01");
        assert!(!back.widens(), "{:?}", back.changes);
        assert!(
            back.changes
                .iter()
                .all(|c| c.direction == Direction::Narrows)
        );
    }

    #[test]
    fn a_new_grant_a_lost_purpose_and_break_glass_are_reported() {
        let old = demo();
        let new = crate::policy::tests::demo_with_roles(|t| {
            let t = t.replacen(
                "tables = [\"audit.*\"]",
                "tables = [\"audit.*\", \"claims.claims\"]",
                1,
            );
            let t = t.replacen(
                "purposes = [\"payment\", \"operations\"]",
                "purposes = [\"payment\"]",
                1,
            );
            t.replacen(
                "purposes = [\"research\"]\n",
                "purposes = [\"research\"]\nbreak_glass = true\n",
                1,
            )
        });
        let r = diff(&old, &new, &schemas(&old), "S01");
        let has = |role: &str, what: &str, d: Direction| {
            r.changes
                .iter()
                .any(|c| c.role == role && c.what == what && c.direction == d)
        };
        assert!(
            has("auditor", "grant", Direction::Widens),
            "{:?}",
            r.changes
        );
        assert!(has("analyst", "purpose", Direction::Narrows));
        assert!(has("researcher", "break_glass", Direction::Widens));
        assert!(r.widens());
    }

    #[test]
    fn another_mask_is_a_change_to_review() {
        let old = demo();
        let new = crate::policy::tests::demo_with_roles(|t| {
            assert!(t.contains("[roles.researcher.columns]\n"));
            t.replacen(
                "[roles.researcher.columns]\n",
                "[roles.researcher.columns]\n\"clinical.patients.birth_date\" = \"year\"\n",
                1,
            )
        });
        let r = diff(&old, &new, &schemas(&old), "S01");
        let c = r
            .changes
            .iter()
            .find(|c| c.column.as_deref() == Some("birth_date"))
            .expect("birth_date changes");
        assert_eq!(c.direction, Direction::Changes);
        assert!(r.widens(), "a change of unknown direction fails the gate");
    }
}
