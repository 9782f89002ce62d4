//! `cargo xtask ci`: everything STYLE.md section 15 says CI enforces, in order.

use std::time::{Duration, Instant};

use crate::cmd::{self, Result};
use crate::install::{self, Job};
use crate::layers;
use crate::workspace::Workspace;

/// A named CI step.
type Step = (&'static str, fn() -> Result);

/// The steps, in the order they run; the first failure stops CI.
const STEPS: &[Step] = &[
    ("fmt", fmt),
    ("clippy", clippy),
    ("no-tokio", no_tokio),
    ("layering", layering),
    ("test-rng", test_rng),
    ("test", super::test::run),
    // The README's first command: the main job must keep running end to end.
    ("demo", demo),
    ("doc", doc),
    ("fuzz", fuzz),
    ("deny", deny),
];

/// Runs every step, printing each one's name and duration; fails naming the first step
/// that fails.
pub(crate) fn run() -> Result {
    let started = Instant::now();
    let mut took = Vec::new();
    for (i, &(name, step)) in STEPS.iter().enumerate() {
        eprintln!("\n==> ci {}/{}: {name}", i + 1, STEPS.len());
        let start = Instant::now();
        let result = step();
        let elapsed = start.elapsed();
        if let Err(e) = result {
            return Err(format!(
                "ci step `{name}` failed after {}: {e}",
                seconds(elapsed)
            ));
        }
        eprintln!("<== ci {name}: ok ({})", seconds(elapsed));
        took.push((name, elapsed));
    }
    eprintln!(
        "\nci: all {} steps passed in {}",
        STEPS.len(),
        seconds(started.elapsed())
    );
    for (name, elapsed) in took {
        eprintln!("  {name:<10} {:>8}", seconds(elapsed));
    }
    Ok(())
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn demo() -> Result {
    super::demo::run(&[])
}

fn fmt() -> Result {
    install::rustup_component("fmt", "rustfmt")?;
    cmd::run(cmd::cargo().args(["fmt", "--all", "--check"]))
}

/// The whole workspace with default features, then each library crate's lib without
/// its default features (the sans-IO core alone).
fn clippy() -> Result {
    install::rustup_component("clippy", "clippy")?;
    // Building the workspace runs build scripts that need system packages (cmake for
    // libopus), so install what the test job needs before the first build.
    install::system_packages(Job::Test)?;
    let deny = ["--", "-D", "warnings"];
    cmd::run(
        cmd::cargo()
            .args(["clippy", "--workspace", "--all-targets"])
            .args(deny),
    )?;
    for krate in Workspace::load()?.crates() {
        cmd::run(
            cmd::cargo()
                .args(["clippy", "-p", &krate.name, "--no-default-features"])
                .args(deny),
        )?;
    }
    Ok(())
}

/// Each crate with a `tokio` feature must not reach tokio without it: its normal
/// dependency graph under `--no-default-features` holds no package named `tokio`.
///
/// The graph is listed whole rather than asked with `cargo tree -i tokio`: `-i` exits
/// 0 with "nothing to print" when tokio is in the lockfile but not in this graph, fails
/// when tokio is in no graph at all, and fails when the lockfile holds two tokio
/// versions; a listing has one meaning, and a failing `cargo tree` stays a failure.
fn no_tokio() -> Result {
    let workspace = Workspace::load()?;
    let with_tokio = workspace
        .crates()
        .filter(|p| p.features.iter().any(|f| f == "tokio"));
    let mut checked = 0;
    for krate in with_tokio {
        let mut tree = cmd::cargo();
        tree.args(["tree", "-p", &krate.name, "--no-default-features"])
            .args(["-e", "normal", "--prefix", "none", "--format", "{p}"]);
        eprintln!("$ {}", cmd::describe(&tree));
        let out = cmd::output(&mut tree)?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({}):\n{}",
                cmd::describe(&tree),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if let Some(version) = tokio_version(&String::from_utf8_lossy(&out.stdout)) {
            // Show how tokio gets in, then fail.
            let spec = format!("tokio@{version}");
            let _ = cmd::run(
                cmd::cargo()
                    .args(["tree", "-p", &krate.name, "--no-default-features"])
                    .args(["-e", "normal", "-i", &spec]),
            );
            return Err(format!(
                "`{}` depends on tokio even with --no-default-features; \
                 put the dependency behind its `tokio` feature",
                krate.name
            ));
        }
        eprintln!("no-tokio: {} ok", krate.name);
        checked += 1;
    }
    if checked == 0 {
        eprintln!("no-tokio: no crate has a `tokio` feature yet");
    }
    Ok(())
}

/// The version of the `tokio` package in a `cargo tree --prefix none --format {p}`
/// listing (lines like `tokio v1.45.0` or `chorus-framing v0.1.0 (/path)`), if any.
fn tokio_version(listing: &str) -> Option<&str> {
    listing.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let name = words.next()?;
        let version = words.next()?.strip_prefix('v')?;
        (name == "tokio").then_some(version)
    })
}

