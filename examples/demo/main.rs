//! The main job (DESIGN.md, "The main job"), on loopback: a login authority certifies
//! super nodes and users; the super nodes form the Global Index; clients publish
//! their presence, find each other by name and by search; a Chorus TURN relay runs;
//! pairs of clients connect with ICE, directly or through the relay.
//!
//! ```sh
//! cargo xtask demo            # installs what is missing, then runs this
//! cargo run --release --example demo -- [--out DIR]
//! ```
//!
//! Prints a report of who reached whom, by which path and how fast.

mod call;
mod directory;
mod paths;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::crypto::cert::Role;
use chorus::crypto::handshake::{self, LocalIdentity};
use chorus::index::record::NatClass;
use chorus::nat::driver::ice::Connection;
use std::sync::Arc;
use tokio::net::UdpSocket;

use directory::{Index, LoginAuthority, presence};
use paths::{Relay, Side, connect_pair, needs_relay};

/// Super nodes in the demo's index.
const SUPER_NODES: usize = 5;

/// What went wrong, for the one line the demo prints before exiting non-zero.
#[derive(Debug)]
pub(crate) enum DemoError {
    /// A step did not complete (named in the text).
    Step(String),
    /// A library call failed.
    Library(String),
    /// A socket or file operation failed.
    Io(std::io::Error),
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Step(s) | Self::Library(s) => f.write_str(s),
            Self::Io(e) => write!(f, "I/O: {e}"),
        }
    }
}

impl From<std::io::Error> for DemoError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

macro_rules! library_errors {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for DemoError {
            fn from(e: $t) -> Self {
                Self::Library(e.to_string())
            }
        }
    )*};
}
library_errors!(
    chorus::crypto::Error,
    chorus::index::Error,
    chorus::nat::Error,
    chorus::nat::UsageError,
);

/// The report the demo prints: one line per fact, grouped by section.
#[derive(Default)]
pub(crate) struct Report {
    started: Option<Instant>,
}

impl Report {
    pub(crate) fn section(&mut self, title: &str) {
        let t = self.started.get_or_insert_with(Instant::now).elapsed();
        println!("\n== {title} (t = {:.1} s)", t.as_secs_f64());
    }

    pub(crate) fn line(&mut self, text: impl AsRef<str>) {
        println!("   {}", text.as_ref());
    }
}

struct Options {
    out: PathBuf,
}

fn parse_args() -> Result<Options, String> {
    let mut out = PathBuf::from("target/demo");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next().ok_or("--out needs a directory")?.into(),
            "-h" | "--help" => {
                return Err("usage: demo [--out DIR]   (received audio is written to DIR)".into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Options { out })
}

/// A user's client, logged in at a super node. `listen` is the address it publishes
/// for incoming calls (each call then runs ICE on sockets of its own).
struct Client {
    name: &'static str,
    /// The handshake configuration: its certified key and the authority it trusts.
    identity: handshake::Config,
    display: &'static str,
    super_node: usize,
    nat: NatClass,
    _listen: UdpSocket,
}

/// Sends a probe across `conn` and waits for the other side's echo: the round trip.
async fn round_trip(a: &mut Connection, b: &mut Connection) -> Result<Duration, DemoError> {
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), async {
        a.send(Bytes::from_static(&[0x80, 0x7f, 0, 1])).await?;
        let got = b.recv().await?;
        b.send(got).await?;
        a.recv().await?;
        Ok::<_, chorus::nat::driver::ice::IceError>(())
    })
    .await
    .map_err(|_| DemoError::Step("no echo across the path".into()))?
    .map_err(|e| DemoError::Step(format!("path: {e}")))?;
    Ok(start.elapsed())
}

