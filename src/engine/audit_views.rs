//! Views for the questions auditors ask, served in the `audit` schema to
//! every session that may read `audit.access_log`. They are planned over
//! that session's secured audit table, so they can never show more than
//! the table itself.

/// `(view name, SQL over audit.access_log)`.
pub(crate) const VIEWS: &[(&str, &str)] = &[
    // Who accessed data under break-glass, and why.
    (
        "break_glass_access",
        "SELECT ts, \"user\", roles, purpose, break_glass AS justification, session_id, \
         client_addr, statement_kind, query_fingerprint, tables, decision, sqlstate, event_id \
         FROM audit.access_log WHERE break_glass IS NOT NULL AND event = 'statement'",
    ),
    // Refused connection attempts and statements, by user. `user_verified`
    // is false when `user` is only the name a refused client claimed (no
    // token vouched for it): such records have no session.
    (
        "denied_attempts",
        "SELECT ts, \"user\", session_id IS NOT NULL AS user_verified, event, statement_kind, \
         query_fingerprint, tables, reason, sqlstate, client_addr, application_name, event_id \
         FROM audit.access_log WHERE decision = 'denied'",
    ),
    // Statements by declared purpose of use.
    (
        "access_by_purpose",
        "SELECT purpose, \"user\", count(*) AS statements, \
         sum(CASE WHEN decision = 'allowed' THEN 1 ELSE 0 END) AS allowed, \
         sum(CASE WHEN decision = 'denied' THEN 1 ELSE 0 END) AS denied, \
         min(ts) AS first_seen, max(ts) AS last_seen \
         FROM audit.access_log WHERE event = 'statement' GROUP BY purpose, \"user\"",
    ),
    // Activity per user per day.
    (
        "daily_activity",
        "SELECT CAST(ts AS DATE) AS day, \"user\", count(DISTINCT session_id) AS sessions, \
         count(*) AS statements, \
         sum(CASE WHEN decision = 'denied' THEN 1 ELSE 0 END) AS denied, \
         sum(CASE WHEN break_glass IS NOT NULL THEN 1 ELSE 0 END) AS break_glass_statements \
         FROM audit.access_log WHERE event = 'statement' GROUP BY CAST(ts AS DATE), \"user\"",
    ),
    // Unusual-access signals (audit::signals): one row per signal, with the
    // statement that raised it.
    (
        "unusual_access",
        "SELECT ts, \"user\", roles, purpose, break_glass, \
         split_part(reason, ': ', 1) AS signal, \
         substr(reason, strpos(reason, ': ') + 2) AS detail, \
         rows_returned AS patient_count, session_id, client_addr, parent_event_id AS event_id \
         FROM audit.access_log WHERE event = 'signal'",
    ),
    // Statements a shadow policy (SPEC §10) would have decided differently
    // or shown differently: refused where the live policy allowed (or the
    // reverse), or reading a column, rows or an aggregation rule whose
    // treatment differs.
    (
        "shadow_differences",
        "SELECT ts, \"user\", roles, purpose, break_glass, session_id, statement_kind, \
         query_fingerprint, tables, columns, policy_version, \
         CASE WHEN decision = 'allowed' THEN 'allowed' ELSE 'denied' END AS decision, sqlstate, \
         shadow_policy_version, shadow_decision, shadow_columns AS differing, event_id \
         FROM audit.access_log WHERE event = 'statement' AND shadow_decision IS NOT NULL \
         AND (shadow_decision <> CASE WHEN decision = 'allowed' THEN 'allowed' ELSE 'denied' END \
         OR cardinality(shadow_columns) > 0)",
    ),
    // One row per statement with how it ended (statement + completion).
    (
        "statements",
        "SELECT s.ts, s.\"user\", s.roles, s.purpose, s.break_glass, s.session_id, \
         s.statement_kind, s.query_fingerprint, s.tables, s.columns, s.policy_version, \
         coalesce(c.decision, s.decision) AS decision, coalesce(c.sqlstate, s.sqlstate) AS sqlstate, \
         c.rows_returned, coalesce(c.duration_ms, s.duration_ms) AS duration_ms, s.event_id \
         FROM audit.access_log s LEFT JOIN audit.access_log c \
         ON c.event = 'completion' AND c.parent_event_id = s.event_id \
         WHERE s.event = 'statement'",
    ),
];
