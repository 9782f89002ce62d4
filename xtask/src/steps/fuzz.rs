//! The fuzz step of `cargo xtask ci`: every cargo-fuzz target runs for
//! [`FUZZ_SECONDS`], as many at once as the machine has cores. The targets whose input
//! reaches C code (libopus) run under AddressSanitizer with libopus itself
//! instrumented; the rest are safe Rust (the crates forbid `unsafe`) and run without a
//! sanitizer on stable. Each target's executions are printed in a table at the end.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{self, Result};
use crate::install::{self, Job};

/// Seconds each fuzz target runs for.
const FUZZ_SECONDS: u32 = 30;

/// Targets whose input reaches libopus (C): these run under AddressSanitizer.
const C_TARGETS: &[&str] = &["opus_packet", "mixer_input", "session_input"];

/// Where the ASan build lives, apart from the plain one (different flags would
/// otherwise rebuild each other in one target directory).
const ASAN_TARGET_DIR: &str = "fuzz/target-asan";

/// One target's run.
struct Run {
    target: String,
    asan: bool,
    log: PathBuf,
    started: Instant,
    child: Child,
}

/// What a finished run reports.
struct Outcome {
    target: String,
    asan: bool,
    seconds: f64,
    executions: Option<u64>,
}

pub(crate) fn run() -> Result {
    if !cmd::root().join("fuzz/Cargo.toml").exists() {
        return Err("fuzz/Cargo.toml is missing".into());
    }
    install::system_packages(Job::Fuzz)?;
    install::cargo_tool("fuzz", "cargo-fuzz")?;
    let targets = list_targets()?;
    for c in C_TARGETS {
        if !targets.iter().any(|t| t == c) {
            return Err(format!(
                "fuzz target `{c}` (listed as reaching C code) is gone"
            ));
        }
    }
    // Stable rustc builds `-s none` targets. AddressSanitizer needs `-Zsanitizer`,
    // which stable accepts under RUSTC_BOOTSTRAP=1; clang instruments libopus with the
    // same (LLVM) ASan runtime rustc links.
    cmd::run(fuzz_cmd().args(["build", "--fuzz-dir", "fuzz", "-s", "none"]))?;
    for target in C_TARGETS {
        cmd::run(asan_env(fuzz_cmd()).args([
            "build",
            "--fuzz-dir",
            "fuzz",
            "-s",
            "address",
            "--target-dir",
            ASAN_TARGET_DIR,
            target,
        ]))?;
    }
    let host = host_triple()?;
    let logs = cmd::root().join("target/fuzz-logs");
    fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let jobs = thread::available_parallelism().map_or(1, usize::from);
    eprintln!(
        "fuzz: {} targets, {FUZZ_SECONDS}s each, {jobs} at a time",
        targets.len()
    );
    let mut queue: Vec<&String> = targets.iter().rev().collect();
    let mut running: Vec<Run> = Vec::new();
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    while !queue.is_empty() || !running.is_empty() {
        while running.len() < jobs {
            let Some(target) = queue.pop() else { break };
            running.push(start(target, &host, &logs)?);
        }
        thread::sleep(Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            let status = running[i]
                .child
                .try_wait()
                .map_err(|e| format!("fuzz target {}: {e}", running[i].target))?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let run = running.swap_remove(i);
            let log = fs::read_to_string(&run.log).unwrap_or_default();
            if !status.success() {
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                failures.push(format!(
                    "fuzz target `{}` failed ({status}); log {}:\n{}",
                    run.target,
                    run.log.display(),
                    tail.join("\n")
                ));
            }
            outcomes.push(Outcome {
                target: run.target,
                asan: run.asan,
                seconds: run.started.elapsed().as_secs_f64(),
                executions: executions(&log),
            });
        }
    }
    outcomes.sort_by(|a, b| a.target.cmp(&b.target));
    eprintln!("\nfuzz: executions per target ({FUZZ_SECONDS}s each)");
    eprintln!(
        "  {:<28} {:<9} {:>12} {:>10}",
        "target", "sanitizer", "executions", "per second"
    );
    for o in &outcomes {
        let execs = o.executions.map_or("?".into(), |n| n.to_string());
        let rate = o.executions.map_or("?".into(), |n| {
            format!("{:.0}", n as f64 / o.seconds.max(1.0))
        });
        let sanitizer = if o.asan { "address" } else { "none" };
        eprintln!("  {:<28} {sanitizer:<9} {execs:>12} {rate:>10}", o.target);
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n\n"))
    }
}

fn fuzz_cmd() -> Command {
    let mut cargo = cmd::cargo();
    cargo.arg("fuzz");
    cargo
}

fn asan_env(mut cmd: Command) -> Command {
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .env("CC", "clang")
        .env("CXX", "clang++")
        .env("CFLAGS", "-fsanitize=address");
    cmd
}

fn list_targets() -> Result<Vec<String>> {
    let mut list = fuzz_cmd();
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
        return Err("fuzz/ has no targets".into());
    }
    Ok(targets)
}

/// The host target triple, from `rustc -vV`: cargo-fuzz builds for it.
fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = cmd::output(Command::new(rustc).arg("-vV"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "`rustc -vV` printed no host triple".into())
}

/// Starts `target`'s fuzzer on its corpus, logging to `logs/<target>.log`.
fn start(target: &str, host: &str, logs: &Path) -> Result<Run> {
    let root = cmd::root();
    let asan = C_TARGETS.contains(&target);
    let target_dir = if asan { ASAN_TARGET_DIR } else { "fuzz/target" };
    let binary = root
        .join(target_dir)
        .join(host)
        .join("release")
        .join(target);
    let corpus = root.join("fuzz/corpus").join(target);
    let artifacts = root.join("fuzz/artifacts").join(target);
    for dir in [&corpus, &artifacts] {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let log = logs.join(format!("{target}.log"));
    let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let mut fuzzer = Command::new(&binary);
    fuzzer
        .current_dir(&root)
        .arg(format!("-max_total_time={FUZZ_SECONDS}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    eprintln!("$ {}", cmd::describe(&fuzzer));
    let child = fuzzer
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", binary.display()))?;
    Ok(Run {
        target: target.to_owned(),
        asan,
        log,
        started: Instant::now(),
        child,
    })
}

/// libFuzzer's `stat::number_of_executed_units` from a `-print_final_stats=1` log.
fn executions(log: &str) -> Option<u64> {
    log.lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_execution_count_from_final_stats() {
        let log = "#1024 pulse cov: 12\nDone 1234567 runs in 30 second(s)\n\
                   stat::number_of_executed_units: 1234567\nstat::average_exec_per_sec: 41152\n";
        assert_eq!(executions(log), Some(1_234_567));
        assert_eq!(executions("crashed\n"), None);
    }
}
