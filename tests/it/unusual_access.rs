//! Unusual-access signals (seed 003, SPEC §9): from the patients each
//! statement touched, against configured working hours, the user's own
//! volume baseline, break-glass frequency and shared surnames; auditors
//! read them in `audit.unusual_access`, and each is counted for Prometheus.

use std::collections::BTreeSet;
use std::time::Duration;

use lakeward::auth::mint::{TokenRequest, mint};

use crate::audit::text_rows;
use crate::support::oracle::{consented_patients, raw_context, raw_patients};
use crate::support::{connect_role, data_dir, start, try_connect_with};

fn token_with_surname(user: &str, role: &str, site: Option<&str>, surname: &str) -> String {
    mint(
        data_dir(),
        &TokenRequest {
            user: user.to_owned(),
            roles: vec![role.to_owned()],
            site: site.map(str::to_owned),
            purposes: vec![],
            family_name: Some(surname.to_owned()),
            ttl: Duration::from_secs(600),
        },
    )
    .expect("mint")
}

#[test]
fn signals_are_raised_recorded_and_counted() {
    // Working hours that exclude the present hour (every day), a low volume
    // floor and one break-glass statement a day.
    let now = chrono::Utc::now();
    let hour = |h: u32| format!("{:02}:00", h % 24);
    let server = start(|c| {
        let s = &mut c.audit.signals;
        s.work_start = hour(chrono::Timelike::hour(&now) + 2);
        s.work_end = hour(chrono::Timelike::hour(&now) + 3);
        s.work_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .map(str::to_owned)
            .to_vec();
        s.min_patients = 5;
        s.break_glass_per_day = 1;
    });
    let before = lakeward::metrics::Metrics::global().encode();
    crate::support::runtime().block_on(async {
        let addr = server.addr;
        let ctx = raw_context(data_dir()).await;
        let patients = raw_patients(&ctx).await;
        let treatment = consented_patients("treatment");
        // A patient of S01 the clinician may read, whose surname the
        // clinician shares.
        let p = patients
            .iter()
            .find(|p| p.site == "S01" && treatment.contains(&p.id))
            .expect("an S01 patient");
        let other = patients
            .iter()
            .find(|p| p.site != "S01" && treatment.contains(&p.id))
            .expect("a patient of another site");
        let clinician = "ua_clinician";
        let c = try_connect_with(
            addr,
            clinician,
            &token_with_surname(clinician, "clinician", Some("S01"), &p.last.to_uppercase()),
            "require",
            Some("treatment"),
        )
        .await
        .expect("connect");
        text_rows(&c, &format!("SELECT first_name FROM clinical.patients WHERE patient_id = {}", p.id)).await;
        for _ in 0..2 {
            c.batch_execute("BEGIN; SET LOCAL lakeward.break_glass = 'covering the ED night shift, bay 4'")
                .await
                .unwrap();
            text_rows(
                &c,
                &format!("SELECT first_name FROM clinical.patients WHERE patient_id = {}", other.id),
            )
            .await;
            c.batch_execute("COMMIT").await.unwrap();
        }
        let analyst = "ua_analyst";
        let a = try_connect_with(
            addr,
            analyst,
            &crate::support::token(analyst, "analyst", None),
            "require",
            Some("operations"),
        )
        .await
        .expect("connect");
        text_rows(&a, "SELECT patient_id FROM clinical.patients ORDER BY patient_id LIMIT 20").await;
        // A statement that touches no patient raises nothing.
        text_rows(&a, "SELECT 1").await;

        let auditor = connect_role(addr, "auditor", "operations").await;
        let want: BTreeSet<(String, String)> = [
            (clinician, "shared_surname"),
            (clinician, "off_hours"),
            (clinician, "break_glass_frequency"),
            (analyst, "off_hours"),
            (analyst, "patient_volume"),
        ]
        .into_iter()
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
        .collect();
        let mut got = BTreeSet::new();
        for _ in 0..100 {
            got = text_rows(
                &auditor,
                &format!(
                    "SELECT \"user\", signal FROM audit.unusual_access \
                     WHERE \"user\" IN ('{clinician}', '{analyst}')"
                ),
            )
            .await
            .into_iter()
            .map(|r| (r[0].clone(), r[1].clone()))
            .collect();
            if got == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got, want);
        // Details are numbers, never names; the statement is named.
        let rows = text_rows(
            &auditor,
            &format!(
                "SELECT detail, patient_count, event_id FROM audit.unusual_access \
                 WHERE \"user\" = '{clinician}' AND signal = 'shared_surname'"
            ),
        )
        .await;
        assert_eq!(rows.len(), 1);
        assert!(!rows[0][0].to_lowercase().contains(&p.last.to_lowercase()), "{rows:?}");
        assert_eq!(rows[0][1], "1");
        let statement = text_rows(
            &auditor,
            &format!(
                "SELECT count(*) FROM audit.access_log WHERE event_id = '{}' AND event = 'statement'",
                rows[0][2]
            ),
        )
        .await;
        assert_eq!(statement[0][0], "1");
        // Break-glass reads of another site are not cross-site signals.
        let cross = text_rows(
            &auditor,
            &format!(
                "SELECT count(*) FROM audit.unusual_access WHERE signal = 'cross_site_read' \
                 AND \"user\" IN ('{clinician}', '{analyst}')"
            ),
        )
        .await;
        assert_eq!(cross[0][0], "0");
    });
    let after = lakeward::metrics::Metrics::global().encode();
    let count = |text: &str, signal: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "lakeward_unusual_access_total{{signal=\"{signal}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    for signal in [
        "shared_surname",
        "off_hours",
        "break_glass_frequency",
        "patient_volume",
    ] {
        assert!(
            count(&after, signal) > count(&before, signal),
            "{signal} counted"
        );
    }
}
