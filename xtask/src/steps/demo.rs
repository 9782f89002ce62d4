//! `cargo xtask demo`: the main job of DESIGN.md (`examples/demo/`).

use std::ffi::OsString;

use crate::cmd::{self, Result};
use crate::install::{self, Job};

/// Installs missing system packages, then runs the demo example in release mode,
/// passing `args` through to it.
pub(crate) fn run(args: &[OsString]) -> Result {
    install::system_packages(Job::Demo)?;
    let mut cargo = cmd::cargo();
    cargo
        .args(["run", "--release", "--example", "demo", "--"])
        .args(args);
    cmd::run(&mut cargo)
}
