//! From (policy, session attributes, table schemas) to an [`AccessContext`]:
//! per table, granted or not; per column, visible / masked / NULL; the row
//! filter with principal attributes bound as literals; the consent rule.
//!
//! The input schemas are plain column-name lists, so this module needs no
//! engine types and its tests need no server.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Ident, Value, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{ConsentModel, MaskKind, Policy, Purpose, grant_matches, is_phi_tag};

/// Session attributes the policy depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject {
    pub user: String,
    pub role: String,
    pub site: Option<String>,
    pub purpose: Purpose,
    pub break_glass: bool,
}

/// How one column is shown.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnAccess {
    Visible,
    /// `domain`: the key domain of a pseudonym mask on a record key
    /// (`None`: the patient domain, for patient keys and every other
    /// column).
    Masked {
        mask: String,
        kind: MaskKind,
        domain: Option<String>,
    },
    Null,
}

/// Consent predicate for one table.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentCheck {
    pub model: ConsentModel,
    pub purpose: Purpose,
    /// The table's patient key column.
    pub patient_key: String,
}

/// Access to one granted table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableAccess {
    /// In the table's column order.
    pub columns: Vec<(String, ColumnAccess)>,
    /// Row filter (AND of every applicable filter), literals bound.
    pub row_filter: Option<Expr>,
    pub consent: Option<ConsentCheck>,
    /// The table's patient key column (tables.toml `patient_key`): the
    /// patients each statement touches are accounted through it.
    pub patient_key: Option<String>,
    /// Names of the rules applied (audit report).
    pub rules: Vec<String>,
}

/// Everything one session may see, under one policy version.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessContext {
    pub policy_version: String,
    pub subject: Subject,
    /// Granted tables only, by `schema.table`.
    pub tables: BTreeMap<String, TableAccess>,
    /// Tables that exist but are not granted.
    pub denied: Vec<String>,
    /// The role's aggregation policy, if it has one (SPEC §8).
    pub aggregation: Option<crate::policy::AggregationRules>,
}

/// Parse a row-filter expression.
pub fn parse_filter(sql: &str) -> Result<Expr, String> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(32)
        .try_with_sql(sql)
        .map_err(|e| e.to_string())?;
    let expr = parser.parse_expr().map_err(|e| e.to_string())?;
    if parser.peek_token().token != datafusion::sql::sqlparser::tokenizer::Token::EOF {
        return Err("unexpected text after the expression".into());
    }
    Ok(expr)
}

/// Attributes a row filter may use as `principal.<attribute>`.
pub const PRINCIPAL_ATTRIBUTES: [&str; 4] = ["user", "site", "role", "purpose"];

