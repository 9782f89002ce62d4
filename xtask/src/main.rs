//! `cargo xtask`: the README's two commands and CI for the Chorus workspace.
//!
//! - `cargo xtask demo [-- ARGS]` installs missing system packages and runs the demo.
//! - `cargo xtask test` installs missing system packages and runs the whole test suite.
//! - `cargo xtask ci` runs every check of STYLE.md section 15; `.ci/run` calls it.
//!
//! Dependency-free on purpose, so it builds in seconds on a fresh machine.

mod cmd;
mod entropy;
mod install;
mod json;
mod layers;
mod steps;
mod workspace;

use std::ffi::OsString;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  demo [-- ARGS]  install missing system packages, then run the demo example
                  (release build), passing ARGS to it
  test            install missing system packages, then run every test target and
                  doctest of the workspace
  ci [STEP ...]   everything CI enforces, in order: fmt, clippy, no-tokio, layering,
                  test-rng, test, demo, doc, package (with the MSRV), fuzz, deny; or only the
                  steps named
  help            this text";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let command = args.next();
    let rest: Vec<OsString> = args.collect();
    let result = match command.as_ref().and_then(|c| c.to_str()) {
        None | Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("demo") => match rest.split_first() {
            None => steps::demo::run(&[]),
            Some((dashes, args)) if dashes == "--" => steps::demo::run(args),
            Some(_) => usage_error("demo takes its example's arguments after `--`"),
        },
        Some("test") if !rest.is_empty() => usage_error("test takes no arguments"),
        Some("test") => steps::test::run(),
        Some("ci") => match rest.iter().map(|a| a.to_str()).collect::<Option<Vec<_>>>() {
            Some(only) => steps::ci::run(&only),
            None => usage_error("ci step names are ASCII"),
        },
        Some(other) => usage_error(&format!("unknown command `{other}`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> cmd::Result {
    Err(format!("{message}\n\n{USAGE}"))
}
