//! The video SFU end to end: one relay (chorus-mixer's `Sfu`) in real time on
//! chorus-nat's batched UDP driver, N participants on loopback, each with its own
//! UDP socket and its own SRTP keys both ways, each publishing three simulcast VP8
//! layers with three temporal layers at 30 frames per second (keyframes and delta
//! frames) and receiving the N-1 others' streams at the layers its group asks for.
//! 1 % of what reaches each receiver is lost; receivers NACK over SRTCP and the
//! relay resends from its per-leg history. The cost is the relay thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`: user and kernel, system calls included) over the
//! media; the figure is forwarded packets per second per core.
//!
//! - `media.rs`: the streams (layers, temporal pattern, keyframes, packet sizes) and
//!   the receiver groups (which layers each asks for, and how).
//! - `relay.rs`: the relay: the SFU behind one socket, a leg per participant.
//! - `load.rs`: the participants, on one load thread: publishing, the simulated
//!   loss, receiving, NACK, receiver reports, REMB.
//!
//! On loopback the kernel's receive work for a datagram runs on the *sending*
//! thread: the relay pays for delivering what it forwards into the receivers'
//! sockets, and the load thread pays for delivering what publishers send into the
//! relay's. Pin the two threads to different cores (`--relay-cpu`, `--load-cpu`).
//!
//! A run fails when the relay or a participant rejects a packet, when receivers end
//! with more than 0.5 % of packets lost for good (after NACK), or when a receiver
//! gets a layer or temporal layer its group should not. It is *not real time* when
//! more than 0.1 % of the datagrams are lost in a socket or when the median delay
//! from a publisher's send to the relay reading the packet (its abs-send-time, which
//! SRTP leaves in clear) exceeds 10 ms: the relay has a backlog. The tail is printed,
//! not judged: a keyframe storm (every publisher answering the same keyframe requests
//! at once) delays some packets by milliseconds at any load. The delay to the
//! receivers is printed too; it includes the load thread's own lateness, which a
//! process sharing its core adds to. `--find-max` raises N until a run is not real
//! time or fails a check.
//!
//! The share of each core the hypervisor took (steal) and left idle during the media
//! is printed from `/proc/stat`: on a shared VM a run with much steal measures the
//! host, not the relay.

mod load;
mod media;
#[path = "../common/realtime.rs"]
mod realtime;
mod relay;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chorus::crypto::SystemEntropy;
use chorus::crypto::srtp::SrtpSession;
use chorus::mixer::sfu::{LegSecurity, SfuConfig, SfuStats};

use load::{LoadReport, Party, Plan};
use media::{FPS, Group};
use realtime::{SUITE, ms, pin, policy, serve_until};
use relay::{Attach, Relay};

const HELP: &str = "\
sfu-bench: the video SFU end to end, SRTP on every leg, a UDP socket per participant

USAGE: cargo run --release --example sfu-bench -- [OPTIONS]

OPTIONS:
  --participants <N>     each publishes 3 simulcast layers and receives the N-1
                         others (default 20, at least 2)
  --seconds <S>          seconds of media (default 10)
  --loss <P>             percent of RTP datagrams each receiver loses (default 1)
  --keyframe-every <S>   seconds between a layer's periodic keyframes (default 3)
  --switch-every <S>     the switching group changes its estimate every S seconds
                         (default 4; 0: never)
  --history <N>          RTP packets the relay keeps per leg for NACKs (default:
                         SfuConfig's)
  --relay-cpu <C>        pin the relay's thread to core C
  --load-cpu <C>         pin the participants' load thread to core C
  --find-max             from --participants up by a quarter per run until a run
                         is not real time or fails; report the largest that is
                         neither
";

/// Time from the end of setup to the first frame.
const LEAD: Duration = Duration::from_millis(300);
/// Time the relay keeps serving after the last frame, for the last NACKs.
const GRACE: Duration = Duration::from_millis(500);
/// Socket loss above this share means a side fell behind.
const MAX_SOCKET_LOSS: f64 = 0.001;
/// Median delay from publisher to relay above this: the relay has a backlog, not
/// real time.
const MAX_DELAY_P50: Duration = Duration::from_millis(10);
/// Packets lost for good (after NACK) above this share fail the run.
const MAX_UNRECOVERED: f64 = 0.005;

#[derive(Debug, Clone)]
struct Options {
    participants: usize,
    seconds: u64,
    /// Share of RTP datagrams each receiver loses.
    loss: f64,
    keyframe_every: Duration,
    switch_every: Option<Duration>,
    history: Option<usize>,
    relay_cpu: Option<usize>,
    load_cpu: Option<usize>,
    find_max: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            participants: 20,
            seconds: 10,
            loss: 0.01,
            keyframe_every: Duration::from_secs(3),
            switch_every: Some(Duration::from_secs(4)),
            history: None,
            relay_cpu: None,
            load_cpu: None,
            find_max: false,
        }
    }
}

