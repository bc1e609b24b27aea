//! Policy hot reload: `lakeward serve` re-reads its policy folder on SIGHUP;
//! a policy that fails its check is rejected and the old one stays active.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Served, serve_binary, sqlstate, temp_dir, token, try_connect_with};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn serve(policy_dir: &Path) -> Served {
    serve_binary(Some(policy_dir), &temp_dir("lakeward-it-reload-audit"))
}

fn hup(s: &Served) {
    let ok = Command::new("kill")
        .args(["-HUP", &s.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::thread::sleep(Duration::from_millis(800));
}

/// An analyst session (purpose operations) on the served instance.
async fn analyst(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    try_connect_with(
        addr,
        "analyst",
        &token("analyst", "analyst", None),
        "require",
        Some("operations"),
    )
    .await
}

async fn claims_count(port: u16) -> Result<i64, tokio_postgres::Error> {
    analyst(port)
        .await?
        .query_one("SELECT count(*) FROM claims.claims", &[])
        .await
        .map(|r| r.get(0))
}

#[tokio::test]
async fn sighup_reloads_the_policy_and_keeps_the_old_one_when_the_new_one_is_broken() {
    let dir = temp_dir("lakeward-it-reload-policy");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules"),
        &dir,
    );
    let served = serve(&dir);
    assert!(claims_count(served.port).await.unwrap() > 0);

    // Withdraw the analyst's grant on claims, reload: refused from the next statement.
    let roles = dir.join("roles.toml");
    let original = std::fs::read_to_string(&roles).unwrap();
    let narrowed = original.replace(
        "[roles.analyst]\ndescription = \"Operations and payment analyst: de-identified, all sites\"\npurposes = [\"payment\", \"operations\"]\ntables = [\"clinical.patients\", \"clinical.encounters\", \"clinical.observations\", \"claims.claims\"]",
        "[roles.analyst]\ndescription = \"Operations and payment analyst: de-identified, all sites\"\npurposes = [\"payment\", \"operations\"]\ntables = [\"clinical.patients\", \"clinical.encounters\", \"clinical.observations\"]",
    );
    assert_ne!(narrowed, original, "the test edits the analyst's grants");
    std::fs::write(&roles, &narrowed).unwrap();
    hup(&served);
    let e = claims_count(served.port).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");

    // A broken policy is rejected: the narrowed one stays in force.
    std::fs::write(&roles, format!("{original}\n[roles.broken\n")).unwrap();
    hup(&served);
    let e = claims_count(served.port).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");

    // Restore, reload: granted again.
    std::fs::write(&roles, &original).unwrap();
    hup(&served);
    assert!(claims_count(served.port).await.unwrap() > 0);
}

/// A new policy version reaches statements that are already cached: a
/// prepared statement kept by a connection across the reload, and the same
/// text sent again as a simple query (a plan-cache hit before the reload).
#[tokio::test]
async fn a_new_policy_version_reaches_cached_and_prepared_statements() {
    let dir = temp_dir("lakeward-it-reload-mask");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules"),
        &dir,
    );
    let served = serve(&dir);
    let client = analyst(served.port).await.unwrap();
    let sql = "SELECT zip FROM clinical.patients WHERE patient_id = $1";
    let stmt = client.prepare(sql).await.unwrap();
    let zip_of = |rows: Vec<tokio_postgres::Row>| -> Option<String> { rows[0].get(0) };
    // Twice before the reload: the second run is served from the caches.
    for _ in 0..2 {
        let zip = zip_of(client.query(&stmt, &[&7i64]).await.unwrap()).unwrap();
        assert!(zip.ends_with("00") && zip.len() == 5, "zip3 mask: {zip}");
    }
    let simple = "SELECT zip FROM clinical.patients WHERE patient_id = 7";
    assert!(first_cell(&client.simple_query(simple).await.unwrap()).is_some());
    client
        .batch_execute("PREPARE zip_of AS SELECT zip FROM clinical.patients WHERE patient_id = $1")
        .await
        .unwrap();
    assert!(first_cell(&client.simple_query("EXECUTE zip_of(7)").await.unwrap()).is_some());

    // The analyst's quasi-identifiers become NULL.
    let roles = dir.join("roles.toml");
    let original = std::fs::read_to_string(&roles).unwrap();
    let narrowed = original.replace(
        "\"tag:phi.date\" = \"visible\"\n\"tag:phi.birth\" = \"year\"\n\"tag:phi.quasi\" = \"zip3\"",
        "\"tag:phi.date\" = \"visible\"\n\"tag:phi.birth\" = \"year\"\n\"tag:phi.quasi\" = \"null\"",
    );
    assert_ne!(narrowed, original, "the test edits the analyst's zip mask");
    std::fs::write(&roles, &narrowed).unwrap();
    hup(&served);

    let after: Option<String> = zip_of(client.query(&stmt, &[&7i64]).await.unwrap());
    assert_eq!(after, None, "the prepared statement follows the new policy");
    assert_eq!(
        first_cell(&client.simple_query(simple).await.unwrap()),
        None,
        "the cached simple query follows the new policy"
    );
    assert_eq!(
        first_cell(&client.simple_query("EXECUTE zip_of(7)").await.unwrap()),
        None,
        "a statement of SQL PREPARE follows the new policy"
    );
}

/// The first column of the first row of a simple query's answer.
fn first_cell(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
        _ => None,
    })?
}

