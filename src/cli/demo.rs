//! `demo`, `datagen` and `token`.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;

use super::services::serve;
use super::{DemoArgs, TokenArgs};

pub(super) async fn datagen(dir: &Path, patients: u64, seed: u64) -> anyhow::Result<()> {
    let opts = crate::datagen::DatagenOptions {
        data_dir: dir.to_owned(),
        patients,
        seed,
    };
    let report = crate::datagen::generate(&opts).await?;
    let total: u64 = report.tables.iter().map(|(_, n)| n).sum();
    for (name, rows) in &report.tables {
        println!("{name:<24} {rows:>12} rows");
    }
    println!("{total} rows in {:.1} s", report.elapsed.as_secs_f64());
    Ok(())
}

pub(super) async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let existing = crate::engine::discover_tables(&args.data_dir).unwrap_or_default();
    if existing.is_empty() {
        println!(
            "Generating {} synthetic patients into {} ...",
            args.patients,
            args.data_dir.display()
        );
        datagen(&args.data_dir, args.patients, args.seed).await?;
    } else {
        println!(
            "Serving the {} Delta tables already in {}",
            existing.len(),
            args.data_dir.display()
        );
    }
    let tls_dir = args.data_dir.join("tls");
    crate::server::tls::ensure_dev_certificate(&tls_dir)?;
    crate::auth::mint::ensure_demo_keys(&args.data_dir)?;
    ensure_pseudonym_key(&args.data_dir.join("keys").join("pseudonym.key"))?;
    let audit_key = crate::config::demo_audit_key_path(&args.data_dir);
    if !audit_key.exists() {
        crate::audit::chain::SigningKey::generate_to_file(&audit_key)?;
    }
    let config = Config::demo(&args.data_dir, args.listen);
    config.validate()?;

    let host = args.listen.ip();
    let port = args.listen.port();
    println!();
    println!(
        "lakeward demo: synthetic data, development certificate and signing key in {}",
        args.data_dir.display()
    );
    println!("Tokens below are valid for 8 hours. Connect as one of the five demo roles:");
    let roles: [(&str, Option<&str>, &str, &str); 5] = [
        (
            "clinician",
            Some("S01"),
            "treatment",
            "full detail, site S01 only",
        ),
        ("analyst", None, "operations", "de-identified, all sites"),
        (
            "researcher",
            None,
            "research",
            "opted-in patients, Safe Harbor",
        ),
        (
            "reporter",
            None,
            "operations",
            "aggregates of at least 11 patients only",
        ),
        ("auditor", None, "operations", "the audit log"),
    ];
    for (role, site, purpose, what) in roles {
        let req = crate::auth::mint::TokenRequest {
            user: role.to_owned(),
            roles: vec![role.to_owned()],
            site: site.map(str::to_owned),
            purposes: vec![],
            family_name: None,
            ttl: std::time::Duration::from_secs(8 * 3600),
        };
        let token = crate::auth::mint::mint(&args.data_dir, &req)?;
        println!();
        println!("# {role} ({what})");
        println!(
            "PGPASSWORD='{token}' psql \"host={host} port={port} dbname=lakeward user={role} sslmode=require options='-c lakeward.purpose={purpose}'\""
        );
    }
    println!();
    println!(
        "More tokens: lakeward token --data-dir {} --role clinician --site S02 --ttl 1h",
        args.data_dir.display()
    );
    println!("Try:  SELECT site_id, count(*) FROM clinical.patients GROUP BY 1 ORDER BY 1;");
    println!();
    serve(config).await
}

/// `token`: mint a development token signed with the demo key; print only
/// the token.
pub(super) fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let ttl = crate::auth::mint::parse_ttl(&args.ttl)
        .ok_or_else(|| anyhow::anyhow!("invalid --ttl {:?}: use 90s, 30m, 1h or 1d", args.ttl))?;
    let req = crate::auth::mint::TokenRequest {
        user: args.user.unwrap_or_else(|| args.role.clone()),
        roles: vec![args.role],
        site: args.site,
        purposes: args.purposes,
        family_name: args.family_name,
        ttl,
    };
    println!("{}", crate::auth::mint::mint(&args.data_dir, &req)?);
    Ok(ExitCode::SUCCESS)
}

/// Create a random pseudonymisation key file (hex, mode 0600) unless present.
fn ensure_pseudonym_key(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key: [u8; 32] = rand::random();
    crate::auth::keys::write_private(path, hex::encode(key).as_bytes())?;
    Ok(())
}
