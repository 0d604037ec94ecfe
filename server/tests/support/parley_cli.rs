//! Running the `parley` binary as a real process against a database, shared by the CLI and the fault tests.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `parley ARGS` with `PARLEY_DATABASE__URL=db`, feeding `stdin` if given, and waits for it.
pub fn parley(db: &str, args: &[&str], stdin: Option<&str>) -> Output {
    parley_env(db, args, &[], stdin)
}

/// [`parley`] with extra environment variables.
pub fn parley_env(db: &str, args: &[&str], vars: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .env("PARLEY_DATABASE__URL", db)
        .env("RUST_LOG", "warn")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("parley starts");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("parley finishes")
}

/// Everything a run printed, stdout then stderr.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}
