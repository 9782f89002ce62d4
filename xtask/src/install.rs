//! Installing what the jobs need: Debian packages and cargo subcommands, only when
//! missing.

use std::collections::BTreeSet;
use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::cmd::{self, Result};

/// A job that needs system packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    /// `cargo xtask demo`
    Demo,
    /// `cargo xtask test` (and so `cargo xtask ci`)
    Test,
    /// The fuzz smoke of `cargo xtask ci`
    Fuzz,
}

/// How to tell that a system package is installed.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// An executable of this name on `PATH`.
    Binary(&'static str),
    /// This file exists (e.g. a header or a shared library).
    #[allow(dead_code, reason = "for table entries to come")]
    File(&'static str),
    /// `pkg-config --exists <module>` succeeds.
    PkgConfig(&'static str),
}

/// A Debian package some job needs.
struct Need {
    /// The Debian package that provides it.
    package: &'static str,
    /// How to see whether it is already there.
    probe: Probe,
    /// The jobs that need it.
    jobs: &'static [Job],
}

/// A table line: `package`, found by `probe`, is needed by `jobs`.
const fn need(package: &'static str, probe: Probe, jobs: &'static [Job]) -> Need {
    Need {
        package,
        probe,
        jobs,
    }
}

const ALL: &[Job] = &[Job::Demo, Job::Test, Job::Fuzz];
const TEST: &[Job] = &[Job::Test];
const FUZZ: &[Job] = &[Job::Fuzz];

/// What the jobs need from the system, one line per package. Add a line when a crate
/// starts building C code or a test starts running a real independent implementation.
const NEEDS: &[Need] = &[
    // The C toolchain: Rust's linker driver and the `cc` crate's compiler (ring).
    need("gcc", Probe::Binary("cc"), ALL),
    // libfuzzer-sys compiles libFuzzer, which is C++.
    need("g++", Probe::Binary("c++"), FUZZ),
    // The fuzz targets that reach libopus run under AddressSanitizer with libopus
    // itself instrumented, built by clang (rustc's ASan runtime is LLVM's).
    need("clang", Probe::Binary("clang"), FUZZ),
    // libsrtp, the independent SRTP implementation chorus-crypto interoperates with:
    // its tests compile a small C harness against it, found through pkg-config.
    need("pkg-config", Probe::Binary("pkg-config"), TEST),
    need("libsrtp2-dev", Probe::PkgConfig("libsrtp2"), TEST),
    // libopus 1.6.1, built from source by opusic-c's opusic-sys (chorus-media's
    // default `opus` feature; the fuzz build enables it too).
    need("cmake", Probe::Binary("cmake"), ALL),
    need("coturn", Probe::Binary("turnserver"), TEST),
    // The NAT scenario tests build namespaces with `ip` and NATs with `nft`.
    need("iproute2", Probe::Binary("ip"), TEST),
    need("nftables", Probe::Binary("nft"), TEST),
];

/// Installs the Debian packages `job` needs that are missing: with apt-get when root on
/// Debian/Ubuntu, otherwise stops with one line naming them.
pub(crate) fn system_packages(job: Job) -> Result {
    let missing = missing(job);
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let debian = Path::new("/etc/debian_version").exists();
    if !(debian && is_root()) {
        let how = if debian {
            "sudo apt-get install"
        } else {
            "your package manager, e.g. apt-get install"
        };
        return Err(format!(
            "missing system packages: {list}; install them with: {how} {list}"
        ));
    }
    eprintln!("installing missing system packages: {list}");
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        cmd::run(&mut cmd)
    };
    apt(&["update", "-q"])?;
    apt(&[&["install", "-y", "-q"], missing.as_slice()].concat())?;
    match self::missing(job) {
        still if still.is_empty() => Ok(()),
        still => Err(format!(
            "still missing after apt-get install: {}",
            still.join(" ")
        )),
    }
}

/// The packages `job` needs whose probe fails, deduplicated and sorted.
fn missing(job: Job) -> Vec<&'static str> {
    let missing: BTreeSet<_> = NEEDS
        .iter()
        .filter(|n| n.jobs.contains(&job) && !present(n.probe))
        .map(|n| n.package)
        .collect();
    missing.into_iter().collect()
}

fn present(probe: Probe) -> bool {
    match probe {
        Probe::Binary(name) => on_path(name),
        Probe::File(path) => Path::new(path).exists(),
        Probe::PkgConfig(module) => {
            cmd::succeeds(Command::new("pkg-config").args(["--exists", module]))
        }
    }
}

/// Whether an executable file `name` is in a directory on `PATH`.
fn on_path(name: &str) -> bool {
    let Some(path) = env::var_os("PATH") else {
        return false;
    };
    env::split_paths(&path).any(|dir| {
        dir.join(name)
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// Makes `cargo <subcommand>` available: reused when `cargo <subcommand> --version`
/// works, otherwise `cargo install --locked <krate>`.
pub(crate) fn cargo_tool(subcommand: &str, krate: &str) -> Result {
    if cmd::succeeds(cmd::cargo().args([subcommand, "--version"])) {
        return Ok(());
    }
    eprintln!("`cargo {subcommand}` is missing; installing {krate}");
    cmd::run(cmd::cargo().args(["install", "--locked", krate]))
}

/// Makes `cargo <subcommand>` available from a rustup component (rustfmt, clippy).
pub(crate) fn rustup_component(subcommand: &str, component: &str) -> Result {
    if cmd::succeeds(cmd::cargo().args([subcommand, "--version"])) {
        return Ok(());
    }
    eprintln!("`cargo {subcommand}` is missing; adding the rustup component {component}");
    cmd::run(Command::new("rustup").args(["component", "add", component]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_binaries_on_path() {
        assert!(on_path("sh"));
        assert!(!on_path("surely-no-such-binary-xtask"));
    }

    #[test]
    fn every_job_has_its_needs_probed() {
        // The toolchain that built this test is present, so nothing is missing.
        assert!(missing(Job::Test).is_empty());
        assert!(missing(Job::Demo).is_empty());
        assert!(missing(Job::Fuzz).is_empty());
    }
}
