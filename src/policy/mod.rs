//! The policy model: roles, purposes of use, table grants, column tags and
//! masks, row filters, consent — loaded from TOML files (`policy-rules/`) and
//! validated before use.
//!
//! Files (one concern each): `roles.toml`, `tables.toml`, `masks.toml`,
//! `row_filters.toml`, `consent.toml`. The shipped demo policy is also
//! compiled into the binary so that `lakeward demo` works from any folder.
//! [`compile`] turns a [`Policy`] and a session's attributes into an
//! [`compile::AccessContext`]. This module speaks the sqlparser AST only.

pub mod check;
pub mod compile;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A purpose of use (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Treatment,
    Payment,
    Operations,
    Research,
}

impl Purpose {
    pub const ALL: [Purpose; 4] = [
        Purpose::Treatment,
        Purpose::Payment,
        Purpose::Operations,
        Purpose::Research,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Treatment => "treatment",
            Purpose::Payment => "payment",
            Purpose::Operations => "operations",
            Purpose::Research => "research",
        }
    }

    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem in a policy file, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Every problem found while loading a policy.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct PolicyError {
    pub problems: Vec<PolicyProblem>,
}

/// What one role may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRules {
    #[serde(default)]
    pub description: String,
    /// Purposes this role may declare.
    pub purposes: Vec<Purpose>,
    /// May this role lift its `lifted_by_break_glass` row filters?
    #[serde(default)]
    pub break_glass: bool,
    /// Table grants: `schema.table` or `schema.*`.
    #[serde(default)]
    pub tables: Vec<String>,
    /// `tag:<tag>` or `schema.table.column` → `visible` | `null` | a mask name.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// The session's default `search_path` (schemas in lookup order), so
    /// that `SELECT * FROM patients` finds `clinical.patients`. Empty:
    /// PostgreSQL's default, `"$user", public`.
    #[serde(default)]
    pub search_path: Vec<String>,
}

/// Classification of one table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRules {
    /// The patient identifier column (consent applies through it).
    pub patient_key: Option<String>,
    /// Record keys (columns tagged [`RECORD_KEY_TAG`]) → their key domain,
    /// when it is not the column's name. Every column holding the same kind
    /// of id, in any table, must name the same domain.
    #[serde(default)]
    pub record_keys: BTreeMap<String, String>,
    /// Column → tags.
    #[serde(default)]
    pub columns: BTreeMap<String, Vec<String>>,
}

impl TableRules {
    /// The key domain of a record key column (`None` for other columns):
    /// its `record_keys` entry, else the column's name.
    pub fn record_key_domain<'a>(&'a self, column: &'a str) -> Option<&'a str> {
        let tagged = self
            .columns
            .get(column)
            .is_some_and(|tags| tags.iter().any(|t| t == RECORD_KEY_TAG));
        tagged.then(|| self.record_keys.get(column).map_or(column, String::as_str))
    }
}

/// The tag of record ids that link to a patient (encounter, observation,
/// claim ids): pseudonymised, each in its own key domain, for de-identified
/// roles (Safe Harbor: "any other unique identifying number").
pub const RECORD_KEY_TAG: &str = "phi.record_key";

/// The key domain of patient identifiers (`patient_key` columns).
pub const PATIENT_DOMAIN: &str = "patient";

/// A key domain name: 1 to 63 characters out of `a-z`, `0-9` and `_`,
/// starting with a letter.
pub fn is_valid_key_domain(d: &str) -> bool {
    (1..=63).contains(&d.len())
        && d.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && d.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A mask definition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MaskKind {
    Null,
    Redact {
        value: String,
    },
    Partial {
        keep_last: u32,
        #[serde(default)]
        prefix: String,
    },
    Pseudonym,
    Year,
    YearOrNullOverAge {
        max_age: u32,
    },
    Zip3,
    Round {
        step: f64,
    },
}

/// A row filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRules {
    #[serde(default)]
    pub description: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub lifted_by_break_glass: bool,
    /// `schema.table` → SQL boolean expression.
    pub tables: BTreeMap<String, String>,
}

/// Consent model of a purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ConsentModel {
    #[serde(rename = "opt-in")]
    OptIn,
    #[serde(rename = "opt-out")]
    OptOut,
}

