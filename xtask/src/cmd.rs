//! Running commands from the workspace root, echoing each one before it runs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// xtask's result: the error is a message for the user, already saying what failed.
pub(crate) type Result<T = ()> = std::result::Result<T, String>;

/// The workspace root (the parent of `xtask/`).
pub(crate) fn root() -> PathBuf {
    let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}

/// A `cargo` command run from the workspace root, using the cargo that started xtask.
pub(crate) fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd` with inherited stdio, after echoing it; fails unless it exits with 0.
pub(crate) fn run(cmd: &mut Command) -> Result {
    let line = describe(cmd);
    eprintln!("$ {line}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{line}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

/// Runs `cmd` quietly and returns its captured output, whatever its exit status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not start `{}`: {e}", describe(cmd)))
}

/// Whether `cmd` starts and exits with 0; all its output is discarded.
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The command as a shell line: environment overrides, program, arguments.
pub(crate) fn describe(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))));
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_else(|| cmd.get_program());
    let words = std::iter::once(quote(program)).chain(cmd.get_args().map(quote));
    envs.chain(words).collect::<Vec<_>>().join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:@,+".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_commands_as_shell_lines() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.env("RUSTDOCFLAGS", "-D warnings").args([
            "fuzz",
            "run",
            "t",
            "--",
            "-max_total_time=5",
            "it's",
        ]);
        assert_eq!(
            describe(&cmd),
            r"RUSTDOCFLAGS='-D warnings' cargo fuzz run t -- -max_total_time=5 'it'\''s'"
        );
    }
}
