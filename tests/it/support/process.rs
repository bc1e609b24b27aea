//! Programs run by the tests: the lakeward binary as a command (`lakeward
//! policy …`, `audit verify`, `datagen`, `serve`), and what a program printed.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// The environment variable the test configurations name for the pseudonym
/// key (`[policy] pseudonym_key_env`); every command gets it set.
pub const PSEUDONYM_KEY_ENV: &str = "LAKEWARD_TEST_PSEUDONYM_KEY";

/// The lakeward binary with the test pseudonym key in its environment.
pub fn lakeward_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lakeward"));
    cmd.env(PSEUDONYM_KEY_ENV, "11".repeat(32));
    cmd
}

/// Run `lakeward args…` to its end.
pub fn lakeward(args: &[&str]) -> Output {
    lakeward_with_env::<&str, &str>([], args)
}

/// Run `lakeward args…` to its end with more environment variables.
pub fn lakeward_with_env<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    env: impl IntoIterator<Item = (K, V)>,
    args: &[&str],
) -> Output {
    lakeward_command()
        .args(args)
        .envs(env)
        .output()
        .expect("run lakeward")
}

/// What a command printed: its standard output, then its standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// What a client program run by [`run_until`] left: its exit status
/// (`None`: killed at the deadline, hung) and everything it printed.
pub struct Ran {
    pub status: Option<std::process::ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `cmd` (stdin closed, stdout and stderr collected) for at most
/// `limit`; a program still running then is killed. Spawning errors are
/// returned for the caller to say what to install.
pub fn run_until(cmd: &mut Command, limit: std::time::Duration) -> std::io::Result<Ran> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok(Ran {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}
