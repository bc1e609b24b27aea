//! The checks every policy passes when it is loaded: names, grants, tags,
//! record keys and their key domains, masks, row filters and consent,
//! within and across the five files. They need no table schemas (`lakeward
//! policy check`, in [`super::check`], compares a policy with the tables).

use std::collections::BTreeMap;

use super::{
    MaskKind, PATIENT_DOMAIN, Policy, PolicyProblem, RECORD_KEY_TAG, compile, is_phi_tag,
    is_valid_key_domain,
};

impl Policy {
    /// Cross-file checks that need no table schemas.
    pub(super) fn validate<'t>(
        &self,
        get: &dyn Fn(&str) -> &'t str,
        problems: &mut Vec<PolicyProblem>,
    ) {
        let mut problem = |file: &str, needle: &str, message: String| {
            problems.push(PolicyProblem {
                file: file.to_owned(),
                line: line_of(get(file), needle),
                message,
            });
        };
        for (name, role) in &self.roles {
            if !crate::policy::ident::is_plain_ident(name) {
                problem(
                    "roles.toml",
                    name,
                    format!("role name {name:?} must be a lower-case identifier"),
                );
            }
            if let Some(a) = &role.aggregation
                && !(2..=1_000_000).contains(&a.min_group_size)
            {
                problem(
                    "roles.toml",
                    "min_group_size",
                    format!(
                        "role {name}: aggregation.min_group_size must be between 2 and 1000000, not {}",
                        a.min_group_size
                    ),
                );
            }
            if role.purposes.is_empty() {
                problem(
                    "roles.toml",
                    name,
                    format!("role {name} declares no purposes"),
                );
            }
            for t in &role.tables {
                if !valid_table_pattern(t) {
                    problem(
                        "roles.toml",
                        t,
                        format!("role {name}: table grant {t:?} must be schema.table or schema.*"),
                    );
                }
            }
            for (target, binding) in &role.columns {
                let target_ok = match target.strip_prefix("tag:") {
                    Some(tag) => !tag.is_empty(),
                    None => {
                        target.split('.').count() == 3
                            && target.split('.').all(crate::policy::ident::is_plain_ident)
                    }
                };
                if !target_ok {
                    problem(
                        "roles.toml",
                        target,
                        format!("role {name}: {target:?} must be tag:<tag> or schema.table.column"),
                    );
                }
                if binding != "visible" && binding != "null" && !self.masks.contains_key(binding) {
                    problem(
                        "roles.toml",
                        binding,
                        format!("role {name}: unknown mask {binding:?} (masks.toml)"),
                    );
                }
                if let Some(col) = target.strip_prefix("tag:").is_none().then_some(target) {
                    let (table, column) = col.rsplit_once('.').unwrap_or((col, ""));
                    if self
                        .tables
                        .get(table)
                        .is_some_and(|t| !t.columns.contains_key(column))
                    {
                        problem(
                            "roles.toml",
                            col,
                            format!("role {name}: unknown column {col}"),
                        );
                    }
                }
            }
        }
        for (table, rules) in &self.tables {
            if table.split('.').count() != 2
                || !table.split('.').all(crate::policy::ident::is_plain_ident)
            {
                problem(
                    "tables.toml",
                    table,
                    format!("table name {table:?} must be schema.table"),
                );
            }
            if let Some(pk) = &rules.patient_key
                && !rules.columns.contains_key(pk)
            {
                problem(
                    "tables.toml",
                    pk,
                    format!("{table}: patient_key {pk:?} is not one of its columns"),
                );
            }
            for (i, key) in rules.lookup_keys.iter().enumerate() {
                if !rules.columns.contains_key(key) {
                    problem(
                        "tables.toml",
                        key,
                        format!("{table}: lookup key {key:?} is not one of its columns"),
                    );
                } else if rules.lookup_keys[..i].contains(key) {
                    problem(
                        "tables.toml",
                        key,
                        format!("{table}: lookup key {key:?} is listed twice"),
                    );
                }
            }
            for (col, domain) in &rules.record_keys {
                if !rules
                    .columns
                    .get(col)
                    .is_some_and(|tags| tags.iter().any(|t| t == RECORD_KEY_TAG))
                {
                    problem(
                        "tables.toml",
                        col,
                        format!(
                            "{table}: record key {col:?} is not a column tagged {RECORD_KEY_TAG}"
                        ),
                    );
                }
                if !is_valid_key_domain(domain) {
                    problem(
                        "tables.toml",
                        domain,
                        format!(
                            "{table}.{col}: key domain {domain:?} must be a lower-case name (a-z, 0-9, _)"
                        ),
                    );
                }
            }
            for col in rules.columns.keys() {
                let Some(domain) = rules.record_key_domain(col) else {
                    continue;
                };
                if rules.patient_key.as_deref() == Some(col.as_str()) {
                    problem(
                        "tables.toml",
                        col,
                        format!("{table}.{col}: the patient key cannot also be a record key"),
                    );
                } else if domain == PATIENT_DOMAIN {
                    problem(
                        "tables.toml",
                        col,
                        format!(
                            "{table}.{col}: key domain {PATIENT_DOMAIN:?} is reserved for patient keys"
                        ),
                    );
                } else if !rules.record_keys.contains_key(col) && !is_valid_key_domain(domain) {
                    problem(
                        "tables.toml",
                        col,
                        format!(
                            "{table}.{col}: name its key domain in record_keys (a lower-case name)"
                        ),
                    );
                }
            }
            for (col, tags) in &rules.columns {
                if tags.is_empty() {
                    problem(
                        "tables.toml",
                        col,
                        format!("{table}.{col}: no tags (use [\"safe\"] for non-PHI columns)"),
                    );
                }
                for tag in tags {
                    if tag != "safe" && !is_phi_tag(tag) {
                        problem(
                            "tables.toml",
                            tag,
                            format!(
                                "{table}.{col}: unknown tag {tag:?} (safe, patient_key, phi.*)"
                            ),
                        );
                    }
                }
            }
        }
        // One kind of id, one key domain: a column that is a record key in
        // one table and not in another would show raw ids (or unjoinable
        // pseudonyms) there.
        let mut record_keys: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        for (table, rules) in &self.tables {
            for col in rules.columns.keys() {
                if let Some(domain) = rules.record_key_domain(col) {
                    record_keys
                        .entry(col.as_str())
                        .or_insert((table.as_str(), domain));
                }
            }
        }
        for (table, rules) in &self.tables {
            for col in rules.columns.keys() {
                let Some((first, domain)) = record_keys.get(col.as_str()) else {
                    continue;
                };
                match rules.record_key_domain(col) {
                    Some(d) if d == *domain => {}
                    Some(d) => problem(
                        "tables.toml",
                        col,
                        format!(
                            "{table}.{col}: key domain {d:?} differs from {first}.{col} ({domain:?}): joins on it would not match"
                        ),
                    ),
                    None => problem(
                        "tables.toml",
                        col,
                        format!(
                            "{table}.{col}: not tagged {RECORD_KEY_TAG}, but {first}.{col} is: tag it so it is pseudonymised alike"
                        ),
                    ),
                }
            }
        }
        for (name, mask) in &self.masks {
            if let MaskKind::Round { step } = mask
                && !(*step > 0.0 && step.is_finite())
            {
                problem(
                    "masks.toml",
                    name,
                    format!("mask {name}: step must be a positive number"),
                );
            }
        }
        for (name, f) in &self.filters {
            for r in &f.roles {
                if !self.roles.contains_key(r) {
                    problem(
                        "row_filters.toml",
                        r,
                        format!("filter {name}: unknown role {r:?}"),
                    );
                }
            }
            for (table, expr) in &f.tables {
                if !self.tables.contains_key(table) {
                    problem(
                        "row_filters.toml",
                        table,
                        format!("filter {name}: unknown table {table:?}"),
                    );
                }
                match compile::parse_filter(expr) {
                    Err(e) => problem(
                        "row_filters.toml",
                        table,
                        format!("filter {name} on {table}: {e}"),
                    ),
                    Ok(e) => {
                        for attr in compile::principal_attributes(&e) {
                            if !compile::PRINCIPAL_ATTRIBUTES.contains(&attr.as_str()) {
                                problem(
                                    "row_filters.toml",
                                    &format!("principal.{attr}"),
                                    format!(
                                        "filter {name} on {table}: unknown attribute principal.{attr} (known: {})",
                                        compile::PRINCIPAL_ATTRIBUTES.join(", ")
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
        let c = &self.consent;
        match self.tables.get(&c.table) {
            None => problem(
                "consent.toml",
                &c.table,
                format!("consent table {:?} is not in tables.toml", c.table),
            ),
            Some(t) => {
                for col in [
                    &c.patient_key,
                    &c.purpose_column,
                    &c.granted_column,
                    &c.recorded_at_column,
                    &c.expires_at_column,
                ] {
                    if !t.columns.contains_key(col) {
                        problem(
                            "consent.toml",
                            col,
                            format!("consent: column {col:?} is not in {}", c.table),
                        );
                    }
                }
            }
        }
    }
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// `schema.table` or `schema.*`.
fn valid_table_pattern(p: &str) -> bool {
    match p.split_once('.') {
        Some((s, t)) => {
            crate::policy::ident::is_plain_ident(s)
                && (t == "*" || crate::policy::ident::is_plain_ident(t))
        }
        None => false,
    }
}
