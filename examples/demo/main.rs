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
mod conference;
mod directory;
mod paths;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::crypto::cert::Role;
use chorus::crypto::cert::TrustStore;
use chorus::crypto::handshake::{self, ExpectedPeer, LocalIdentity};
use chorus::index::record::NatClass;
use chorus::media::netsim::{LossModel, NetConfig};
use chorus::nat::driver::ice::Connection;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::UdpSocket;

use directory::{Index, LoginAuthority, presence};
use paths::{Relay, Side, connect_pair, needs_relay};

/// Super nodes in the demo's index.
const SUPER_NODES: usize = 5;
/// Seconds of speech each way in a call.
const CALL_SECONDS: usize = 4;

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
    chorus::media::Error,
    chorus::media::UsageError,
    chorus::media::DecodeError,
    chorus::mixer::Error,
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
    /// Its certified key, for the handshakes of its calls.
    identity: Arc<LocalIdentity>,
    display: &'static str,
    super_node: usize,
    nat: NatClass,
    _listen: UdpSocket,
}

/// The calls of the demo, `(caller, callee)` indices into the clients: who looks up
/// whom, and who calls whom over which path.
const CALLS: [(usize, usize); 3] = [(0, 1), (0, 2), (1, 2)];

/// The handshake configurations of a call: the caller accepts only the user it looked
/// up in the index (`username`, from its presence record), as a user; the callee has
/// no record of who may call, so it states that it accepts any certified user (not a
/// super node or the login authority).
fn handshake_configs(
    caller: &Client,
    callee: &Client,
    username: &str,
    trust: &Arc<TrustStore>,
) -> (handshake::Config, handshake::Config) {
    (
        handshake::Config::new(
            caller.identity.clone(),
            trust.clone(),
            ExpectedPeer::user(username, &[Role::User]),
        ),
        handshake::Config::new(
            callee.identity.clone(),
            trust.clone(),
            ExpectedPeer::accept_any_user(),
        ),
    )
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
        let identity = Arc::new(LocalIdentity::new(key, cert)?);
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
    // Each caller looks its callee up (the calls below are these pairs) and keeps the
    // record: its handshake then accepts only the user the index returned.
    let mut found = HashMap::new();
    for (from, to) in CALLS {
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
        found.insert((from, to), record);
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
    for (a, b) in CALLS {
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
        let (mut x, mut y) = connect_pair(side(a)?, side(b)?).await?;
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
    let mut sessions = Vec::new();
    let trust = login.trust();
    for ((a, b), x, y) in &mut connections {
        let looked_up = found.get(&(*a, *b)).ok_or_else(|| {
            DemoError::Step(format!("{} did not look up its callee", clients[*a].name))
        })?;
        let (caller_config, callee_config) =
            handshake_configs(&clients[*a], &clients[*b], &looked_up.username, &trust);
        let (caller, callee) = call::handshake(x, y, &caller_config, &callee_config).await?;
        report.line(format!(
            "{} called {}: SIGMA-I handshake proved {} to {} (the user it looked up) and {} to {} \
             (which accepts any certified user)",
            clients[*a].name,
            clients[*b].name,
            caller.peer().username(),
            clients[*a].name,
            callee.peer().username(),
            clients[*b].name,
        ));
        sessions.push((caller, callee));
    }

    report.section("calls: speech through Opus + FEC + SRTP over an impaired network");
    // 8 % random loss, 20 ms delay and up to 30 ms jitter in each direction, before
    // the packets take the ICE path (loopback itself loses nothing).
    let mut impairment = NetConfig::default();
    impairment.loss = LossModel::Random { p: 0.08 };
    impairment.jitter = Duration::from_millis(30);
    // Two voices: the second is the same generator read 9 % faster (a higher voice),
    // so the received audio can be told apart from the other direction's.
    let speech = |voice: u32| {
        let rate = if voice == 0 { 48_000 } else { 44_100 };
        chorus::media::quality::synthetic_speech(rate, 48_000 * CALL_SECONDS, 6 + voice)
    };
    // (speaker, listener, what was said, the other direction's speech, what was heard)
    let mut heard = Vec::new();
    for (n, (((a, b), x, y), (caller, callee))) in connections.iter_mut().zip(&sessions).enumerate()
    {
        if n == 1 {
            continue; // alice and carol talk in the conference below
        }
        let said = [speech(0), speech(1)];
        let directions = call::talk(
            (x, y),
            (call::keys(caller, 0)?, call::keys(callee, 0)?),
            said.clone(),
            &impairment,
            100 + n as u64,
        )
        .await?;
        let names = [clients[*a].name, clients[*b].name];
        for (i, d) in directions.iter().enumerate() {
            let (from, to) = (names[i], names[1 - i]);
            let lost_pct = 100.0 * d.lost as f64 / d.datagrams.max(1) as f64;
            let residual = d.concealed as f64 / d.frames.max(1) as f64 * 100.0;
            report.line(format!(
                "{from} -> {to}: {} frames + {} FEC packets, {} lost on the wire ({lost_pct:.1} %), \
                 {} rebuilt by FEC, {} by Opus in-band FEC, {} concealed (residual {residual:.1} %), \
                 jitter-buffer target {} ms, {:.1} s played",
                d.frames,
                d.repair,
                d.lost,
                d.recovered,
                d.recovered_inband,
                d.concealed,
                d.playout.as_millis(),
                d.heard.len() as f64 / 48_000.0,
            ));
            let path = options.out.join(format!("call-{from}-to-{to}.wav"));
            write_wav(&path, &d.heard)?;
            report.line(format!("   written to {}", path.display()));
            heard.push((
                from,
                to,
                said[i].clone(),
                said[1 - i].clone(),
                d.heard.clone(),
            ));
        }
    }

    report.section("conference: alice mixes for bob and carol (mix-minus)");
    // Each member talks for one second in turn: bob, carol, then alice.
    let second = 48_000;
    let mic = |turn: usize| {
        let mut m = vec![0i16; 3 * second];
        m[turn * second..(turn + 1) * second]
            .copy_from_slice(&chorus::media::quality::synthetic_speech(48_000, second, 8));
        m
    };
    let mut legs = Vec::new();
    let mut paths = connections.into_iter().zip(sessions);
    for (turn, name) in [(0, "bob"), (1, "carol")] {
        let Some((((0, _), x, y), (alice_side, member_side))) = paths.next() else {
            return Err(DemoError::Step("alice's paths expected first".into()));
        };
        legs.push(conference::Leg {
            name,
            mic: mic(turn),
            member: (y, call::keys(&member_side, 1)?),
            initiator: (x, call::keys(&alice_side, 1)?),
        });
    }
    let outcome = conference::run("alice", mic(2), legs).await?;
    report.line(format!(
        "streams at alice: {} in + {} out = 2(N-1) for N = 3; {} speaker changes",
        outcome.streams_in, outcome.streams_out, outcome.speaker_changes
    ));
    if outcome.streams_in + outcome.streams_out != chorus::mixer::streams_for(3) {
        return Err(DemoError::Step("stream count is not 2(N-1)".into()));
    }
    let turns = ["bob", "carol", "alice"];
    for (listener, heard) in &outcome.heard {
        // The middle of each one-second turn, clear of the path's delay.
        let level = |turn: usize| {
            let from = (turn * second + second / 5).min(heard.len());
            let to = (turn * second + 4 * second / 5).min(heard.len());
            conference::dbfs(&heard[from..to])
        };
        let levels: Vec<String> = (0..3)
            .map(|t| format!("{}'s turn {:.0} dBFS", turns[t], level(t)))
            .collect();
        report.line(format!("{listener} heard: {}", levels.join(", ")));
        let own = turns.iter().position(|t| t == listener).unwrap_or(0);
        let others = (0..3)
            .filter(|&t| t != own)
            .map(level)
            .fold(f64::MAX, f64::min);
        if level(own) > others - 20.0 || others < -50.0 {
            return Err(DemoError::Step(format!(
                "{listener}'s mix is not mix-minus"
            )));
        }
        let path = options.out.join(format!("conference-{listener}.wav"));
        write_wav(&path, heard)?;
        report.line(format!("   written to {}", path.display()));
    }

    index.leave().await;
    relay.stop().await;
    // After the network work: scoring takes a moment of CPU that would otherwise keep
    // the ICE agents of the calls still open from answering their consent checks.
    report.section("speech check: did each call's listener hear the speaker?");
    for (from, to, said, other, heard) in &heard {
        check_heard(&mut report, (from, to), said, other, heard)?;
    }
    report.section("done");
    report.line(format!("output directory: {}", options.out.display()));
    Ok(())
}

/// The least segmental SNR (dB, time-aligned) at which a call's received speech counts
/// as what was sent. Speech through Opus at 8 % loss scores 9-15 dB (7 and up on a
/// starved machine whose playout delay swings by hundreds of milliseconds); silence 0,
/// another voice about 0, noise below.
const MIN_CALL_SNR_DB: f64 = 4.0;

/// Fails unless what `to` heard is `from`'s speech: its time-aligned segmental SNR
/// against what `from` said is at least [`MIN_CALL_SNR_DB`] and clearly above its
/// score against the other direction's speech.
fn check_heard(
    report: &mut Report,
    (from, to): (&str, &str),
    said: &[i16],
    other: &[i16],
    heard: &[i16],
) -> Result<(), DemoError> {
    use chorus::media::quality::aligned_segmental_snr;
    let snr = aligned_segmental_snr(said, heard, 48_000, 960, 0);
    let against_other = aligned_segmental_snr(other, heard, 48_000, 960, 0);
    report.line(format!(
        "   {to} heard {from}: segmental SNR {snr:.1} dB (against the other voice \
         {against_other:.1} dB)"
    ));
    if snr < MIN_CALL_SNR_DB || snr < against_other + 3.0 {
        return Err(DemoError::Step(format!(
            "{to} did not hear {from}'s speech: segmental SNR {snr:.1} dB \
             (needs {MIN_CALL_SNR_DB} dB), {against_other:.1} dB against the other voice"
        )));
    }
    Ok(())
}

/// Writes 48 kHz mono 16-bit PCM as a WAV file.
fn write_wav(path: &std::path::Path, samples: &[i16]) -> Result<(), DemoError> {
    let wav = chorus::media::wav::Wav {
        sample_rate: 48_000,
        channels: 1,
        samples: samples.to_vec(),
    };
    let mut bytes = Vec::new();
    chorus::media::wav::write(&wav, &mut bytes)?;
    Ok(std::fs::write(path, bytes)?)
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
