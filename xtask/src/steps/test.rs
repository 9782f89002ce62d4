//! `cargo xtask test`: the whole test suite, with its system packages installed first.

use crate::cmd::{self, Result};
use crate::install::{self, Job};

/// Installs missing system packages, then runs every test target and every doctest of
/// the workspace. Cargo's output, summaries included, goes straight to the terminal.
pub(crate) fn run() -> Result {
    install::system_packages(Job::Test)?;
    // Default features only: `_fuzz` is private, and features are tested by each
    // crate's own targets. `--all-targets` leaves out doctests, hence the second run.
    cmd::run(cmd::cargo().args(["test", "--workspace", "--all-targets"]))?;
    cmd::run(cmd::cargo().args(["test", "--workspace", "--doc"]))
}