fn parse() -> Result<Option<Options>, String> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--find-max" => {
                o.find_max = true;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("bad value for {flag}: {value}");
        let seconds = || -> Result<Duration, String> {
            let s: f64 = value.parse().map_err(|_| bad())?;
            Duration::try_from_secs_f64(s).map_err(|_| bad())
        };
        let count = || value.parse::<usize>().map_err(|_| bad());
        match flag.as_str() {
            "--participants" => o.participants = count()?,
            "--seconds" => o.seconds = value.parse().map_err(|_| bad())?,
            "--loss" => {
                let pct: f64 = value.parse().map_err(|_| bad())?;
                if !(0.0..=50.0).contains(&pct) {
                    return Err(bad());
                }
                o.loss = pct / 100.0;
            }
            "--keyframe-every" => o.keyframe_every = seconds()?,
            "--switch-every" => o.switch_every = Some(seconds()?).filter(|d| !d.is_zero()),
            "--history" => o.history = Some(count()?),
            "--relay-cpu" => o.relay_cpu = Some(count()?),
            "--load-cpu" => o.load_cpu = Some(count()?),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.participants < 2 || o.seconds == 0 || o.keyframe_every < media::FRAME_INTERVAL {
        return Err("need --participants >= 2, --seconds >= 1, --keyframe-every >= 1/30".into());
    }
    Ok(Some(o))
}

/// One run's result.
#[derive(Debug)]
struct Outcome {
    participants: usize,
    /// Neither side fell behind.
    real_time: bool,
    /// The load thread, not the relay, may have set the limit.
    load_bound: bool,
    /// Checks that failed (rejections aside, which end the run with an error).
    failures: Vec<String>,
    /// RTP packets the relay forwarded per second of media, and per CPU second.
    out_per_second: f64,
    per_core: f64,
    /// The relay thread's share of one core over the media.
    relay_fraction: f64,
    /// Retransmissions that filled a receiver's gap.
    recovered: u64,
}

/// The SFU's counters over the media window.
fn window(before: SfuStats, after: SfuStats) -> SfuStats {
    let mut d = after;
    d.received -= before.received;
    d.forwarded -= before.forwarded;
    d.retransmitted -= before.retransmitted;
    d
}

fn run_once(o: &Options, n: usize) -> Result<Outcome, Box<dyn std::error::Error>> {
    let mut rng = SystemEntropy::new();
    let relay_socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let relay_addr = relay_socket.local_addr()?;
    let key_every = (o.keyframe_every.as_secs_f64() * f64::from(FPS)).round() as u64;
    let mut attach = Vec::with_capacity(n);
    let mut sockets = Vec::with_capacity(n);
    for i in 0..n {
        let id = i as u32 + 1;
        let up = policy(&mut rng)?;
        // The relay sends every other participant's stream (one SSRC each) and its
        // own RTCP on this leg.
        let mut down = policy(&mut rng)?;
        down.max_ssrcs = n + 8;
        let socket = load::socket()?;
        attach.push(Attach {
            id,
            addr: socket.local_addr()?,
            security: LegSecurity::srtp(
                SrtpSession::new(up.clone())?,
                SrtpSession::new(down.clone())?,
            ),
            group: Group::of(i),
        });
        sockets.push((socket, SrtpSession::new(up)?, SrtpSession::new(down)?));
    }
    let mut config = SfuConfig::default();
    config.max_endpoints = config.max_endpoints.max(n);
    config.max_streams = config.max_streams.max(n);
    if let Some(h) = o.history {
        config.retransmit_history = h;
    }
    let history = config.retransmit_history;
    let setup = Instant::now();
    let mut relay = Relay::new(setup, config, attach)?;
    let start = Instant::now() + LEAD;
    let end = start + Duration::from_secs(o.seconds);
    relay.set_marks([start, end]);
    let plan = Plan {
        relay: relay_addr,
        start,
        end,
        quiet: end + GRACE - Duration::from_millis(100),
        loss: o.loss,
        switch_every: o.switch_every,
    };
    let mut parties = Vec::with_capacity(n);
    for (i, (socket, up, down)) in sockets.into_iter().enumerate() {
        // Publishers spread over the frame interval.
        let phase = media::FRAME_INTERVAL * i as u32 / n as u32;
        parties.push(Party::new(
            i as u32 + 1,
            n,
            Group::of(i),
            socket,
            up,
            down,
            start + phase,
            key_every,
        )?);
    }
    println!(
        "sfu-bench participants={n} seconds={} loss={:.1}% keyframe_every={:.1} s switch_every={} history={history} suite={SUITE:?} (setup {:.0} ms, not timed)",
        o.seconds,
        o.loss * 100.0,
        o.keyframe_every.as_secs_f64(),
        o.switch_every
            .map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        ms(setup.elapsed())
    );

    let done = Arc::new(AtomicBool::new(false));
    let load_done = Arc::clone(&done);
    let load_cpu = o.load_cpu;
    let load = std::thread::spawn(move || -> Result<LoadReport, String> {
        pin(load_cpu).map_err(|e| e.to_string())?;
        load::run(parties, plan, &load_done).map_err(|e| e.to_string())
    });
    pin(o.relay_cpu)?;
    let served = serve_until(&mut relay, relay_socket, end + GRACE);
    done.store(true, Ordering::Relaxed);
    let report = load.join().map_err(|_| "the load thread panicked")??;
    let served = served?;
    report_run(o, n, &relay, &served, &report)
}

