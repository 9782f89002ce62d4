//! The delay-based controller in closed loop over netsim's bandwidth cap: a sender
//! paced at 50 packets/s sends at the rate the receiver's REMB feedback allows; the
//! bottleneck is lowered from 96 to 32 kbit/s and raised back. The rate must fall
//! below the new cap within a bounded time, stay in a band around it, and climb back
//! when the cap rises. Deterministic: seeded network, virtual time.
#![allow(clippy::field_reassign_with_default, reason = "non_exhaustive configs")]

use std::time::{Duration, Instant};

use chorus_media::adapt::RateConfig;
use chorus_media::congestion::{DelayController, abs_send_time};
use chorus_media::netsim::{NetConfig, Network};

const HIGH: u64 = 96_000;
const LOW: u64 = 32_000;

fn path(cap: u64, seed: u64) -> Network<(u32, usize)> {
    let mut c = NetConfig::default();
    c.delay = Duration::from_millis(30);
    c.jitter = Duration::from_millis(2);
    c.bandwidth_bps = Some(cap);
    c.queue_bytes = 16 * 1024;
    Network::new(c, seed).unwrap()
}

/// The send rate sampled every 100 ms over the whole run, with the cap at that time.
fn run() -> Vec<(f64, u64, u32)> {
    let t0 = Instant::now();
    let schedule = [(0u64, HIGH), (20, LOW), (40, HIGH)];
    let end = Duration::from_secs(80);
    let mut forward = vec![path(HIGH, 1)];
    let mut back: Network<u64> = {
        let mut c = NetConfig::default();
        c.delay = Duration::from_millis(30);
        Network::new(c, 2).unwrap()
    };
    let mut config = RateConfig::default();
    config.start_bps = 64_000;
    let mut receiver = DelayController::new(config);
    receiver.handle_rtt(Duration::from_millis(60));
    let mut rate = u64::from(config.start_bps);
    let mut samples = Vec::new();
    let mut cap = HIGH;
    for tick in 0..(end.as_millis() as u64 / 20) {
        let now = t0 + Duration::from_millis(20 * tick);
        let elapsed = now - t0;
        // A cap change: a new bottleneck; the old one drains what it holds.
        for &(at, c) in &schedule {
            if elapsed == Duration::from_secs(at) && c != cap {
                cap = c;
                forward.push(path(c, 10 + at));
            }
        }
        // Sender: one packet per 20 ms, sized so that with its 28 bytes of UDP/IP
        // headers it makes up the rate (the estimate counts what crosses the wire).
        let size = (rate / 8 / 50).saturating_sub(28).max(20) as usize;
        let [a, b, c] = abs_send_time(elapsed);
        let send_abs = u32::from_be_bytes([0, a, b, c]);
        forward
            .last_mut()
            .unwrap()
            .handle_send(now, (send_abs, size), size + 28);
        // Deliveries within this tick, in time order, with their own arrival times.
        let tick_end = now + Duration::from_millis(20);
        loop {
            let next = forward
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.poll_timeout().map(|t| (t, i)))
                .min();
            let Some((at, i)) = next.filter(|&(t, _)| t < tick_end) else {
                break;
            };
            while let Some((abs, size)) = forward[i].poll_deliver(at) {
                receiver.handle_packet(at, abs, size + 28);
            }
            if let Some(remb) = receiver.poll_remb(at) {
                back.handle_send(at, remb, 64);
            }
        }
        while let Some(remb) = back.poll_deliver(tick_end) {
            rate = remb;
        }
        if tick % 5 == 0 {
            samples.push((elapsed.as_secs_f64(), cap, rate as u32));
        }
    }
    samples
}

fn in_window(samples: &[(f64, u64, u32)], from: f64, to: f64) -> impl Iterator<Item = u32> + '_ {
    samples
        .iter()
        .filter(move |(t, _, _)| *t >= from && *t < to)
        .map(|&(_, _, r)| r)
}

#[test]
fn rate_follows_a_bandwidth_cap_down_and_back_up() {
    let samples = run();
    for s in samples.iter().step_by(10) {
        eprintln!("{:5.1} s cap {:6} rate {:6}", s.0, s.1, s.2);
    }
    // Down: below the lowered cap (the payload share of it) within 5 s.
    let first_below = samples
        .iter()
        .find(|(t, _, r)| *t >= 20.0 && u64::from(*r) < LOW)
        .map(|s| s.0)
        .expect("the rate falls below the lowered cap");
    assert!(first_below < 25.0, "took until {first_below} s");
    // Steady under the low cap: within the documented band.
    let low: Vec<u32> = in_window(&samples, 28.0, 40.0).collect();
    let (lo, hi) = (low.iter().min().unwrap(), low.iter().max().unwrap());
    // The documented band: probing saw-tooths between 0.75 and 1.2 times the cap.
    assert!(f64::from(*lo) >= 0.75 * LOW as f64, "fell to {lo}");
    assert!(f64::from(*hi) <= 1.2 * LOW as f64, "rose to {hi}");
    // Up: back above 70 % of the raised cap within 20 s.
    let recovered = samples
        .iter()
        .find(|(t, _, r)| *t >= 40.0 && f64::from(*r) >= 0.7 * HIGH as f64)
        .map(|s| s.0)
        .expect("the rate recovers");
    assert!(recovered < 60.0, "took until {recovered} s");
    let high: Vec<u32> = in_window(&samples, 65.0, 80.0).collect();
    assert!(
        high.iter()
            .all(|&r| (0.75..=1.2).contains(&(f64::from(r) / HIGH as f64))),
        "{high:?}"
    );
}
