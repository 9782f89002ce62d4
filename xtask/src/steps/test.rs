//! `cargo xtask test`: the whole test suite, with its system packages installed first.

use std::fs;

use crate::cmd::{self, Result};
use crate::install::{self, Job};

/// Installs missing system packages, then runs every test target and every doctest of
/// the workspace, and chorus-media's codec tests on its `dnn` build. Cargo's output,
/// summaries included, goes straight to the terminal; the tests that skipped (see
/// `chorus_testkit::skip`) are listed once at the end.
pub(crate) fn run() -> Result {
    install::system_packages(Job::Test)?;
    let skips = cmd::root().join("target").join("chorus-skips.txt");
    let _ = fs::remove_file(&skips);
    let result = run_suites(&skips);
    report_skips(&skips);
    result
}

fn run_suites(skips: &std::path::Path) -> Result {
    // Interoperability tests skip when their peer (libsrtp, coturn), IPv6 loopback or
    // root (network namespaces) is missing. As root, every peer was just installed and
    // the namespaces can be made, so there (in CI) a skip is a failure. Without root
    // the packages are there too (installation stopped otherwise), and only the
    // namespace scenarios skip, listed at the end.
    let require = if install::is_root() { "1" } else { "0" };
    let test = || {
        let mut cargo = cmd::cargo();
        cargo
            .env("CHORUS_REQUIRE_INTEROP", require)
            .env("CHORUS_SKIPS_FILE", skips);
        cargo
    };
    // Default features only: `_fuzz` is private, and features are tested by each
    // crate's own targets. `--all-targets` leaves out doctests, hence the second run.
    cmd::run(test().args(["test", "--workspace", "--all-targets"]))?;
    cmd::run(test().args(["test", "--workspace", "--doc"]))?;
    // libopus with its neural models (chorus-media's `dnn`, the facade's `media-dnn`):
    // the build the quality goals are measured with. Its codec tests and the lossy
    // speech test run on it too, so the optional build cannot rot.
    cmd::run(test().args([
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

/// Prints the skipped tests, once.
fn report_skips(skips: &std::path::Path) {
    let listed = fs::read_to_string(skips).unwrap_or_default();
    let lines: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        eprintln!("\nxtask test: no test skipped");
    } else {
        eprintln!("\nxtask test: {} test(s) skipped:", lines.len());
        for line in lines {
            eprintln!("  {line}");
        }
    }
}