#[allow(clippy::too_many_lines)]
fn report_run(
    o: &Options,
    n: usize,
    relay: &Relay,
    served: &realtime::Served,
    r: &LoadReport,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let [a, b] = &relay.samples[..] else {
        return Err("the relay did not sample the media window".into());
    };
    let media = b.at - a.at;
    let cpu = b.cpu.saturating_sub(a.cpu);
    let w = window(a.stats, b.stats);
    let total = relay.stats();
    let secs = media.as_secs_f64().max(1e-9);
    let fraction = cpu.as_secs_f64() / secs;
    let per_core = w.forwarded as f64 / cpu.as_secs_f64().max(1e-9);
    let groups: Vec<String> = Group::ALL
        .iter()
        .zip(&r.groups)
        .map(|(g, x)| format!("{}={}", g.name(), x.members))
        .collect();
    println!("groups (receivers): {}", groups.join(" "));
    println!(
        "relay datagrams received={} sent={} rejected={} (refused control transmits={})",
        relay.received, served.stats.sent, relay.refused.rejected, relay.refused.control
    );
    println!(
        "relay sfu: rtp_in={} forwarded={} retransmitted={} keyframe_requests={} (aggregated {}) switches={} temporal_dropped={} late_dropped={} send_refused={} ignored_feedback={} unauthenticated={} replayed={}",
        total.received,
        total.forwarded,
        total.retransmitted,
        total.keyframe_requests,
        total.keyframe_requests_aggregated,
        total.switches,
        total.temporal_dropped,
        total.late_dropped,
        total.send_refused,
        total.ignored_feedback,
        total.unauthenticated,
        total.replayed
    );
    println!(
        "relay system calls: {} recvmmsg ({:.1} datagrams each), {} sendmmsg/GSO ({:.1} each)",
        served.stats.recv_calls,
        served.stats.received as f64 / served.stats.recv_calls.max(1) as f64,
        served.stats.send_calls,
        served.stats.sent as f64 / served.stats.send_calls.max(1) as f64
    );
    println!(
        "publishers: rtp_sent={} rtcp_sent={} frames={} late_frames={} keyframes periodic={} requested={} keyframe_requests_received={} nacked_to_origin={} relay_receiver_reports={}",
        r.rtp_sent,
        r.rtcp_sent,
        r.frames,
        r.late_frames,
        r.periodic_keyframes,
        r.requested_keyframes,
        r.keyframe_requests,
        r.origin_nacked,
        r.relay_reports
    );
    let lost_share = |x: u64, of: u64| 100.0 * x as f64 / of.max(1) as f64;
    println!(
        "receivers: rtp_received={} lost_on_purpose={} ({:.2} %) nacks={} asking_for={} retransmissions_received={} duplicates={} too_old={} plis={} sender_reports={}",
        r.rtp_received,
        r.dropped,
        lost_share(r.dropped, r.rtp_received),
        r.nacks,
        r.nacked,
        r.recovered,
        r.duplicates,
        r.too_old,
        r.plis,
        r.sender_reports
    );
    println!(
        "receivers: unrecovered={} of {} expected = {:.3} % after NACK (bound {:.1} %)",
        r.unrecovered,
        r.expected,
        lost_share(r.unrecovered, r.expected),
        MAX_UNRECOVERED * 100.0
    );
    let streams = |members: u64| (members * (n as u64 - 1)).max(1) as f64;
    for (g, x) in Group::ALL.iter().zip(&r.groups) {
        let got: u64 = x.by_layer.iter().sum();
        println!(
            "  {:<10} {:>3} receivers: {:>6.1} packets/s per stream, layers 0/1/2 = {:.0}/{:.0}/{:.0} %, unexpected={}",
            g.name(),
            x.members,
            got as f64 / streams(x.members) / o.seconds as f64,
            lost_share(x.by_layer[0], got),
            lost_share(x.by_layer[1], got),
            lost_share(x.by_layer[2], got),
            x.unexpected
        );
    }
    let quantiles = |d: &media::Delays| {
        format!(
            "p50={:.1} ms p99={:.1} ms p99.9={:.1} ms",
            ms(d.quantile(0.5)),
            ms(d.quantile(0.99)),
            ms(d.quantile(0.999))
        )
    };
    println!(
        "delay publisher -> relay (the relay's backlog): {}",
        quantiles(&relay.delays)
    );
    println!(
        "delay publisher -> relay -> receiver (with the load thread's): {}",
        quantiles(&r.delay)
    );
    let relay_p50 = relay.delays.quantile(0.5);
    let to_relay = r.rtp_sent + r.rtcp_sent;
    let lost_in = to_relay.saturating_sub(relay.received);
    let lost_out = served.stats.sent.saturating_sub(r.received);
    println!("lost in sockets: {lost_in} datagrams to the relay, {lost_out} to participants");
    let load_fraction = r.cpu.as_secs_f64() / r.wall.as_secs_f64().max(1e-9);
    println!(
        "relay_cpu={:.3} s over {:.3} s of media = {:.1} % of one core (whole run with setup traffic and grace: {:.3} s over {:.3} s, {:.1} %); load thread {:.1} % of one core",
        cpu.as_secs_f64(),
        secs,
        100.0 * fraction,
        served.cpu.as_secs_f64(),
        served.wall.as_secs_f64(),
        100.0 * served.core_fraction(),
        100.0 * load_fraction
    );
    if let (Some((u0, s0)), Some((u1, s1))) = (a.user_system, b.user_system) {
        let (user, system) = (u1.saturating_sub(u0), s1.saturating_sub(s0));
        println!(
            "relay thread: user {:.2} s, kernel {:.2} s ({:.0} % in the kernel: system calls, UDP, loopback delivery into the receivers' sockets)",
            user.as_secs_f64(),
            system.as_secs_f64(),
            100.0 * system.as_secs_f64() / (user + system).as_secs_f64().max(1e-9)
        );
    }
    let cores: Vec<String> = a
        .cores
        .iter()
        .zip(&b.cores)
        .enumerate()
        .map(|(i, (x, y))| {
            let d: Vec<u64> = (0..3).map(|k| y[k].saturating_sub(x[k])).collect();
            let all = d.iter().sum::<u64>().max(1) as f64;
            format!(
                "cpu{i} busy {:.0} % idle {:.0} % stolen {:.0} %",
                100.0 * d[0] as f64 / all,
                100.0 * d[1] as f64 / all,
                100.0 * d[2] as f64 / all
            )
        })
        .collect();
    if !cores.is_empty() {
        println!(
            "machine during the media (all processes; stolen = taken by the hypervisor): {}",
            cores.join(", ")
        );
    }
    let out_per_second = w.forwarded as f64 / secs;
    println!(
        "packets_in_per_s={:.0} forwarded_out_per_s={:.0} retransmitted_per_s={:.0}",
        w.received as f64 / secs,
        out_per_second,
        w.retransmitted as f64 / secs
    );
    println!(
        "forwarded_per_core={per_core:.0} (RTP packets forwarded / relay CPU seconds at N={n}; SRTP both hops, sockets, system calls included)"
    );

    if relay.refused.rejected > 0 || r.rejected > 0 {
        return Err(format!(
            "rejected packets: {} at the relay ({}), {} at participants ({})",
            relay.refused.rejected,
            relay.refused.first.as_deref().unwrap_or("-"),
            r.rejected,
            r.first_rejection.as_deref().unwrap_or("-")
        )
        .into());
    }
    let mut failures = Vec::new();
    if w.forwarded == 0 {
        failures.push("nothing forwarded".to_string());
    }
    if r.unrecovered as f64 > MAX_UNRECOVERED * r.expected as f64 {
        failures.push(format!(
            "{:.3} % of packets lost for good after NACK (bound {:.1} %)",
            lost_share(r.unrecovered, r.expected),
            MAX_UNRECOVERED * 100.0
        ));
    }
    let unexpected: u64 = r.groups.iter().map(|g| g.unexpected).sum();
    if unexpected > 0 {
        failures.push(format!(
            "{unexpected} packets of a layer a receiver's group should not get"
        ));
    }
    let real_time = lost_in as f64 <= MAX_SOCKET_LOSS * to_relay as f64
        && lost_out as f64 <= MAX_SOCKET_LOSS * served.stats.sent as f64
        && relay_p50 <= MAX_DELAY_P50;
    let load_bound = load_fraction > 0.9;
    if load_bound {
        println!(
            "note: the load thread was near its limit ({:.0} % of a core): the load generator, not the relay, may set the limit here",
            100.0 * load_fraction
        );
    } else if r.late_frames * 100 > r.frames {
        println!(
            "note: {} frames left more than 5 ms late with the load thread at {:.0} % of a core: another process shares its core",
            r.late_frames,
            100.0 * load_fraction
        );
    }
    Ok(Outcome {
        participants: n,
        real_time,
        load_bound,
        failures,
        out_per_second,
        per_core,
        relay_fraction: fraction,
        recovered: r.recovered,
    })
}

