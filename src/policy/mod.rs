//! The policy model: roles, purposes of use, table grants, column tags and
//! masks, row filters, consent — loaded from TOML files (`policy-rules/`) and
//! validated before use.
//!
//! Files (one concern each): `roles.toml`, `tables.toml`, `masks.toml`,
//! `row_filters.toml`, `consent.toml`. The shipped demo policy is also
//! compiled into the binary so that `lakeward demo` works from any folder.
//! [`compile`] turns a [`Policy`] and a session's attributes into an
//! [`compile::AccessContext`]. This module speaks the sqlparser AST only.
//!
//! Source files: `mod.rs` (the model, loading, [`PolicyStore`]),
//! `validate.rs` (the checks every loaded policy passes), [`compile`],
//! [`check`] (`lakeward policy check`), `tests.rs` (unit tests).

pub(crate) mod check;
pub mod classify;
pub mod compile;
pub(crate) mod diff;
pub mod ident;
pub(crate) mod test_file;
mod validate;

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
    /// Aggregate-only access with small-cell suppression (SPEC §8).
    #[serde(default)]
    pub aggregation: Option<AggregationRules>,
    /// The de-identification standard this role's view is meant to meet:
    /// `policy check --classify` fails when a column that looks like an
    /// identifier the standard removes is shown to the role in the clear.
    #[serde(default)]
    pub deidentified: Option<Deidentification>,
}

/// A HIPAA de-identification standard a role's view is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deidentification {
    /// 45 CFR 164.514(b)(2): none of the 18 identifiers — no names,
    /// contact details, SSN, MRN, record numbers, full dates tied to a
    /// person, 5-digit ZIP codes; free text withheld.
    SafeHarbor,
    /// 45 CFR 164.514(e): a limited data set — direct identifiers removed
    /// (names, contact details, SSN, MRN); dates, ZIP codes and record
    /// keys may remain.
    LimitedDataSet,
}

impl Deidentification {
    pub fn as_str(self) -> &'static str {
        match self {
            Deidentification::SafeHarbor => "safe_harbor",
            Deidentification::LimitedDataSet => "limited_data_set",
        }
    }
}

/// An aggregation policy (SPEC §8): statements over patient-keyed tables
/// must aggregate, and every group returned covers at least
/// `min_group_size` distinct patients (through each table's patient key).
/// Smaller groups fall into one remainder group whose grouping columns
/// are NULL, itself dropped while still too small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationRules {
    /// The fewest distinct patients a returned group may cover (CMS
    /// cell-size suppression: 11).
    #[serde(default = "default_min_group_size")]
    pub min_group_size: u32,
}

fn default_min_group_size() -> u32 {
    11
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
    /// Columns point lookups search by (`key = $1`, `key IN (…)`): each
    /// gets a key index per Delta version (`engine::lookup`). Integer or
    /// text columns; a secondary key (`encounters.patient_id`) may repeat.
    #[serde(default)]
    pub lookup_keys: Vec<String>,
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

    pub fn role(&self, name: &str) -> Option<&RoleRules> {
        self.roles.get(name)
    }
}

/// The live policy, and the shadow policy when the server runs one
/// (`shadow_policy_dir`, SPEC §10): each swapped atomically on reload,
/// read once per statement.
#[derive(Debug)]
pub struct PolicyStore {
    current: std::sync::RwLock<std::sync::Arc<Policy>>,
    dir: Option<std::path::PathBuf>,
    shadow: std::sync::RwLock<Option<std::sync::Arc<Policy>>>,
    shadow_dir: Option<std::path::PathBuf>,
}

impl PolicyStore {
    pub fn new(policy: Policy, dir: Option<std::path::PathBuf>) -> PolicyStore {
        PolicyStore {
            current: std::sync::RwLock::new(std::sync::Arc::new(policy)),
            dir,
            shadow: std::sync::RwLock::new(None),
            shadow_dir: None,
        }
    }

    /// The same store with a shadow policy: every statement is also planned
    /// under it, and its audit record says what the shadow policy would
    /// have decided.
    pub fn with_shadow(mut self, shadow: Policy, dir: std::path::PathBuf) -> PolicyStore {
        self.shadow = std::sync::RwLock::new(Some(std::sync::Arc::new(shadow)));
        self.shadow_dir = Some(dir);
        self
    }

    pub fn current(&self) -> std::sync::Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The shadow policy, if the server runs one.
    pub fn shadow(&self) -> Option<std::sync::Arc<Policy>> {
        self.shadow
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

    /// Re-read the shadow policy folder, as [`PolicyStore::reload`] does the
    /// live one; `Ok(None)` when the server runs no shadow policy.
    pub fn reload_shadow(
        &self,
        validate: impl FnOnce(&Policy) -> Result<(), String>,
    ) -> Result<Option<String>, String> {
        let Some(dir) = &self.shadow_dir else {
            return Ok(None);
        };
        let candidate = Policy::load(Some(dir)).map_err(|e| e.to_string())?;
        validate(&candidate)?;
        let version = candidate.version.clone();
        *self.shadow.write().unwrap_or_else(|p| p.into_inner()) =
            Some(std::sync::Arc::new(candidate));
        Ok(Some(version))
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
mod tests;
