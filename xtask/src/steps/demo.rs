//! `cargo xtask demo`: the main job of DESIGN.md (`examples/demo/`).

use std::ffi::OsString;

use crate::cmd::{self, Result};
use crate::install::{self, Job};

/// Installs missing system packages, then runs the demo example in release mode,
/// passing `args` through to it.
pub(crate) fn run(args: &[OsString]) -> Result {
    run_with(&["--release"], args)
}

/// The demo as CI runs it: the same program in the dev profile, whose build the test
/// step has already made (a release build of everything would add minutes to CI;
/// libopus and the crypto dependencies are optimised in dev builds too).
pub(crate) fn run_for_ci() -> Result {
    run_with(&[], &[])
}

fn run_with(profile: &[&str], args: &[OsString]) -> Result {
    install::system_packages(Job::Demo)?;
    let mut cargo = cmd::cargo();
    cargo
        .arg("run")
        .args(profile)
        .args(["--example", "demo", "--"])
        .args(args);
    cmd::run(&mut cargo)
}