/// Where consent records live and how each purpose reads them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRules {
    pub table: String,
    pub patient_key: String,
    pub purpose_column: String,
    pub granted_column: String,
    pub recorded_at_column: String,
    pub expires_at_column: String,
    pub purposes: BTreeMap<Purpose, ConsentModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    roles: BTreeMap<String, RoleRules>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TablesFile {
    tables: BTreeMap<String, TableRules>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MasksFile {
    masks: BTreeMap<String, MaskKind>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FiltersFile {
    #[serde(default)]
    filters: BTreeMap<String, FilterRules>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentFile {
    consent: ConsentRules,
}

/// The policy: immutable once loaded, identified by a content hash.
#[derive(Debug, Clone)]
pub struct Policy {
    /// First 16 hex digits of SHA-256 over the files' names and contents.
    pub version: String,
    pub roles: BTreeMap<String, RoleRules>,
    pub tables: BTreeMap<String, TableRules>,
    pub masks: BTreeMap<String, MaskKind>,
    pub filters: BTreeMap<String, FilterRules>,
    pub consent: ConsentRules,
}

/// The policy files, in load order.
pub const FILES: [&str; 5] = [
    "roles.toml",
    "tables.toml",
    "masks.toml",
    "row_filters.toml",
    "consent.toml",
];

/// The shipped demo policy, compiled in.
const DEMO: [(&str, &str); 5] = [
    ("roles.toml", include_str!("../../policy-rules/roles.toml")),
    (
        "tables.toml",
        include_str!("../../policy-rules/tables.toml"),
    ),
    ("masks.toml", include_str!("../../policy-rules/masks.toml")),
    (
        "row_filters.toml",
        include_str!("../../policy-rules/row_filters.toml"),
    ),
    (
        "consent.toml",
        include_str!("../../policy-rules/consent.toml"),
    ),
];

/// Tags lakeward knows. `phi.*` sub-tags are free-form below `phi.`.
pub fn is_phi_tag(tag: &str) -> bool {
    tag == "patient_key" || tag == "phi" || tag.starts_with("phi.")
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// Parse one file; a TOML error keeps its line and column.
fn parse_file<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
    problems: &mut Vec<PolicyProblem>,
) -> Option<T> {
    match toml::from_str::<T>(text) {
        Ok(v) => Some(v),
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            let message = e.message().to_owned();
            problems.push(PolicyProblem {
                file: file.to_owned(),
                line,
                message,
            });
            None
        }
    }
}

impl Policy {
    /// Load from a folder, or the built-in demo policy when `dir` is `None`.
    pub fn load(dir: Option<&Path>) -> Result<Policy, PolicyError> {
        let mut texts: Vec<(String, String)> = Vec::new();
        let mut problems = Vec::new();
        match dir {
            None => texts.extend(DEMO.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))),
            Some(d) => {
                for name in FILES {
                    let path = d.join(name);
                    match std::fs::read_to_string(&path) {
                        Ok(t) => texts.push((name.to_owned(), t)),
                        Err(e) => problems.push(PolicyProblem {
                            file: path.display().to_string(),
                            line: None,
                            message: format!("cannot read: {e}"),
                        }),
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(PolicyError { problems });
        }
        Policy::from_texts(&texts)
    }

    /// Build from `(file name, contents)` pairs (the five [`FILES`]).
    pub fn from_texts(texts: &[(String, String)]) -> Result<Policy, PolicyError> {
        let mut problems = Vec::new();
        fn lookup<'a>(texts: &'a [(String, String)], name: &str) -> &'a str {
            texts
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.as_str())
                .unwrap_or("")
        }
        let get = |name: &str| lookup(texts, name);
        let roles: Option<RolesFile> = parse_file("roles.toml", get("roles.toml"), &mut problems);
        let tables: Option<TablesFile> =
            parse_file("tables.toml", get("tables.toml"), &mut problems);
        let masks: Option<MasksFile> = parse_file("masks.toml", get("masks.toml"), &mut problems);
        let filters: Option<FiltersFile> =
            parse_file("row_filters.toml", get("row_filters.toml"), &mut problems);
        let consent: Option<ConsentFile> =
            parse_file("consent.toml", get("consent.toml"), &mut problems);
        let (Some(roles), Some(tables), Some(masks), Some(filters), Some(consent)) =
            (roles, tables, masks, filters, consent)
        else {
            return Err(PolicyError { problems });
        };

        let mut hasher = Sha256::new();
        for name in FILES {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(get(name).as_bytes());
            hasher.update([0]);
        }
        let version = hex::encode(&hasher.finalize()[..8]);
        let policy = Policy {
            version,
            roles: roles.roles,
            tables: tables.tables,
            masks: masks.masks,
            filters: filters.filters,
            consent: consent.consent,
        };
        policy.validate(&|name: &str| lookup(texts, name), &mut problems);
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyError { problems })
        }
    }

    /// Cross-file checks that need no table schemas.
    fn validate<'t>(&self, get: &dyn Fn(&str) -> &'t str, problems: &mut Vec<PolicyProblem>) {
        let mut problem = |file: &str, needle: &str, message: String| {
            problems.push(PolicyProblem {
                file: file.to_owned(),
                line: line_of(get(file), needle),
                message,
            });
        };
        for (name, role) in &self.roles {
            if !crate::ident::is_plain_ident(name) {
                problem(
                    "roles.toml",
                    name,
                    format!("role name {name:?} must be a lower-case identifier"),
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
                            && target.split('.').all(crate::ident::is_plain_ident)
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
            if table.split('.').count() != 2 || !table.split('.').all(crate::ident::is_plain_ident)
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

    pub fn role(&self, name: &str) -> Option<&RoleRules> {
        self.roles.get(name)
    }
}

/// The live policy: swapped atomically on reload, read once per statement.
#[derive(Debug)]
pub struct PolicyStore {
    current: std::sync::RwLock<std::sync::Arc<Policy>>,
    dir: Option<std::path::PathBuf>,
}

impl PolicyStore {
    pub fn new(policy: Policy, dir: Option<std::path::PathBuf>) -> PolicyStore {
        PolicyStore {
            current: std::sync::RwLock::new(std::sync::Arc::new(policy)),
            dir,
        }
    }

    pub fn current(&self) -> std::sync::Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-read the policy folder; `validate` may reject the candidate (e.g.
    /// `policy check` against the served tables). On any error the current
    /// policy stays in force.
    pub fn reload(
        &self,
        validate: impl FnOnce(&Policy) -> Result<(), String>,
    ) -> Result<String, String> {
        let candidate = Policy::load(self.dir.as_deref()).map_err(|e| e.to_string())?;
        validate(&candidate)?;
        let version = candidate.version.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(candidate);
        Ok(version)
    }
}

/// `schema.table` or `schema.*`.
fn valid_table_pattern(p: &str) -> bool {
    match p.split_once('.') {
        Some((s, t)) => {
            crate::ident::is_plain_ident(s) && (t == "*" || crate::ident::is_plain_ident(t))
        }
        None => false,
    }
}

/// Does a grant pattern match `schema.table`?
pub fn grant_matches(pattern: &str, schema: &str, table: &str) -> bool {
    match pattern.split_once('.') {
        Some((s, "*")) => s == schema,
        Some((s, t)) => s == schema && t == table,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_policy_loads_and_matches_spec_roles() {
        let p = Policy::load(None).unwrap();
        assert_eq!(p.version.len(), 16);
        assert_eq!(p.role("clinician").unwrap().purposes, [Purpose::Treatment]);
        assert!(p.role("clinician").unwrap().break_glass);
        assert_eq!(
            p.role("analyst").unwrap().purposes,
            [Purpose::Payment, Purpose::Operations]
        );
        assert!(!p.role("analyst").unwrap().break_glass);
        assert_eq!(p.role("researcher").unwrap().purposes, [Purpose::Research]);
        assert_eq!(p.role("auditor").unwrap().purposes, [Purpose::Operations]);
        assert_eq!(p.consent.purposes[&Purpose::Research], ConsentModel::OptIn);
        assert_eq!(
            p.consent.purposes[&Purpose::Treatment],
            ConsentModel::OptOut
        );
    }

    #[test]
    fn the_repository_policy_folder_is_the_built_in_one() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules");
        assert_eq!(
            Policy::load(Some(&dir)).unwrap().version,
            Policy::load(None).unwrap().version
        );
    }

    #[test]
    fn purposes_parse_case_insensitively_and_refuse_unknown() {
        assert_eq!(Purpose::parse(" Research "), Some(Purpose::Research));
        assert_eq!(Purpose::parse("marketing"), None);
    }

    fn demo_texts() -> Vec<(String, String)> {
        DEMO.iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect()
    }

    fn with_file(name: &str, text: &str) -> Result<Policy, PolicyError> {
        let mut texts = demo_texts();
        for (n, t) in texts.iter_mut() {
            if n == name {
                *t = text.to_owned();
            }
        }
        Policy::from_texts(&texts)
    }

    #[test]
    fn record_keys_have_one_valid_domain_per_kind_of_id() {
        let p = Policy::load(None).unwrap();
        let enc = &p.tables["clinical.encounters"];
        assert_eq!(enc.record_key_domain("encounter_id"), Some("encounter"));
        assert_eq!(enc.record_key_domain("patient_id"), None);
        let obs = &p.tables["clinical.observations"];
        assert_eq!(obs.record_key_domain("encounter_id"), Some("encounter"));
        assert_eq!(obs.record_key_domain("observation_id"), Some("observation"));
        assert_eq!(
            p.tables["claims.claims"].record_key_domain("claim_id"),
            Some("claim")
        );

        let tables = include_str!("../../policy-rules/tables.toml");
        let refused = |text: String, needle: &str| {
            let e = with_file("tables.toml", &text).unwrap_err();
            assert!(
                e.problems
                    .iter()
                    .any(|p| p.message.contains(needle) && p.line.is_some()),
                "{needle}: {e}"
            );
        };
        // The same kind of id untagged in another table.
        refused(
            tables.replacen(
                "encounter_id = [\"phi.record_key\"]\npatient_id",
                "encounter_id = [\"safe\"]\npatient_id",
                1,
            ),
            "not tagged phi.record_key",
        );
        // ... or in another domain.
        refused(
            tables.replace(
                "record_keys = { observation_id = \"observation\", encounter_id = \"encounter\" }",
                "record_keys = { observation_id = \"observation\", encounter_id = \"visit\" }",
            ),
            "differs from",
        );
        // The patient domain is reserved, domains are lower-case names.
        refused(
            tables.replace("{ claim_id = \"claim\" }", "{ claim_id = \"patient\" }"),
            "reserved",
        );
        refused(
            tables.replace("{ claim_id = \"claim\" }", "{ claim_id = \"Claim:1\" }"),
            "lower-case name",
        );
        // A record key entry for an untagged column.
        refused(
            tables.replace("{ claim_id = \"claim\" }", "{ payer = \"payer\" }"),
            "is not a column tagged",
        );
        // The patient key cannot be a record key.
        refused(
            tables.replace(
                "[tables.\"claims.claims\".columns]\nclaim_id = [\"phi.record_key\"]\npatient_id = [\"patient_key\"]",
                "[tables.\"claims.claims\".columns]\nclaim_id = [\"phi.record_key\"]\npatient_id = [\"patient_key\", \"phi.record_key\"]",
            ),
            "cannot also be a record key",
        );
        assert!(is_valid_key_domain("encounter") && is_valid_key_domain("a_1"));
        assert!(!is_valid_key_domain("") && !is_valid_key_domain("_a"));
        assert!(!is_valid_key_domain(&"a".repeat(64)));
    }

    #[test]
    fn broken_files_give_located_messages() {
        let e = with_file("masks.toml", "[masks.null]\nkind = \"null\"\n[masks.x\n").unwrap_err();
        assert_eq!(e.problems[0].file, "masks.toml");
        assert_eq!(e.problems[0].line, Some(3), "{e}");

        let masks = format!(
            "{}\n[masks.bad]\nkind = \"partial\"\nkeep_last = 4\ncolour = \"red\"\n",
            include_str!("../../policy-rules/masks.toml")
        );
        let e = with_file("masks.toml", &masks).unwrap_err();
        assert!(e.to_string().contains("colour"), "unknown key named: {e}");

        let roles = include_str!("../../policy-rules/roles.toml")
            .replace("\"ssn_last4\"", "\"no_such_mask\"");
        let e = with_file("roles.toml", &roles).unwrap_err();
        let p = &e.problems[0];
        assert!(
            p.message.contains("no_such_mask") && p.line.is_some(),
            "{e}"
        );

        let filters = include_str!("../../policy-rules/row_filters.toml").replace(
            "site_id = principal.site\"\n\"clinical.encounters\"",
            "site_id = = principal.site\"\n\"clinical.encounters\"",
        );
        let e = with_file("row_filters.toml", &filters).unwrap_err();
        assert!(e.to_string().contains("row_filters.toml:"), "{e}");

        let filters = include_str!("../../policy-rules/row_filters.toml").replacen(
            "principal.site",
            "principal.ward",
            1,
        );
        let e = with_file("row_filters.toml", &filters).unwrap_err();
        let p = &e.problems[0];
        assert!(
            p.message.contains("unknown attribute principal.ward") && p.line.is_some(),
            "{e}"
        );

        let roles = include_str!("../../policy-rules/roles.toml")
            .replace("\"tag:phi.ssn\"", "\"clinical.patients.shoe_size\"");
        let e = with_file("roles.toml", &roles).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown column clinical.patients.shoe_size"),
            "{e}"
        );
    }
}