/// A portal opened before a reload sends no row planned under the old
/// policy: its next Execute is refused (42501) once the new version is in.
#[tokio::test]
async fn a_portal_opened_before_a_reload_ends_with_it() {
    let dir = temp_dir("lakeward-it-reload-portal");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules"),
        &dir,
    );
    let served = serve(&dir);
    let mut client = analyst(served.port).await.unwrap();
    let tx = client.transaction().await.unwrap();
    let portal = tx
        .bind("SELECT zip FROM clinical.patients ORDER BY patient_id", &[])
        .await
        .unwrap();
    assert_eq!(tx.query_portal(&portal, 2).await.unwrap().len(), 2);
    let roles = dir.join("roles.toml");
    let original = std::fs::read_to_string(&roles).unwrap();
    let narrowed = original.replace(
        "\"tag:phi.birth\" = \"year\"\n\"tag:phi.quasi\" = \"zip3\"",
        "\"tag:phi.birth\" = \"year\"\n\"tag:phi.quasi\" = \"null\"",
    );
    assert_ne!(narrowed, original, "the test edits the analyst's zip mask");
    std::fs::write(&roles, &narrowed).unwrap();
    hup(&served);
    // The Execute itself adopts the new version, and refuses.
    let e = tx.query_portal(&portal, 2).await.unwrap_err();
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e}");
}

/// SIGHUP reloads the shadow policy too (SPEC §10): a candidate edited in
/// place is planned beside the live policy from the next statement, and
/// the statement's audit record says what it would change.
#[tokio::test]
async fn sighup_reloads_the_shadow_policy() {
    use crate::support::{ServeOpts, connect_role, serve_binary_opts};
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy-rules");
    let live = temp_dir("lakeward-it-reload-live");
    copy_dir(&shipped, &live);
    let shadow = temp_dir("lakeward-it-reload-shadow");
    copy_dir(&shipped, &shadow);
    let served = serve_binary_opts(ServeOpts {
        policy_dir: Some(&live),
        audit_dir: &temp_dir("lakeward-it-reload-shadow-audit"),
        shadow_policy_dir: Some(&shadow),
        ..Default::default()
    });
    let addr = format!("127.0.0.1:{}", served.port).parse().unwrap();
    let zip = "SELECT zip FROM clinical.patients WHERE patient_id = 11";
    let user = "reload_shadow_analyst";
    let session = || async {
        try_connect_with(
            addr,
            user,
            &token(user, "analyst", None),
            "require",
            Some("operations"),
        )
        .await
        .unwrap()
    };
    // The same policy in the shadow: no difference.
    session().await.simple_query(zip).await.unwrap();
    // Held across the reload: a cursor in a transaction block, and a
    // statement prepared now and executed after.
    let held_user = "reload_shadow_held";
    let held = try_connect_with(
        addr,
        held_user,
        &token(held_user, "analyst", None),
        "require",
        Some("operations"),
    )
    .await
    .unwrap();
    held.batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT zip FROM clinical.patients")
        .await
        .unwrap();
    assert!(first_cell(&held.simple_query("FETCH 1 FROM c").await.unwrap()).is_some());
    let prepared = held
        .prepare("SELECT zip FROM clinical.patients WHERE patient_id = $1")
        .await
        .unwrap();
    // The candidate unmasks zip for the analyst; reload.
    let roles = shadow.join("roles.toml");
    let text = std::fs::read_to_string(&roles).unwrap();
    let from = "[roles.analyst.columns]\n";
    assert!(text.contains(from));
    std::fs::write(
        &roles,
        text.replacen(
            from,
            &format!("{from}\"clinical.patients.zip\" = \"visible\"\n"),
            1,
        ),
    )
    .unwrap();
    hup(&served);
    // The same text again: planned anew (the plan cache key holds the
    // shadow version), the live policy still masks.
    let rows = session().await.simple_query(zip).await.unwrap();
    assert!(first_cell(&rows).is_some_and(|z| z.ends_with("00")));
    // A shadow policy changes no one's access: the open cursor goes on
    // (a live policy reload would end it), the transaction ends as usual,
    // and the prepared statement is planned again for the new verdict.
    let more = held.simple_query("FETCH 1 FROM c").await.unwrap();
    assert!(first_cell(&more).is_some_and(|z| z.ends_with("00")));
    held.batch_execute("ROLLBACK").await.unwrap();
    let row = held.query_one(&prepared, &[&11i64]).await.unwrap();
    assert!(
        row.get::<_, Option<String>>(0)
            .is_some_and(|z| z.ends_with("00"))
    );
    let auditor = connect_role(addr, "auditor", "operations").await;
    let recorded = crate::audit::text_rows(
        &auditor,
        &format!(
            "SELECT array_to_string(shadow_columns, ','), shadow_decision FROM audit.access_log \
             WHERE \"user\" = '{user}' AND event = 'statement' ORDER BY ts"
        ),
    )
    .await;
    assert_eq!(
        recorded,
        vec![
            vec![String::new(), "allowed".to_owned()],
            vec!["clinical.patients.zip".to_owned(), "allowed".to_owned()],
        ]
    );
    let prepared_verdict = crate::audit::text_rows(
        &auditor,
        &format!(
            "SELECT array_to_string(shadow_columns, ',') FROM audit.access_log \
             WHERE \"user\" = '{held_user}' AND event = 'statement' \
             AND statement_kind = 'SELECT' ORDER BY ts"
        ),
    )
    .await;
    assert_eq!(
        prepared_verdict,
        vec![vec!["clinical.patients.zip".to_owned()]]
    );
}
