//! The closed sets of label values (`label_enum!`) and the label set of
//! each labelled family.

use prometheus_client::encoding::EncodeLabelSet;

/// A closed set of label values: the enum, its `ALL` list (declaration
/// order, so `ALL[v.index()] == v`), its text, and its OpenMetrics encoding.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];
            /// The number of values.
            pub const COUNT: usize = Self::ALL.len();

            /// The label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }

            /// Position in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_enum! {
    /// Why a connection was refused before its session started.
    pub enum AuthFailureReason {
        /// The token is missing, malformed, of a refused algorithm, or its
        /// signature does not verify.
        BadToken => "bad_token",
        /// The token has expired.
        Expired => "expired",
        /// No configured key matches the token's `kid`.
        UnknownKey => "unknown_key",
        /// Issuer, audience, lifetime, not-before, subject or role claims
        /// are wrong, or the roles grant nothing.
        BadClaims => "bad_claims",
        /// A plaintext connection where TLS is required.
        NoTls => "no_tls",
        /// Anything else (no user name, a refused startup parameter).
        Other => "other",
    }
}

label_enum! {
    /// What kind of statement ran (the `kind` label).
    pub enum StatementClass {
        /// A query: `SELECT`, `WITH`, `VALUES`, a cursor's `DECLARE`/`FETCH`.
        Select => "select",
        /// `EXPLAIN`.
        Explain => "explain",
        /// `SHOW`.
        Show => "show",
        /// `SET` and `RESET`.
        Set => "set",
        /// `BEGIN`, `COMMIT`, `ROLLBACK`.
        Transaction => "transaction",
        /// A query over the system catalog (`pg_catalog`, `information_schema`).
        Catalog => "catalog",
        /// Anything else, refused statements included.
        Other => "other",
    }
}

impl StatementClass {
    /// The class of a statement from its audit-log kind
    /// ([`crate::rewrite::fingerprint::statement_kind`]); `catalog` marks a
    /// catalog statement (one [`crate::rewrite::compat`] translated), which
    /// takes precedence over `SELECT`/`EXPLAIN`.
    pub fn classify(audit_kind: &str, catalog: bool) -> StatementClass {
        match audit_kind {
            "SELECT" | "EXPLAIN" if catalog => StatementClass::Catalog,
            "SELECT" | "DECLARE" | "DECLARE CURSOR" | "FETCH" => StatementClass::Select,
            "EXPLAIN" => StatementClass::Explain,
            "SHOW" => StatementClass::Show,
            "SET" | "RESET" => StatementClass::Set,
            "BEGIN" | "COMMIT" | "ROLLBACK" => StatementClass::Transaction,
            _ => StatementClass::Other,
        }
    }
}

label_enum! {
    /// How a statement ended (the `decision` label).
    pub enum Decision {
        /// It ran (rows streamed or the command completed).
        Allowed => "allowed",
        /// Refused: by the policy or the gate (SQLSTATE 42501), as the
        /// audit log counts denials.
        Denied => "denied",
        /// It failed for any other reason.
        Error => "error",
    }
}

/// `Decision::from_sqlstate` lives beside the audit log's own rule
/// (`audit::events`), so the metrics depend on no domain module.
impl Decision {
    /// The decision of an audit record (`allowed`, `denied`, `error`).
    pub fn from_audit(decision: &str) -> Decision {
        match decision {
            "allowed" => Decision::Allowed,
            "denied" => Decision::Denied,
            _ => Decision::Error,
        }
    }
}

label_enum! {
    /// The phases of a statement timed by `statement_phase_seconds`.
    pub enum Phase {
        /// Gate (parse, classify) and AST rewrites.
        ParseRewrite => "parse_rewrite",
        /// Access context, planning over secured tables, plan verification.
        Plan => "plan",
        /// Physical planning and start of execution, until the first batch
        /// can be polled.
        Execute => "execute",
        /// From the statement's start to its first row.
        FirstRow => "first_row",
        /// From the statement's start to its last row (or its end).
        Total => "total",
    }
}

label_enum! {
    /// The caches whose lookups are counted.
    pub enum Cache {
        /// Verified tokens ([`crate::auth::Authenticator`]).
        Token => "token",
        /// Compiled access contexts ([`crate::enforce::access_for`]).
        Policy => "policy",
        /// Planned statements ([`crate::enforce::PlanCache`]).
        Plan => "plan",
        /// Consent sets per purpose ([`crate::engine::consent::ConsentSet`]):
        /// a miss is a computation (new consent version or an expiry).
        Consent => "consent",
        /// Key indexes of point lookups ([`crate::engine::lookup`]): a hit
        /// is a key scan that read only the rows an index names, a miss
        /// one that read files without an index (not built yet, over the
        /// budget).
        KeyIndex => "key_index",
        /// The hot-row cache: a hit is a key scan answered from decoded
        /// rows in memory.
        HotRows => "hot_rows",
    }
}

label_enum! {
    /// The outcome of a cache lookup.
    pub enum CacheResult {
        Hit => "hit",
        Miss => "miss",
    }
}

label_enum! {
    /// A statement limit that ended a statement.
    pub enum Limit {
        StatementTimeout => "statement_timeout",
        MaxRows => "max_rows",
        MaxConcurrentStatements => "max_concurrent_statements",
        Memory => "memory",
    }
}

label_enum! {
    /// An unusual-access signal (`audit::signals`).
    pub enum UnusualAccess {
        PatientVolume => "patient_volume",
        OffHours => "off_hours",
        BreakGlassFrequency => "break_glass_frequency",
        CrossSiteRead => "cross_site_read",
        SharedSurname => "shared_surname",
        AggregateDifferencing => "aggregate_differencing",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct UnusualAccessLabels {
    pub(super) signal: UnusualAccess,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct AuthLabels {
    pub(super) reason: AuthFailureReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatementLabels {
    pub(super) kind: StatementClass,
    pub(super) decision: Decision,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PhaseLabels {
    pub(super) phase: Phase,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CacheLabels {
    pub(super) cache: Cache,
    pub(super) result: CacheResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LimitLabels {
    pub(super) limit: Limit,
}
