//! The allow-listed parameters and `SET`/`SHOW`/`RESET`: only parameters
//! on the allow-list below can be set.

use std::collections::BTreeMap;

use crate::error::SqlError;

use super::options::parse_options;
use super::{SERVER_VERSION, Session};

/// How a parameter may be set.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Any value is stored and echoed.
    Free,
    /// Only these values (case-insensitive) are accepted.
    OneOf(&'static [&'static str]),
    /// An integer in this range.
    Int(i64, i64),
}

/// `(name, default, rule, description)` for every settable parameter.
const PARAMETERS: &[(&str, &str, Rule, &str)] = &[
    (
        "application_name",
        "",
        Rule::Free,
        "Sets the application name to be reported in statistics and logs.",
    ),
    (
        "client_encoding",
        "UTF8",
        Rule::OneOf(&["utf8", "utf-8", "unicode"]),
        "Sets the client's character set encoding.",
    ),
    (
        "client_min_messages",
        "notice",
        Rule::Free,
        "Sets the message levels that are sent to the client.",
    ),
    (
        "datestyle",
        "ISO, MDY",
        Rule::OneOf(&["iso", "iso, mdy", "iso,mdy", "iso, ymd", "iso, dmy"]),
        "Sets the display format for date and time values.",
    ),
    (
        "default_transaction_isolation",
        "read committed",
        Rule::Free,
        "Sets the transaction isolation level of each new transaction.",
    ),
    (
        "default_transaction_read_only",
        "on",
        Rule::OneOf(&["on", "true", "1"]),
        "Sessions are always read-only.",
    ),
    (
        "extra_float_digits",
        "1",
        Rule::Int(-15, 3),
        "Sets the number of digits displayed for floating-point values.",
    ),
    (
        "idle_in_transaction_session_timeout",
        "0",
        Rule::Free,
        "Accepted for compatibility.",
    ),
    (
        "intervalstyle",
        "postgres",
        Rule::OneOf(&["postgres"]),
        "Sets the display format for interval values.",
    ),
    (
        "lock_timeout",
        "0",
        Rule::Free,
        "Accepted for compatibility.",
    ),
    (
        "search_path",
        "\"$user\", public",
        Rule::Free,
        "Sets the schema search order for names that are not schema-qualified.",
    ),
    (
        "standard_conforming_strings",
        "on",
        Rule::OneOf(&["on", "true"]),
        "Backslashes in ordinary string literals are literal.",
    ),
    (
        "statement_timeout",
        "0",
        Rule::Free,
        "Sets the maximum allowed duration of any statement.",
    ),
    (
        "timezone",
        "UTC",
        Rule::OneOf(&["utc", "etc/utc", "gmt", "z", "zulu", "+00", "+00:00"]),
        "Timestamps are reported in UTC.",
    ),
    (
        "transaction_isolation",
        "read committed",
        Rule::Free,
        "Accepted for compatibility.",
    ),
    (
        "bytea_output",
        "hex",
        Rule::OneOf(&["hex"]),
        "Sets the output format for bytea.",
    ),
    ("jit", "off", Rule::Free, "Accepted for compatibility."),
];

/// Names of the read-only parameters.
const FIXED_PARAMETERS: &[&str] = &[
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "max_identifier_length",
    "transaction_read_only",
    "in_hot_standby",
    "lc_collate",
    "lc_ctype",
];

/// Read-only parameters that SHOW answers.
fn fixed_parameter(name: &str) -> Option<String> {
    Some(match name {
        "server_version" => SERVER_VERSION.to_owned(),
        "server_version_num" => "150000".to_owned(),
        "server_encoding" => "UTF8".to_owned(),
        "integer_datetimes" => "on".to_owned(),
        "is_superuser" => "off".to_owned(),
        "max_identifier_length" => "63".to_owned(),
        "transaction_read_only" => "on".to_owned(),
        "in_hot_standby" => "off".to_owned(),
        "lc_collate" | "lc_ctype" => "C".to_owned(),
        _ => return None,
    })
}