/// Runs from `o.participants` up, a quarter more each time, until a run is not real
/// time; prints every run and the largest real-time one.
fn find_max(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let mut n = o.participants;
    let mut runs = Vec::new();
    loop {
        let outcome = run_once(o, n)?;
        println!();
        // A run that fails its checks ends the search too: past the relay's
        // capacity, NACKs find their packets gone from the history.
        let stop = !outcome.real_time || outcome.load_bound || !outcome.failures.is_empty();
        runs.push(outcome);
        if stop {
            break;
        }
        n = (n + n / 4).max(n + 1);
    }
    println!("| N | relay CPU | forwarded out/s | forwarded per core | retransmissions | result |");
    println!("|---:|---:|---:|---:|---:|---|");
    for r in &runs {
        println!(
            "| {} | {:.1} % | {:.0} | {:.0} | {} | {} |",
            r.participants,
            100.0 * r.relay_fraction,
            r.out_per_second,
            r.per_core,
            r.recovered,
            match (r.real_time, r.load_bound) {
                (false, _) => "falls behind".into(),
                _ if !r.failures.is_empty() => format!("fails: {}", r.failures.join("; ")),
                (true, false) => "real time".into(),
                (true, true) => "real time, load thread at its limit".into(),
            }
        );
    }
    match runs
        .iter()
        .rev()
        .find(|r| r.real_time && r.failures.is_empty())
    {
        Some(best) => println!(
            "max_real_time participants={} forwarded_out_per_s={:.0} forwarded_per_core={:.0}",
            best.participants, best.out_per_second, best.per_core
        ),
        None => println!("max_real_time none: the first run already fell behind or failed"),
    }
    Ok(())
}

