//! The real psql client (`apt-get install postgresql-client`).

use std::process::{Command, Output};

/// Where and as whom psql connects.
#[derive(Clone, Debug)]
pub struct PsqlConn<'a> {
    pub port: u16,
    pub user: &'a str,
    /// The token, sent as the password (`PGPASSWORD`).
    pub password: &'a str,
    pub sslmode: &'a str,
    /// Declared at startup (`options='-c lakeward.purpose=…'`).
    pub purpose: &'a str,
    pub application_name: Option<&'a str>,
}

impl<'a> PsqlConn<'a> {
    /// `user` with token `password` declaring `purpose`, over TLS
    /// (`sslmode=require`).
    pub fn new(port: u16, user: &'a str, password: &'a str, purpose: &'a str) -> PsqlConn<'a> {
        PsqlConn {
            port,
            user,
            password,
            sslmode: "require",
            purpose,
            application_name: None,
        }
    }

    /// The analyst declaring `operations`, over TLS.
    pub fn analyst(port: u16, password: &'a str) -> PsqlConn<'a> {
        PsqlConn::new(port, "analyst", password, "operations")
    }

    /// The libpq connection string.
    pub fn conninfo(&self) -> String {
        let mut s = format!(
            "host=localhost port={} dbname=lakeward user={} sslmode={} options='-c lakeward.purpose={}'",
            self.port, self.user, self.sslmode, self.purpose
        );
        if let Some(name) = self.application_name {
            s.push_str(&format!(" application_name={name}"));
        }
        s
    }
}

/// What to say when psql is missing.
pub const INSTALL: &str = "psql must be installed (apt-get install postgresql-client)";

/// psql connecting with `conn`, without `~/.psqlrc` or a service file,
/// stopping at the first error; more arguments are the caller's.
pub fn psql_command(conn: &PsqlConn<'_>) -> Command {
    let mut cmd = Command::new("psql");
    cmd.arg(conn.conninfo())
        .env("PGPASSWORD", conn.password)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSERVICE")
        .args(["-X", "-v", "ON_ERROR_STOP=1"]);
    cmd
}

/// Run psql with `args` to its end, unaligned and tuples only (`-A -t`).
pub fn psql(conn: &PsqlConn<'_>, args: &[&str]) -> Output {
    psql_command(conn)
        .args(["-A", "-t"])
        .args(args)
        .output()
        .expect(INSTALL)
}