fn spec(name: &str) -> Option<&'static (&'static str, &'static str, Rule, &'static str)> {
    PARAMETERS.iter().find(|(n, ..)| *n == name)
}

impl Session {
    /// Apply startup parameters sent by the client (`application_name`,
    /// `options=-c name=value`, ...). Unknown ones are ignored as PostgreSQL
    /// ignores unknown startup options only for `options`; errors are reported.
    pub fn apply_startup(&self, params: &BTreeMap<String, String>) -> Result<(), SqlError> {
        for (k, v) in params {
            let k = k.to_lowercase();
            match k.as_str() {
                "user" | "database" | "replication" => {}
                "options" => {
                    let mut opts = parse_options(v)?;
                    // A role must be chosen before a purpose is checked against it.
                    opts.sort_by_key(|(n, _)| n != "lakeward.role");
                    for (name, value) in opts {
                        self.set(&name, Some(value))?;
                    }
                }
                _ if spec(&k).is_some() || k.starts_with("lakeward.") => {
                    self.set(&k, Some(v.clone()))?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `SET name = value` (`None` = DEFAULT), for the rest of the session
    /// (or until the open transaction block is rolled back).
    pub fn set(&self, name: &str, value: Option<String>) -> Result<(), SqlError> {
        let name = name.to_lowercase();
        self.apply(&name, value)?;
        let mut vars = self.vars();
        let vars = &mut *vars;
        if let Some(t) = vars.transaction.as_mut() {
            t.session_level.copy_one(&vars.cur, &name);
        }
        Ok(())
    }

    /// `SET LOCAL name = value`: until the end of the transaction block.
    /// Outside a block it has no effect, as in PostgreSQL (which warns).
    /// Returns whether it took effect.
    pub fn set_local(&self, name: &str, value: Option<String>) -> Result<bool, SqlError> {
        if !self.in_transaction() {
            return Ok(false);
        }
        self.apply(&name.to_lowercase(), value)?;
        Ok(true)
    }

    /// Change the setting `name` (lower case) in the settings in effect.
    fn apply(&self, name: &str, value: Option<String>) -> Result<(), SqlError> {
        match name {
            "lakeward.purpose" => return self.set_purpose(value),
            "lakeward.break_glass" => return self.set_break_glass(value),
            "lakeward.role" => return self.set_role(value),
            _ => {}
        }
        if name.starts_with("datafusion.") {
            return Err(SqlError::permission_denied(format!(
                "parameter \"{name}\" cannot be changed"
            )));
        }
        let Some((_, _, rule, _)) = spec(name) else {
            if fixed_parameter(name).is_some() {
                return Err(SqlError::new(
                    "55P02",
                    format!("parameter \"{name}\" cannot be changed"),
                ));
            }
            return Err(SqlError::new(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            ));
        };
        let Some(value) = value else {
            self.vars().cur.values.remove(name);
            return Ok(());
        };
        let ok = match rule {
            Rule::Free => value.len() <= 1024,
            // Encoding names are compared as PostgreSQL's
            // `clean_encoding_name` does: letters and digits only, so
            // asyncpg's `'utf-8'` (quotes included) is UTF8.
            Rule::OneOf(_) if name == "client_encoding" => {
                let clean: String = value
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .map(|c| c.to_ascii_lowercase())
                    .collect();
                clean == "utf8" || clean == "unicode"
            }
            Rule::OneOf(allowed) => allowed.iter().any(|a| a.eq_ignore_ascii_case(value.trim())),
            Rule::Int(lo, hi) => value
                .trim()
                .parse::<i64>()
                .is_ok_and(|n| (*lo..=*hi).contains(&n)),
        };
        if !ok {
            return Err(SqlError::new(
                "22023",
                format!("invalid value for parameter \"{name}\""),
            ));
        }
        self.vars().cur.values.insert(name.to_owned(), value);
        Ok(())
    }

    /// `RESET name` / `RESET ALL`. `RESET ALL` returns every parameter to
    /// its default and ends the declared purpose and break-glass (the role
    /// stays: it is chosen once per connection).
    pub fn reset(&self, name: Option<&str>) -> Result<(), SqlError> {
        let Some(n) = name else {
            let mut vars = self.vars();
            let vars = &mut *vars;
            vars.cur.values.clear();
            vars.cur.purpose = None;
            vars.cur.break_glass = None;
            if let Some(t) = vars.transaction.as_mut() {
                t.session_level.values.clear();
                t.session_level.purpose = None;
                t.session_level.break_glass = None;
            }
            self.follow_break_glass(vars);
            return Ok(());
        };
        self.set(n, None)
    }

    /// `DISCARD ALL`: every setting back to its default, as `RESET ALL`
    /// (the caller also closes cursors and deallocates statements). Not
    /// inside a transaction block, as in PostgreSQL.
    pub fn discard_all(&self) -> Result<(), SqlError> {
        if self.in_transaction() {
            return Err(SqlError::new(
                "25001",
                "DISCARD ALL cannot run inside a transaction block",
            ));
        }
        self.reset(None)
    }

    /// `SHOW name`: the current value.
    pub fn show(&self, name: &str) -> Result<String, SqlError> {
        let name = name.to_lowercase();
        match name.as_str() {
            "lakeward.purpose" => {
                return Ok(self
                    .purpose()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default());
            }
            "lakeward.break_glass" => {
                return Ok(self.break_glass().unwrap_or_else(|| "off".into()));
            }
            "lakeward.role" => return Ok(self.role().unwrap_or_default()),
            _ => {}
        }
        if let Some(v) = fixed_parameter(&name) {
            return Ok(v);
        }
        if name == "search_path" && !self.vars().cur.values.contains_key("search_path") {
            return Ok(self.role_search_path());
        }
        let Some((_, default, _, _)) = spec(&name) else {
            return Err(SqlError::new(
                "42704",
                format!("unrecognized configuration parameter \"{name}\""),
            ));
        };
        Ok(self
            .vars()
            .cur
            .values
            .get(&name)
            .cloned()
            .unwrap_or_else(|| (*default).to_owned()))
    }

    /// `SHOW ALL`: `(name, setting, description)` rows.
    pub fn show_all(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = PARAMETERS
            .iter()
            .map(|(n, d, _, desc)| {
                let v = self.show(n).unwrap_or_else(|_| (*d).to_owned());
                ((*n).to_owned(), v, (*desc).to_owned())
            })
            .collect();
        for (n, desc) in [
            (
                "lakeward.role",
                "The role whose policy applies to this session.",
            ),
            ("lakeward.purpose", "The declared purpose of use."),
            ("lakeward.break_glass", "Break-glass justification, or off."),
        ] {
            out.push((
                n.to_owned(),
                self.show(n).unwrap_or_default(),
                desc.to_owned(),
            ));
        }
        out
    }

    /// The search path the session's role starts with (the policy's
    /// `search_path`, or PostgreSQL's default).
    fn role_search_path(&self) -> String {
        let role = self.role();
        let policy = self.policy();
        match role
            .and_then(|r| policy.roles.get(&r).map(|r| r.search_path.clone()))
            .filter(|p| !p.is_empty())
        {
            Some(path) => path.join(", "),
            None => "\"$user\", public".to_owned(),
        }
    }

    /// Every parameter `current_setting()` can read, by lower-case name.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .show_all()
            .into_iter()
            .map(|(n, v, _)| (n, v))
            .collect();
        for n in FIXED_PARAMETERS {
            if let Some(v) = fixed_parameter(n) {
                out.insert((*n).to_owned(), v);
            }
        }
        out
    }

    /// The schemas of `search_path`, in lookup order (`$user` dropped).
    pub fn search_path(&self) -> Vec<String> {
        self.show("search_path")
            .map(|p| crate::rewrite::search_path::parse_search_path(&p))
            .unwrap_or_default()
    }

    /// The first schema of `search_path`, if any.
    pub fn default_schema(&self) -> Option<String> {
        self.search_path().into_iter().next()
    }

    pub fn application_name(&self) -> String {
        self.show("application_name").unwrap_or_default()
    }
}
