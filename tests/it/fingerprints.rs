//! The audit log's `query_fingerprint` (SPEC §6): always printed, never a
//! data value. A value written where an identifier goes (a double-quoted
//! "string", MySQL style), a named placeholder or a quote inside a quoted
//! alias neither reaches the fingerprint nor keeps the auditor from reading
//! the statement.

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::{connect_role, server};

async fn as_user(user: &str, role: &str, site: Option<&str>, purpose: &str) -> Client {
    crate::audit::as_user(server().addr, user, role, site, purpose).await
}

/// The fingerprints of `user`'s statement records, in order.
async fn fingerprints_of(user: &str) -> Vec<String> {
    let auditor = connect_role(server().addr, "auditor", "operations").await;
    auditor
        .simple_query(&format!(
            "SELECT coalesce(query_fingerprint, '<none>') FROM audit.access_log \
             WHERE \"user\" = '{user}' AND event = 'statement' ORDER BY seq"
        ))
        .await
        .expect("auditor reads the access log")
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn values_written_as_identifiers_or_named_placeholders_never_reach_the_fingerprint() {
    let user = "fingerprint_probe";
    let c = as_user(user, "clinician", Some("S01"), "treatment").await;
    let statements = [
        // A quote inside a quoted alias used to withhold the whole record.
        "SELECT zip AS \"'\" FROM clinical.patients WHERE patient_id < 3",
        // A value double-quoted (MySQL habit): an identifier that names nothing.
        "SELECT patient_id FROM clinical.patients WHERE last_name = \"Smith\"",
        "SELECT patient_id FROM clinical.patients p WHERE p.last_name = \"Smith\" OR p.\"Smith-Jones\" = 1",
        // Named placeholders.
        "SELECT patient_id FROM clinical.patients WHERE last_name = $name AND first_name = $Smith",
        // Dollars inside a quoted alias (an alias the statement declares
        // is a name, and stays, printed without a dollar quote).
        "SELECT zip AS \"$tag$zip3$tag$\" FROM clinical.patients WHERE patient_id < 3",
    ];
    for sql in statements {
        // Allowed or refused, every statement is recorded.
        let _ = c.simple_query(sql).await;
    }
    drop(c);
    let prints = fingerprints_of(user).await;
    assert_eq!(prints.len(), statements.len(), "{prints:?}");
    for p in &prints {
        for forbidden in ["Smith", "withheld", "$name", "'", "$tag$"] {
            assert!(
                !p.contains(forbidden),
                "{forbidden:?} in the fingerprint {p:?}"
            );
        }
        assert!(p.contains("FROM clinical.patients"), "{p}");
    }
    // The shape stays readable: known columns and tables are kept.
    assert!(
        prints[0].starts_with("SELECT zip AS ") && prints[0].contains("patient_id < ?"),
        "{}",
        prints[0]
    );
    assert_eq!(
        prints[1],
        "SELECT patient_id FROM clinical.patients WHERE last_name = ?"
    );
    assert_eq!(
        prints[3],
        "SELECT patient_id FROM clinical.patients WHERE last_name = ? AND first_name = ?"
    );
}