fn run(o: &Options) -> Result<(), Box<dyn std::error::Error>> {
    if o.find_max {
        return find_max(o);
    }
    let outcome = run_once(o, o.participants)?;
    if !outcome.real_time {
        let mut why = String::from(
            "not real time at this N (socket loss or the relay's median delay above bounds)",
        );
        for f in &outcome.failures {
            why.push_str("; then ");
            why.push_str(f);
        }
        return Err(why.into());
    }
    if !outcome.failures.is_empty() {
        return Err(outcome.failures.join("; ").into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sfu-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short run of every path (publishing, keyframe-gated layer selection for
    /// every group, a switch, loss and NACK answered from the relay's history, RTCP
    /// both ways, SRTP on every leg), so the benchmark cannot rot. Real time is not
    /// asserted: a debug build on a busy machine may fall behind, which is the
    /// benchmark's business, not a defect.
    #[test]
    fn a_short_run_rejects_nothing_and_recovers_losses() {
        let o = Options {
            participants: 5,
            seconds: 2,
            loss: 0.02,
            keyframe_every: Duration::from_millis(700),
            switch_every: Some(Duration::from_millis(800)),
            ..Options::default()
        };
        let outcome = run_once(&o, o.participants).expect("no packet rejected");
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        assert!(outcome.out_per_second > 0.0);
        assert!(
            outcome.recovered > 0,
            "NACKs answered from the relay's history"
        );
    }
}
