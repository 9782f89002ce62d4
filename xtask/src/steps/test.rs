//! `cargo xtask test`: the whole test suite, with its system packages installed first.

use crate::cmd::{self, Result};
use crate::install::{self, Job};

/// Installs missing system packages, then runs every test target and every doctest of
/// the workspace, and chorus-media's codec tests on its `dnn` build. Cargo's output, summaries included, goes straight to the terminal.
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
    cmd::run(cmd::cargo().args(["test", "--workspace", "--doc"]))?;
    // libopus with its neural models (chorus-media's `dnn`, the facade's `media-dnn`):
    // the build the quality goals are measured with. Its codec tests and the lossy
    // speech test run on it too, so the optional build cannot rot.
    cmd::run(cmd::cargo().args([
        "test",
        "-p",
        "chorus-media",
        "--features",
        "dnn",
        "--lib",
        "--test",
        "speech_over_lossy_network",
    ]))
}
