//! Crash safety: writer processes `SIGKILL`ed at random points never leave anything
//! but the old or the new complete file; two processes updating at once both succeed
//! and neither loses the other's updates, also when they race for the lock a killed
//! holder left.
//!
//! The test binary re-runs itself as the writer child (`child_writer`, a no-op unless
//! `CHORUS_HC_CHILD_DIR` is set).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_framing::{Entropy, SeededEntropy};
use chorus_hostcache::hostcache::Source;
use chorus_hostcache::nat::{ClassicNat, NatInfo};
use chorus_hostcache::store::{Store, StoreConfig};
use chorus_hostcache::xml::SharedFile;

const DIR_VAR: &str = "CHORUS_HC_CHILD_DIR";
const SAVES_VAR: &str = "CHORUS_HC_CHILD_SAVES";
/// Set: the child takes the lock (inside an update), says "holding" and never lets go.
const HOLD_VAR: &str = "CHORUS_HC_CHILD_HOLD";

fn epoch(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

fn store(dir: &Path) -> Store {
    let mut c = StoreConfig::default();
    c.lock_wait = Duration::from_secs(30);
    Store::new(dir, c).unwrap()
}

/// Generation `g`: 150 cache entries (so a write takes a while) and the generation in
/// the NAT timestamp.
fn generation(store: &Store, g: u64) -> SharedFile {
    let mut f = store.empty_shared().unwrap();
    for i in 0..150u32 {
        let addr = std::net::SocketAddr::from(([10, (i % 250) as u8, (i / 250) as u8, 1], 33033));
        f.host_cache
            .insert(addr, Source::Gossip, epoch(1_000_000 + u64::from(i)))
            .unwrap();
    }
    f.nat = Some(NatInfo {
        discovered_at: epoch(g),
        mapping: None,
        filtering: None,
        classic: ClassicNat::Unknown,
        mapped_address: None,
    });
    f
}

fn generation_of(f: &SharedFile) -> u64 {
    f.nat
        .unwrap()
        .discovered_at
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let store = store(Path::new(&dir));
    let saves: Option<u64> = std::env::var(SAVES_VAR).ok().and_then(|s| s.parse().ok());
    if std::env::var_os(HOLD_VAR).is_some() {
        let _ = store.update_shared(epoch(0), |_| {
            println!("holding");
            loop {
                std::thread::park();
            }
        });
    }
    let mut done = 0;
    println!("writing");
    loop {
        // One read-modify-write under the lock: the next generation of what is there.
        store
            .update_shared(epoch(0), |f| {
                let current = f.nat.map_or(0, |_| generation_of(f));
                *f = generation(&store, current + 1);
            })
            .unwrap();
        done += 1;
        if saves.is_some_and(|n| done >= n) {
            return;
        }
    }
}

fn spawn_writer(dir: &Path, saves: Option<u32>) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_writer", "--test-threads=1", "--nocapture"])
        .env(DIR_VAR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(n) = saves {
        cmd.env(SAVES_VAR, n.to_string());
    }
    cmd.spawn().unwrap()
}

/// Reads the child's stdout until a line containing `word`.
fn wait_for_line(child: &mut Child, word: &str) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.contains(word) {
        line.clear();
    }
    assert!(
        line.contains(word),
        "the child ended before saying {word:?}"
    );
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("chorus-hc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Kills a writer `iterations` times at random moments; after each kill the file must
/// load, be complete, and be at least as new as before.
fn kill_writers(name: &str, iterations: u32) -> (u32, u64) {
    let dir = fresh_dir(name);
    let s = store(&dir);
    s.save_shared(&generation(&s, 1)).unwrap();
    let mut rng = SeededEntropy::new(0x5eed);
    let mut last = 1;
    let mut advanced = 0;
    for i in 0..iterations {
        let mut child = spawn_writer(&dir, None);
        // Wait until the child is in its save loop, then kill it within 300 ms (a save
        // takes tens of milliseconds in a debug build, so kills land at every stage).
        wait_for_line(&mut child, "writing");
        std::thread::sleep(Duration::from_micros(rng.u64().unwrap() % 300_000));
        child.kill().unwrap();
        child.wait().unwrap();
        let f = s
            .load_shared(epoch(0))
            .unwrap_or_else(|e| panic!("iteration {i}: {e}"))
            .unwrap_or_else(|| panic!("iteration {i}: shared.xml is missing"));
        let g = generation_of(&f);
        assert!(g >= last, "iteration {i}: went back from {last} to {g}");
        assert_eq!(
            f,
            generation(&s, g),
            "iteration {i}: not a complete version"
        );
        if g > last {
            advanced += 1;
        }
        last = g;
        let stray: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("corrupt"))
            .collect();
        assert!(stray.is_empty(), "iteration {i}: {stray:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    (advanced, last)
}

#[test]
fn writers_killed_at_random_points_never_damage_the_file() {
    let (advanced, last) = kill_writers("kill100", 100);
    assert!(
        advanced > 10,
        "the writers rarely got to save: {advanced} ({last} generations)"
    );
}

/// Stress mode: `cargo test -p chorus-hostcache --release --test store_crash_safety -- --ignored`.
#[test]
#[ignore = "stress: 1,000 kills, a few minutes"]
fn stress_1000_kills() {
    let (advanced, last) = kill_writers("kill1000", 1000);
    println!(
        "1000 kills: {advanced} iterations saw a newer file, {last} generations written, 0 damaged"
    );
}

#[test]
fn two_processes_updating_at_once_lose_no_update() {
    let dir = fresh_dir("two-writers");
    let (mut a, mut b) = (spawn_writer(&dir, Some(25)), spawn_writer(&dir, Some(25)));
    assert!(a.wait().unwrap().success(), "writer A failed");
    assert!(b.wait().unwrap().success(), "writer B failed");
    let s = store(&dir);
    let f = s.load_shared(epoch(0)).unwrap().unwrap();
    // Every update read the file the previous one wrote, whichever process made it.
    assert_eq!(generation_of(&f), 50);
    assert_eq!(f, generation(&s, 50));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_processes_racing_for_a_killed_holders_lock_both_get_it_in_turn() {
    let dir = fresh_dir("stale-race");
    let s = store(&dir);
    s.save_shared(&generation(&s, 1)).unwrap();
    // A holder killed inside its update leaves the lock file with its (now dead, soon
    // reusable) PID in it.
    let mut holder = Command::new(std::env::current_exe().unwrap());
    holder
        .args(["--exact", "child_writer", "--test-threads=1", "--nocapture"])
        .env(DIR_VAR, &dir)
        .env(HOLD_VAR, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut holder = holder.spawn().unwrap();
    wait_for_line(&mut holder, "holding");
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(dir.join(chorus_hostcache::store::LOCK_FILE).exists());
    // Two writers start at once on that lock: each must get it in turn, never both.
    let (mut a, mut b) = (spawn_writer(&dir, Some(20)), spawn_writer(&dir, Some(20)));
    assert!(a.wait().unwrap().success(), "writer A failed");
    assert!(b.wait().unwrap().success(), "writer B failed");
    let f = s.load_shared(epoch(0)).unwrap().unwrap();
    assert_eq!(
        generation_of(&f),
        41,
        "an update was lost: both held the lock"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
