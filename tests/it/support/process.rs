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