/// If `e` is `principal.<attribute>`, the attribute (lower case). Keyword
/// attributes such as `user` parse as field access on a function, not as a
/// compound identifier; both shapes are recognised.
fn principal_attribute(e: &Expr) -> Option<String> {
    use datafusion::sql::sqlparser::ast::AccessExpr;
    match e {
        Expr::CompoundIdentifier(parts)
            if parts.len() == 2 && parts[0].value.eq_ignore_ascii_case("principal") =>
        {
            Some(parts[1].value.to_lowercase())
        }
        // `principal.user`: USER is a keyword, so this parses as a call of a
        // two-part function name without arguments.
        Expr::Function(f)
            if f.name.0.len() == 2
                && matches!(
                    f.args,
                    datafusion::sql::sqlparser::ast::FunctionArguments::None
                )
                && f.name.0[0]
                    .as_ident()
                    .is_some_and(|i| i.value.eq_ignore_ascii_case("principal")) =>
        {
            f.name.0[1].as_ident().map(|i| i.value.to_lowercase())
        }
        Expr::CompoundFieldAccess { root, access_chain } if access_chain.len() == 1 => {
            match (root.as_ref(), &access_chain[0]) {
                (Expr::Identifier(r), AccessExpr::Dot(inner))
                    if r.value.eq_ignore_ascii_case("principal") =>
                {
                    let name = inner.to_string().to_lowercase();
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                        .then_some(name)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The `principal.<attribute>` names an expression refers to.
pub fn principal_attributes(expr: &Expr) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::{Visit, Visitor};
    struct Collect(Vec<String>);
    impl Visitor for Collect {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if let Some(a) = principal_attribute(e) {
                self.0.push(a);
                return ControlFlow::Continue(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut c = Collect(Vec::new());
    let _ = expr.visit(&mut c);
    c.0
}

/// Replace `principal.<attr>` with a string literal; a missing attribute makes
/// the whole filter FALSE (fail closed).
fn bind_principal(expr: &mut Expr, subject: &Subject) -> bool {
    struct Binder<'a> {
        subject: &'a Subject,
        missing: bool,
    }
    impl VisitorMut for Binder<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if let Some(attr) = principal_attribute(e) {
                let value = match attr.as_str() {
                    "user" => Some(self.subject.user.clone()),
                    "site" => self.subject.site.clone(),
                    "role" => Some(self.subject.role.clone()),
                    "purpose" => Some(self.subject.purpose.as_str().to_owned()),
                    _ => None,
                };
                match value {
                    Some(v) => *e = Expr::value(Value::SingleQuotedString(v)),
                    None => {
                        self.missing = true;
                        *e = Expr::value(Value::Null);
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut b = Binder {
        subject,
        missing: false,
    };
    let _ = expr.visit(&mut b);
    !b.missing
}

fn false_expr() -> Expr {
    Expr::value(Value::Boolean(false))
}

/// The binding of one column for a role: column rule, else the most specific
/// tag rule, else visible for `safe`-only columns, else NULL.
fn column_access(policy: &Policy, role: &str, table: &str, column: &str) -> ColumnAccess {
    let Some(rules) = policy.role(role) else {
        return ColumnAccess::Null;
    };
    let table_rules = policy.tables.get(table);
    let resolve = |binding: &str| -> ColumnAccess {
        match binding {
            "visible" => ColumnAccess::Visible,
            "null" => ColumnAccess::Null,
            name => match policy.masks.get(name) {
                Some(MaskKind::Null) => ColumnAccess::Null,
                Some(kind) => ColumnAccess::Masked {
                    mask: name.to_owned(),
                    kind: kind.clone(),
                    domain: match kind {
                        MaskKind::Pseudonym => table_rules
                            .and_then(|t| t.record_key_domain(column))
                            .map(str::to_owned),
                        _ => None,
                    },
                },
                None => ColumnAccess::Null,
            },
        }
    };
    if let Some(b) = rules.columns.get(&format!("{table}.{column}")) {
        return resolve(b);
    }
    let Some(tags) = table_rules.and_then(|t| t.columns.get(column)) else {
        // Schema drift: unknown columns are PHI.
        return ColumnAccess::Null;
    };
    for tag in tags.iter().rev() {
        if let Some(b) = rules.columns.get(&format!("tag:{tag}")) {
            return resolve(b);
        }
    }
    if !tags.is_empty() && tags.iter().all(|t| t == "safe") {
        ColumnAccess::Visible
    } else {
        debug_assert!(tags.iter().any(|t| is_phi_tag(t)) || tags.is_empty());
        ColumnAccess::Null
    }
}

/// Compile the access context of `subject` over `schemas` (`schema.table` →
/// column names in order). Fails only when the subject's role is unknown.
pub fn compile(
    policy: &Policy,
    subject: &Subject,
    schemas: &BTreeMap<String, Vec<String>>,
) -> Option<AccessContext> {
    let role = policy.role(&subject.role)?;
    if !role.purposes.contains(&subject.purpose) {
        return None;
    }
    let mut tables = BTreeMap::new();
    let mut denied = Vec::new();
    for (name, columns) in schemas {
        let (schema, table) = name.split_once('.').unwrap_or((name, ""));
        if !role.tables.iter().any(|g| grant_matches(g, schema, table)) {
            denied.push(name.clone());
            continue;
        }
        let mut rules = vec![format!("grant:{}", subject.role)];
        let cols: Vec<(String, ColumnAccess)> = columns
            .iter()
            .map(|c| (c.clone(), column_access(policy, &subject.role, name, c)))
            .collect();
        for (c, a) in &cols {
            if let ColumnAccess::Masked { mask, .. } = a {
                rules.push(format!("mask:{mask}:{c}"));
            }
        }

        let mut filter: Option<Expr> = None;
        for (fname, f) in &policy.filters {
            if !f.roles.contains(&subject.role) {
                continue;
            }
            let Some(sql) = f.tables.get(name) else {
                continue;
            };
            if f.lifted_by_break_glass && subject.break_glass && role.break_glass {
                rules.push(format!("filter-lifted:{fname}"));
                continue;
            }
            let mut e = match parse_filter(sql) {
                Ok(e) => e,
                Err(_) => false_expr(),
            };
            if !bind_principal(&mut e, subject) {
                e = false_expr();
            }
            rules.push(format!("filter:{fname}"));
            filter = Some(match filter {
                None => Expr::Nested(Box::new(e)),
                Some(prev) => Expr::BinaryOp {
                    left: Box::new(prev),
                    op: BinaryOperator::And,
                    right: Box::new(Expr::Nested(Box::new(e))),
                },
            });
        }

        let consent = policy
            .tables
            .get(name)
            .and_then(|t| t.patient_key.clone())
            .filter(|_| *name != policy.consent.table)
            .and_then(|pk| {
                policy
                    .consent
                    .purposes
                    .get(&subject.purpose)
                    .map(|model| ConsentCheck {
                        model: *model,
                        purpose: subject.purpose,
                        patient_key: pk,
                    })
            });
        if let Some(c) = &consent {
            rules.push(format!(
                "consent:{}:{}",
                c.purpose,
                if c.model == ConsentModel::OptIn {
                    "opt-in"
                } else {
                    "opt-out"
                }
            ));
        }
        tables.insert(
            name.clone(),
            TableAccess {
                columns: cols,
                row_filter: filter,
                consent,
                patient_key: policy.tables.get(name).and_then(|t| t.patient_key.clone()),
                rules,
            },
        );
    }
    Some(AccessContext {
        policy_version: policy.version.clone(),
        subject: subject.clone(),
        tables,
        denied,
        aggregation: role.aggregation,
    })
}

/// An identifier for AST building.
pub fn ident(s: &str) -> Ident {
    Ident::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemas() -> BTreeMap<String, Vec<String>> {
        let p = Policy::load(None).unwrap();
        let mut m: BTreeMap<String, Vec<String>> = p
            .tables
            .iter()
            .map(|(n, t)| (n.clone(), t.columns.keys().cloned().collect()))
            .collect();
        m.insert(
            "audit.access_log".into(),
            vec!["event_id".into(), "user".into()],
        );
        m
    }

    fn subject(role: &str, purpose: Purpose) -> Subject {
        Subject {
            user: "u".into(),
            role: role.into(),
            site: Some("S01".into()),
            purpose,
            break_glass: false,
        }
    }

    fn access(ctx: &AccessContext, table: &str, col: &str) -> ColumnAccess {
        ctx.tables[table]
            .columns
            .iter()
            .find(|(c, _)| c == col)
            .unwrap()
            .1
            .clone()
    }

    #[test]
    fn clinician_sees_everything_but_ssn_at_own_site() {
        let p = Policy::load(None).unwrap();
        let ctx = compile(&p, &subject("clinician", Purpose::Treatment), &schemas()).unwrap();
        assert_eq!(
            access(&ctx, "clinical.patients", "last_name"),
            ColumnAccess::Visible
        );
        assert!(matches!(
            access(&ctx, "clinical.patients", "ssn"),
            ColumnAccess::Masked {
                kind: MaskKind::Partial { keep_last: 4, .. },
                ..
            }
        ));
        let f = ctx.tables["clinical.patients"]
            .row_filter
            .as_ref()
            .unwrap()
            .to_string();
        assert_eq!(f, "(site_id = 'S01')");
        assert!(ctx.denied.contains(&"governance.consents".to_string()));
        assert!(ctx.denied.contains(&"audit.access_log".to_string()));
        assert_eq!(
            ctx.tables["clinical.patients"]
                .consent
                .as_ref()
                .unwrap()
                .model,
            ConsentModel::OptOut
        );
    }

    #[test]
    fn break_glass_lifts_only_the_site_filter() {
        let p = Policy::load(None).unwrap();
        let mut s = subject("clinician", Purpose::Treatment);
        s.break_glass = true;
        let ctx = compile(&p, &s, &schemas()).unwrap();
        assert!(ctx.tables["clinical.patients"].row_filter.is_none());
        assert!(ctx.tables["clinical.patients"].consent.is_some());
        assert!(matches!(
            access(&ctx, "clinical.patients", "ssn"),
            ColumnAccess::Masked { .. }
        ));
        // Break-glass is ignored for roles that may not use it.
        let mut a = subject("analyst", Purpose::Operations);
        a.break_glass = true;
        let ctx = compile(&p, &a, &schemas()).unwrap();
        assert!(
            ctx.tables["clinical.patients"].row_filter.is_none(),
            "analyst has no site filter anyway"
        );
    }

    #[test]
    fn analyst_masks() {
        let p = Policy::load(None).unwrap();
        let ctx = compile(&p, &subject("analyst", Purpose::Payment), &schemas()).unwrap();
        for c in ["first_name", "last_name", "ssn", "phone", "email"] {
            assert_eq!(
                access(&ctx, "clinical.patients", c),
                ColumnAccess::Null,
                "{c}"
            );
        }
        assert_eq!(
            access(&ctx, "clinical.patients", "mrn"),
            ColumnAccess::Masked {
                mask: "pseudonym".into(),
                kind: MaskKind::Pseudonym,
                domain: None,
            },
            "the MRN is a patient identifier: patient domain"
        );
        assert!(matches!(
            access(&ctx, "clinical.patients", "birth_date"),
            ColumnAccess::Masked {
                kind: MaskKind::Year,
                ..
            }
        ));
        assert!(matches!(
            access(&ctx, "clinical.patients", "zip"),
            ColumnAccess::Masked {
                kind: MaskKind::Zip3,
                ..
            }
        ));
        assert_eq!(
            access(&ctx, "clinical.patients", "patient_id"),
            ColumnAccess::Visible
        );
        assert!(ctx.tables["clinical.patients"].row_filter.is_none());
    }

    #[test]
    fn researcher_is_safe_harbor_and_opt_in() {
        let p = Policy::load(None).unwrap();
        let ctx = compile(&p, &subject("researcher", Purpose::Research), &schemas()).unwrap();
        for t in [
            "clinical.patients",
            "clinical.encounters",
            "clinical.observations",
            "claims.claims",
        ] {
            assert!(
                matches!(
                    access(&ctx, t, "patient_id"),
                    ColumnAccess::Masked {
                        kind: MaskKind::Pseudonym,
                        ..
                    }
                ),
                "{t}"
            );
            assert_eq!(
                ctx.tables[t].consent.as_ref().unwrap().model,
                ConsentModel::OptIn
            );
        }
        assert_eq!(access(&ctx, "clinical.patients", "mrn"), ColumnAccess::Null);
        // Patient keys in the patient domain, record keys each in their own.
        assert_eq!(
            access(&ctx, "clinical.encounters", "patient_id"),
            ColumnAccess::Masked {
                mask: "pseudonym".into(),
                kind: MaskKind::Pseudonym,
                domain: None,
            }
        );
        for (t, c, d) in [
            ("clinical.encounters", "encounter_id", "encounter"),
            ("clinical.observations", "encounter_id", "encounter"),
            ("clinical.observations", "observation_id", "observation"),
            ("claims.claims", "claim_id", "claim"),
        ] {
            assert_eq!(
                access(&ctx, t, c),
                ColumnAccess::Masked {
                    mask: "pseudonym".into(),
                    kind: MaskKind::Pseudonym,
                    domain: Some(d.into()),
                },
                "{t}.{c}"
            );
        }
        // Other roles that see patient ids see record ids.
        for (role, purpose) in [
            ("analyst", Purpose::Operations),
            ("clinician", Purpose::Treatment),
        ] {
            let ctx = compile(&p, &subject(role, purpose), &schemas()).unwrap();
            assert_eq!(
                access(&ctx, "clinical.observations", "encounter_id"),
                ColumnAccess::Visible,
                "{role}"
            );
        }
        assert!(matches!(
            access(&ctx, "clinical.patients", "birth_date"),
            ColumnAccess::Masked {
                kind: MaskKind::YearOrNullOverAge { max_age: 89 },
                ..
            }
        ));
        assert!(matches!(
            access(&ctx, "clinical.encounters", "admit_ts"),
            ColumnAccess::Masked {
                kind: MaskKind::Year,
                ..
            }
        ));
    }

    #[test]
    fn auditor_gets_audit_only() {
        let p = Policy::load(None).unwrap();
        let ctx = compile(&p, &subject("auditor", Purpose::Operations), &schemas()).unwrap();
        assert_eq!(ctx.tables.keys().collect::<Vec<_>>(), ["audit.access_log"]);
    }

    #[test]
    fn deny_by_default_and_schema_drift() {
        let p = Policy::load(None).unwrap();
        let mut s = schemas();
        s.get_mut("clinical.patients")
            .unwrap()
            .push("favourite_colour".into());
        let ctx = compile(&p, &subject("clinician", Purpose::Treatment), &s).unwrap();
        assert_eq!(
            access(&ctx, "clinical.patients", "favourite_colour"),
            ColumnAccess::Null
        );
        assert!(compile(&p, &subject("nobody", Purpose::Treatment), &s).is_none());
        assert!(
            compile(&p, &subject("analyst", Purpose::Research), &s).is_none(),
            "purpose not allowed"
        );
    }

    #[test]
    fn injection_shaped_claims_stay_literals() {
        let p = Policy::load(None).unwrap();
        let mut s = subject("clinician", Purpose::Treatment);
        s.site = Some("S01' OR '1'='1".into());
        let ctx = compile(&p, &s, &schemas()).unwrap();
        match ctx.tables["clinical.patients"].row_filter.as_ref().unwrap() {
            Expr::Nested(inner) => match inner.as_ref() {
                Expr::BinaryOp { right, .. } => {
                    assert_eq!(
                        **right,
                        Expr::value(Value::SingleQuotedString("S01' OR '1'='1".into()))
                    )
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_mask_kind_binds_by_tag_or_column() {
        let mut p = Policy::load(None).unwrap();
        p.masks.insert(
            "redacted".into(),
            MaskKind::Redact {
                value: "REDACTED".into(),
            },
        );
        p.masks
            .insert("hundreds".into(), MaskKind::Round { step: 100.0 });
        let analyst = p.roles.get_mut("analyst").unwrap();
        analyst
            .columns
            .insert("claims.claims.billed_amount".into(), "hundreds".into());
        analyst
            .columns
            .insert("tag:phi.ssn".into(), "redacted".into());
        let ctx = compile(&p, &subject("analyst", Purpose::Operations), &schemas()).unwrap();
        assert!(matches!(
            access(&ctx, "claims.claims", "billed_amount"),
            ColumnAccess::Masked {
                kind: MaskKind::Round { .. },
                ..
            }
        ));
        assert!(matches!(
            access(&ctx, "clinical.patients", "ssn"),
            ColumnAccess::Masked {
                kind: MaskKind::Redact { .. },
                ..
            }
        ));
        // A column binding beats the tag binding.
        p.roles
            .get_mut("analyst")
            .unwrap()
            .columns
            .insert("clinical.patients.ssn".into(), "null".into());
        let ctx = compile(&p, &subject("analyst", Purpose::Operations), &schemas()).unwrap();
        assert_eq!(access(&ctx, "clinical.patients", "ssn"), ColumnAccess::Null);
        // A new phi.direct column is NULL for the analyst with no policy edit.
        p.tables
            .get_mut("clinical.patients")
            .unwrap()
            .columns
            .insert("nickname".into(), vec!["phi.direct".into()]);
        let mut s = schemas();
        s.get_mut("clinical.patients")
            .unwrap()
            .push("nickname".into());
        let ctx = compile(&p, &subject("analyst", Purpose::Operations), &s).unwrap();
        assert_eq!(
            access(&ctx, "clinical.patients", "nickname"),
            ColumnAccess::Null
        );
        assert_eq!(
            principal_attributes(
                &parse_filter("site_id = principal.site AND x = principal.User").unwrap()
            ),
            ["site", "user"]
        );
        let mut e = parse_filter("owner = principal.user").unwrap();
        assert!(bind_principal(
            &mut e,
            &subject("analyst", Purpose::Operations)
        ));
        assert_eq!(e.to_string(), "owner = 'u'");
    }

    #[test]
    fn missing_attribute_admits_no_rows() {
        let p = Policy::load(None).unwrap();
        let mut s = subject("clinician", Purpose::Treatment);
        s.site = None;
        let ctx = compile(&p, &s, &schemas()).unwrap();
        assert_eq!(
            ctx.tables["clinical.patients"]
                .row_filter
                .as_ref()
                .unwrap()
                .to_string(),
            "(false)"
        );
    }
}

/// A column type as far as masks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Integer,
    Decimal,
    Float,
    Date,
    Timestamp,
    Boolean,
    Other,
}

/// Can `kind` be applied to a column of type `ty`?
pub fn mask_fits(kind: &MaskKind, ty: ColumnType) -> bool {
    use ColumnType::*;
    match kind {
        MaskKind::Null => true,
        MaskKind::Redact { .. } | MaskKind::Partial { .. } | MaskKind::Zip3 => ty == Text,
        MaskKind::Pseudonym => matches!(ty, Text | Integer),
        MaskKind::Year | MaskKind::YearOrNullOverAge { .. } => matches!(ty, Date | Timestamp),
        MaskKind::Round { .. } => matches!(ty, Integer | Decimal | Float),
    }
}
