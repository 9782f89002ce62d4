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
    ("package", package),
    ("fuzz", super::fuzz::run),
    ("deny", deny),
];

/// Runs every step (or those named in `only`), printing each one's name and duration;
/// fails naming the first step that fails.
pub(crate) fn run(only: &[&str]) -> Result {
    if let Some(unknown) = only.iter().find(|o| !STEPS.iter().any(|(n, _)| n == *o)) {
        return Err(format!("no ci step `{unknown}`"));
    }
    let started = Instant::now();
    let mut took = Vec::new();
    for (i, &(name, step)) in STEPS.iter().enumerate() {
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
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
        took.len(),
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
    super::demo::run_for_ci()
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

/// The documentation with the features docs.rs builds each crate with
/// (`[package.metadata.docs.rs]`), warnings denied. (docs.rs also passes
/// `--cfg docsrs`, which only turns on nightly's feature labels.)
fn doc() -> Result {
    let workspace = Workspace::load()?;
    let features: Vec<String> = workspace
        .packages
        .iter()
        .flat_map(|p| {
            p.docs_rs_features
                .iter()
                .map(move |f| format!("{}/{f}", p.name))
        })
        .collect();
    let mut cargo = cmd::cargo();
    cargo
        .env("RUSTDOCFLAGS", "-D warnings")
        .args(["doc", "--workspace", "--no-deps"]);
    if !features.is_empty() {
        cargo.args(["--features", &features.join(",")]);
    }
    cmd::run(&mut cargo)
}

/// Every publishable crate packages, and the packages build from their files alone
/// with the workspace's `rust-version` (MSRV) toolchain.
///
/// `cargo package`'s own verification builds each package in a dependency tree of
/// its own (minutes each, every dependency again). Here the `.crate` files are
/// unpacked side by side into one throwaway workspace that patches crates.io's
/// `chorus-*` with them, and checked once, by the MSRV toolchain (installed with
/// rustup): a file a crate needs but does not ship, a dependency its published
/// manifest loses, or an API or dependency newer than the stated MSRV fails.
fn package() -> Result {
    let workspace = Workspace::load()?;
    let publish: Vec<&str> = workspace
        .packages
        .iter()
        .filter(|p| p.publish)
        .map(|p| p.name.as_str())
        .collect();
    let mut cargo = cmd::cargo();
    cargo.args(["package", "--no-verify", "--allow-dirty"]);
    for name in &publish {
        cargo.args(["-p", name]);
    }
    cmd::run(&mut cargo)?;
    let root = cmd::root();
    let check = root.join("target/package-check");
    let _ = std::fs::remove_dir_all(&check);
    std::fs::create_dir_all(&check).map_err(|e| format!("{}: {e}", check.display()))?;
    let (mut members, mut patches) = (Vec::new(), Vec::new());
    for p in workspace.packages.iter().filter(|p| p.publish) {
        let dir = format!("{}-{}", p.name, p.version);
        let file = root.join("target/package").join(format!("{dir}.crate"));
        cmd::run(
            std::process::Command::new("tar")
                .arg("-xzf")
                .arg(&file)
                .arg("-C")
                .arg(&check),
        )?;
        members.push(format!("{dir:?}"));
        patches.push(format!("{} = {{ path = {dir:?} }}", p.name));
    }
    let manifest = format!(
        "[workspace]\nresolver = \"3\"\nmembers = [{}]\n\n[patch.crates-io]\n{}\n",
        members.join(", "),
        patches.join("\n")
    );
    std::fs::write(check.join("Cargo.toml"), manifest)
        .map_err(|e| format!("{}: {e}", check.display()))?;
    // The main build's downloads and lockfile, so nothing newer sneaks in.
    std::fs::copy(root.join("Cargo.lock"), check.join("Cargo.lock"))
        .map_err(|e| format!("Cargo.lock: {e}"))?;
    let version = workspace.rust_version()?;
    let toolchain = format!("+{version}");
    let rustup = || std::process::Command::new("rustup");
    if !cmd::succeeds(rustup().args(["run", &version, "rustc", "--version"])) {
        cmd::run(rustup().args(["toolchain", "install", &version, "--profile", "minimal"]))?;
    }
    // Through rustup's `cargo` proxy (not $CARGO, this toolchain's cargo).
    cmd::run(
        std::process::Command::new("cargo")
            .current_dir(&check)
            .args([
                toolchain.as_str(),
                "check",
                "--workspace",
                "--lib",
                "--target-dir",
                "../package-check-target",
            ]),
    )
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
