//! The policy model: roles, purposes of use, break-glass.
//!
//! Policy lives in files (`policy-rules/` in the repository, or the folder
//! named by `[policy] dir`). The shipped demo policy is also compiled into the
//! binary so that `lakeward demo` works from any folder.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

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
    pub const ALL: [Purpose; 4] = [Purpose::Treatment, Purpose::Payment, Purpose::Operations, Purpose::Research];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Treatment => "treatment",
            Purpose::Payment => "payment",
            Purpose::Operations => "operations",
            Purpose::Research => "research",
        }
    }

    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl std::fmt::Display for Purpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors in policy files; every problem is reported, with its file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {file}: {message}")]
    Read { file: String, message: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// What one role may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRules {
    #[serde(default)]
    pub description: String,
    /// Purposes this role may declare.
    pub purposes: Vec<Purpose>,
    /// May this role lift its site filter with break-glass?
    #[serde(default)]
    pub break_glass: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    roles: BTreeMap<String, RoleRules>,
}

/// The compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub roles: BTreeMap<String, RoleRules>,
}

/// The shipped demo policy, compiled in.
const DEMO_ROLES: &str = include_str!("../../policy-rules/roles.toml");

impl Policy {
    /// Load from a folder, or the built-in demo policy when `dir` is `None`.
    pub fn load(dir: Option<&Path>) -> Result<Policy, PolicyError> {
        let (file, text) = match dir {
            None => ("roles.toml (built-in demo policy)".to_owned(), DEMO_ROLES.to_owned()),
            Some(d) => {
                let path = d.join("roles.toml");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| PolicyError::Read { file: path.display().to_string(), message: e.to_string() })?;
                (path.display().to_string(), text)
            }
        };
        let parsed: RolesFile =
            toml::from_str(&text).map_err(|e| PolicyError::Invalid { file: file.clone(), message: e.to_string() })?;
        for (name, rules) in &parsed.roles {
            if !crate::ident::is_plain_ident(name) {
                return Err(PolicyError::Invalid { file, message: format!("role name {name:?} must be a lower-case identifier") });
            }
            if rules.purposes.is_empty() {
                return Err(PolicyError::Invalid { file, message: format!("role {name} declares no purposes") });
            }
        }
        Ok(Policy { roles: parsed.roles })
    }

    pub fn role(&self, name: &str) -> Option<&RoleRules> {
        self.roles.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_policy_matches_spec_table() {
        let p = Policy::load(None).unwrap();
        assert_eq!(p.role("clinician").unwrap().purposes, [Purpose::Treatment]);
        assert!(p.role("clinician").unwrap().break_glass);
        assert_eq!(p.role("analyst").unwrap().purposes, [Purpose::Payment, Purpose::Operations]);
        assert!(!p.role("analyst").unwrap().break_glass);
        assert_eq!(p.role("researcher").unwrap().purposes, [Purpose::Research]);
        assert_eq!(p.role("auditor").unwrap().purposes, [Purpose::Operations]);
    }

    #[test]
    fn purposes_parse_case_insensitively_and_refuse_unknown() {
        assert_eq!(Purpose::parse(" Research "), Some(Purpose::Research));
        assert_eq!(Purpose::parse("marketing"), None);
    }
}