async fn run(options: Options) -> Result<(), DemoError> {
    let mut report = Report::default();
    std::fs::create_dir_all(&options.out)?;

    report.section("login authority and super nodes");
    let mut login = LoginAuthority::new()?;
    let mut index = Index::start(&mut login, SUPER_NODES, &mut report).await?;

    report.section("clients log in and publish their presence");
    let mut clients = Vec::new();
    for (name, display, super_node, nat) in [
        ("alice", "Alice Liddell", 1, NatClass::Open),
        ("bob", "Bob Marley", 2, NatClass::PortRestricted),
        ("carol", "Carol Danvers", 3, NatClass::Symmetric),
    ] {
        let (key, cert) = login.enroll(name, Role::User)?;
        let listen = UdpSocket::bind("127.0.0.1:0").await?;
        let record = presence(
            name,
            display,
            &key,
            &cert,
            index.addr(super_node),
            vec![listen.local_addr()?],
            nat,
        )?;
        let replicas = index.publish(super_node, record).await?;
        report.line(format!(
            "{name} logged in at sn-{super_node}, presence stored on {replicas} super nodes"
        ));
        let identity =
            handshake::Config::new(Arc::new(LocalIdentity::new(key, cert)?), login.trust());
        clients.push(Client {
            identity,
            name,
            display,
            super_node,
            nat,
            _listen: listen,
        });
    }

    report.section("who finds whom");
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let (asker, wanted) = (&clients[from], &clients[to]);
        let o = index.find(asker.super_node, wanted.name).await?;
        let record = o.record.ok_or_else(|| {
            DemoError::Step(format!("{} did not find {}", asker.name, wanted.name))
        })?;
        report.line(format!(
            "{} found {} in {} hop(s), {} ms, {} messages: super node {}, candidates {:?}, NAT {:?}",
            asker.name,
            wanted.name,
            o.hops.unwrap_or(0),
            o.found_after.unwrap_or(o.duration).as_millis(),
            o.messages,
            record.super_nodes.first().map_or_else(String::new, ToString::to_string),
            record.candidates,
            record.nat_class,
        ));
    }
    let word = clients[2]
        .display
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let o = index.search(clients[0].super_node, &word).await?;
    let names: Vec<&str> = o.results.iter().map(|r| r.display_name.as_str()).collect();
    report.line(format!("alice searched for {word:?}: {names:?}"));
    if names != [clients[2].display] {
        return Err(DemoError::Step(format!(
            "search for {word:?} found {names:?}"
        )));
    }

    report.section("paths: ICE, directly or through the Chorus TURN relay");
    let accounts: Vec<(String, String)> = clients
        .iter()
        .map(|c| (c.name.to_owned(), format!("{}-turn-password", c.name)))
        .collect();
    let relay = Relay::start(&accounts).await?;
    report.line(format!("TURN relay listening on {}", relay.addr));
    let hosts: Vec<(&str, NatClass)> = clients.iter().map(|c| (c.name, c.nat)).collect();
    let mut connections = Vec::new();
    for (i, (a, b)) in [(0, 1), (0, 2), (1, 2)].into_iter().enumerate() {
        let (an, anat) = hosts[a];
        let (bn, bnat) = hosts[b];
        let relayed = needs_relay(anat, bnat);
        // Each call runs ICE on sockets of its own. Where the NATs defeat hole
        // punching, the symmetric side allocates on the relay and uses only that.
        let side = |i: usize| -> Result<Side, DemoError> {
            let (name, nat) = hosts[i];
            let relay_only = relayed && nat == NatClass::Symmetric;
            let host = if relay_only {
                None
            } else {
                Some(UdpSocket::from_std(
                    std::net::UdpSocket::bind("127.0.0.1:0")
                        .and_then(|s| s.set_nonblocking(true).map(|()| s))?,
                )?)
            };
            let turn = relay_only.then(|| {
                let (user, password) = &accounts[i];
                (relay.addr, user.clone(), password.clone())
            });
            Ok(Side { name, host, turn })
        };
        let (mut x, mut y) = connect_pair(side(a)?, side(b)?, 10 * i as u64 + 1).await?;
        let rtt = round_trip(&mut x, &mut y).await?;
        report.line(format!(
            "{an} ({anat:?}) -> {bn} ({bnat:?}): {:?}, {} -> {}, round trip {} us",
            x.kind(),
            x.local().addr,
            x.remote().addr,
            rtt.as_micros()
        ));
        connections.push(((a, b), x, y));
    }

    report.section("calls: authenticated key exchange over each path");
    for (n, ((a, b), x, y)) in connections.iter_mut().enumerate() {
        let (_caller_keys, _callee_keys, (saw_b, saw_a)) =
            call::handshake(x, y, &clients[*a].identity, &clients[*b].identity, n as u64).await?;
        report.line(format!(
            "{} called {}: SIGMA-I handshake proved {saw_b} to {} and {saw_a} to {}, SRTP {:?} keys derived",
            clients[*a].name, clients[*b].name, clients[*a].name, clients[*b].name, call::SUITE
        ));
    }

    report.section("done");
    index.leave().await;
    drop(connections);
    relay.stop().await;
    report.line(format!("output directory: {}", options.out.display()));
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