fn layering() -> Result {
    let workspace = Workspace::load()?;
    let crates: Vec<_> = workspace.crates().collect();
    let found = layers::violations(layers::LAYERS, &crates);
    if found.is_empty() {
        eprintln!("layering: ok ({} crates)", crates.len());
        return Ok(());
    }
    for violation in &found {
        eprintln!("layering: {violation}");
    }
    Err(format!("{} layering violation(s)", found.len()))
}

/// `SeededEntropy` (deterministic, not secure) only in tests and simulators.
fn test_rng() -> Result {
    crate::entropy::check(&cmd::root())
}

fn doc() -> Result {
    cmd::run(cmd::cargo().env("RUSTDOCFLAGS", "-D warnings").args([
        "doc",
        "--workspace",
        "--no-deps",
    ]))
}

/// Seconds each fuzz target runs for.
const FUZZ_SECONDS: u32 = 5;

/// Builds every fuzz target on stable without a sanitizer, then runs each briefly.
fn fuzz() -> Result {
    if !cmd::root().join("fuzz/Cargo.toml").exists() {
        eprintln!("fuzz: skipped, fuzz/Cargo.toml does not exist yet");
        return Ok(());
    }
    install::system_packages(Job::Fuzz)?;
    install::cargo_tool("fuzz", "cargo-fuzz")?;
    let fuzz = |bootstrap: bool| {
        let mut cargo = cmd::cargo();
        if bootstrap {
            cargo.env("RUSTC_BOOTSTRAP", "1");
        }
        cargo.args(["fuzz"]);
        cargo
    };
    let mut list = fuzz(false);
    list.args(["list", "--fuzz-dir", "fuzz"]);
    let out = cmd::output(&mut list)?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed ({}):\n{}",
            cmd::describe(&list),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        eprintln!("fuzz: skipped, fuzz/ has no targets yet");
        return Ok(());
    }
    let build_args = ["build", "--fuzz-dir", "fuzz", "-s", "none"];
    // Stable rustc builds `-s none` targets; should cargo-fuzz ever need a nightly
    // flag, RUSTC_BOOTSTRAP=1 lets stable accept it. Build failures are retried that
    // way; run failures are findings and are not.
    let bootstrap = if cmd::run(fuzz(false).args(build_args)).is_ok() {
        false
    } else {
        eprintln!("fuzz: building on plain stable failed; retrying with RUSTC_BOOTSTRAP=1");
        cmd::run(fuzz(true).args(build_args))?;
        true
    };
    let max_time = format!("-max_total_time={FUZZ_SECONDS}");
    for target in &targets {
        cmd::run(
            fuzz(bootstrap)
                .args(["run", "--fuzz-dir", "fuzz", "-s", "none", target])
                .args(["--", &max_time]),
        )?;
    }
    eprintln!("fuzz: {} target(s) ran {FUZZ_SECONDS}s each", targets.len());
    Ok(())
}

/// The licence, ban and source policy of deny.toml, over every workspace member.
fn deny() -> Result {
    install::cargo_tool("deny", "cargo-deny")?;
    // Without `--workspace`, cargo-deny roots the graph at the root manifest's package
    // (the facade) alone and never sees crates the facade does not depend on.
    cmd::run(cmd::cargo().args([
        "deny",
        "--workspace",
        "check",
        "licenses",
        "bans",
        "sources",
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokio_in_a_tree_listing() {
        let with = "chorus-framing v0.1.0 (/w/crates/chorus-framing)\nbytes v1.12.2\n\
                    tokio-util v0.7.20\ntokio v1.54.1\npin-project-lite v0.2.18\n";
        assert_eq!(tokio_version(with), Some("1.54.1"));
        let without = "chorus-framing v0.1.0 (/w/crates/chorus-framing)\nbytes v1.12.2\n\
                       tokio-util v0.7.20 (*)\ntokio-macros v2.7.2 (proc-macro)\n";
        assert_eq!(tokio_version(without), None);
        assert_eq!(tokio_version(""), None);
    }
}
