//! `cargo xtask test`: the whole test suite, with its system packages installed first.

use crate::cmd::{self, Result};
use crate::install::{self, Job};

/// Installs missing system packages, then runs every test target and every doctest of
/// the workspace. Cargo's output, summaries included, goes straight to the terminal.
pub(crate) fn run() -> Result {
    install::system_packages(Job::Test)?;
    // Default features only: `_fuzz` is private, and features are tested by each
    // crate's own targets. `--all-targets` leaves out doctests, hence the second run.
    // Interoperability tests skip with a note when run by hand without their peer
    // (libsrtp, coturn); here the peer was just installed, so a skip is a failure.
    cmd::run(cmd::cargo().env("CHORUS_REQUIRE_INTEROP", "1").args([
        "test",
        "--workspace",
        "--all-targets",
    ]))?;
    cmd::run(cmd::cargo().args(["test", "--workspace", "--doc"]))
}
