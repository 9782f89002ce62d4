//! `cargo xtask demo`: the main job of DESIGN.md.

use std::ffi::OsString;

use crate::cmd::{self, Result};
use crate::install::{self, Job};
use crate::workspace::Workspace;

/// The facade's example that is the main job (`examples/demo.rs`).
const DEMO_EXAMPLE: &str = "demo";

/// What runs while `examples/demo.rs` does not exist yet: the most complete runnable
/// example so far. Point this at a more complete example as soon as one lands.
const FALLBACK_EXAMPLE: &str = "framing-loopback";

/// Installs missing system packages, then runs the demo example in release mode,
/// passing `args` through to it.
pub(crate) fn run(args: &[OsString]) -> Result {
    install::system_packages(Job::Demo)?;
    let workspace = Workspace::load()?;
    let examples = workspace
        .root_package()
        .map(|p| p.examples.as_slice())
        .unwrap_or_default();
    let example = [DEMO_EXAMPLE, FALLBACK_EXAMPLE]
        .into_iter()
        .find(|name| examples.iter().any(|e| e == name))
        .ok_or_else(|| {
            format!(
                "neither example `{DEMO_EXAMPLE}` nor `{FALLBACK_EXAMPLE}` exists \
                 (examples: {})",
                examples.join(", ")
            )
        })?;
    if example != DEMO_EXAMPLE {
        eprintln!("note: examples/{DEMO_EXAMPLE}.rs is not written yet; running `{example}`");
    }
    let mut cargo = cmd::cargo();
    cargo
        .args(["run", "--release", "--example", example, "--"])
        .args(args);
    cmd::run(&mut cargo)
}
