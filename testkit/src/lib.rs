//! Test support shared by the Chorus crates' test suites: one rule for tests that need
//! something the machine may lack (an independent implementation such as coturn or
//! libsrtp, IPv6 loopback, root for network namespaces).
//!
//! Such a test calls [`skip`] when its requirement is missing. Under
//! `CHORUS_REQUIRE_INTEROP=1` (set by `cargo xtask test` when it runs as root, so in
//! CI) that is a failure: every interoperability, IPv6 and namespace test must run.
//! Otherwise the skip is written straight to the terminal (past the test harness's
//! output capture, so a plain `cargo test` shows it) and appended to a list that
//! `cargo xtask test` prints once at the end.
//!
//! ```
//! fn coturn_is_installed() -> bool { false }
//!
//! if !coturn_is_installed() {
//!     # if !chorus_testkit::interop_required() {
//!     chorus_testkit::skip("`turnserver` not found (Debian package coturn)");
//!     # }
//! }
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

/// The environment variable that turns every skip into a failure.
pub const REQUIRE_VAR: &str = "CHORUS_REQUIRE_INTEROP";

/// The environment variable naming the file skips are appended to; `cargo xtask test`
/// sets it. Without it, skips go to `chorus-skips.txt` in the system's temp directory.
pub const SKIPS_FILE_VAR: &str = "CHORUS_SKIPS_FILE";

/// Whether a missing requirement must fail the test (`CHORUS_REQUIRE_INTEROP=1`).
#[must_use]
pub fn interop_required() -> bool {
    std::env::var(REQUIRE_VAR).as_deref() == Ok("1")
}

/// The file skips are listed in.
#[must_use]
pub fn skips_file() -> PathBuf {
    std::env::var_os(SKIPS_FILE_VAR).map_or_else(
        || std::env::temp_dir().join("chorus-skips.txt"),
        PathBuf::from,
    )
}

/// The running test as `binary::test` (libtest names each test's thread after it).
fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    // Cargo names test binaries `<target>-<16 hex digits>`.
    let binary = binary
        .rsplit_once('-')
        .filter(|(_, hash)| hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or(binary.as_str(), |(name, _)| name);
    let thread = std::thread::current();
    format!("{binary}::{}", thread.name().unwrap_or("?"))
}

/// Records that the running test cannot run because of `why`, or panics under
/// `CHORUS_REQUIRE_INTEROP=1`. The caller returns right after.
///
/// # Panics
/// When [`interop_required`]: a required test that cannot run is a failure.
pub fn skip(why: &str) {
    let test = current_test();
    assert!(
        !interop_required(),
        "{test} cannot run: {why} ({REQUIRE_VAR}=1 requires every interoperability, \
         IPv6 and network-namespace test to run)"
    );
    let line = format!("SKIPPED {test}: {why}\n");
    // `eprintln!` would be captured by the test harness and shown only on failure.
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(skips_file())
    {
        let _ = f.write_all(line.as_bytes());
    }
}
