//! Two call-leg drivers on 127.0.0.1 exchange three seconds of real Opus speech both
//! ways; the received audio matches what was sent (time-aligned segmental SNR). tokio's paused
//! clock runs the call in virtual time: no sleeps, bounded, deterministic pacing.
#![cfg(feature = "tokio")]
#![allow(clippy::field_reassign_with_default, reason = "non_exhaustive configs")]

use std::time::Duration;

use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
use chorus_framing::SeededEntropy;
use chorus_media::driver::{self, DriverConfig, DriverReport};
use chorus_media::quality::{aligned_segmental_snr, synthetic_speech};
use chorus_media::session::{Session, SessionConfig};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const RATE: u32 = 16_000;
const FRAME: usize = 320;
const SECONDS: usize = 3;

fn srtp(key: u8) -> SrtpSession {
    let suite = Suite::AesCm128HmacSha1_80;
    let policy = Policy::new(
        suite,
        &vec![key; suite.key_len()],
        &vec![key; suite.salt_len()],
    );
    SrtpSession::new(policy.unwrap()).unwrap()
}

/// Starts one leg: a driver task, a capture task feeding `speech` every 20 ms of
/// tokio time, and a playback task collecting what comes out.
async fn leg(
    ssrc: u32,
    keys: (u8, u8),
    sock: UdpSocket,
    peer: std::net::SocketAddr,
    speech: Vec<i16>,
) -> (
    tokio::task::JoinHandle<DriverReport>,
    tokio::task::JoinHandle<Vec<i16>>,
) {
    let mut config = SessionConfig::default();
    config.sample_rate = RATE;
    (config.ssrc, config.fec_ssrc) = (ssrc, ssrc + 1);
    let now = tokio::time::Instant::now().into_std();
    let entropy = Box::new(SeededEntropy::new(u64::from(ssrc)));
    let session = Session::new(config, srtp(keys.0), srtp(keys.1), entropy, now).unwrap();
    let (in_tx, in_rx) = mpsc::channel(8);
    let (out_tx, mut out_rx) = mpsc::channel(64);
    let driver = tokio::spawn(async move {
        driver::run(session, sock, peer, DriverConfig::default(), in_rx, out_tx)
            .await
            .unwrap()
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for frame in speech.chunks_exact(FRAME) {
            tick.tick().await;
            in_tx.send(frame.to_vec()).await.unwrap();
        }
        // Dropping the sender ends the call.
    });
    let playback = tokio::spawn(async move {
        let mut heard = Vec::new();
        while let Some(frame) = out_rx.recv().await {
            heard.extend_from_slice(&frame);
        }
        heard
    });
    (driver, playback)
}

/// Segmental SNR with each 20 ms block aligned: even on a clean loopback path the
/// playout delay moves once, when the first reports drop the FEC group a call starts
/// with and its wait is given back in a pause.
fn snr(sent: &[i16], heard: &[i16]) -> f64 {
    aligned_segmental_snr(sent, heard, RATE, FRAME, 0)
}

#[tokio::test(start_paused = true)]
async fn two_drivers_talk_over_loopback() {
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let speech = synthetic_speech(RATE, RATE as usize * SECONDS, 12);
    let mut reply = vec![0i16; 2_800];
    reply.extend_from_slice(&speech[..speech.len() - 2_800]);
    let (da, pa) = leg(0xA0, (1, 2), a, b_addr, speech.clone()).await;
    let (db, pb) = leg(0xB0, (2, 1), b, a_addr, reply.clone()).await;
    let (ra, rb) = (da.await.unwrap(), db.await.unwrap());
    let (heard_by_a, heard_by_b) = (pa.await.unwrap(), pb.await.unwrap());
    let (ab, ba) = (snr(&speech, &heard_by_b), snr(&reply, &heard_by_a));
    eprintln!(
        "A->B {ab:.2} dB, B->A {ba:.2} dB; A {:?}; B {:?}",
        ra.stats, rb.stats
    );
    for (r, snr) in [(ra, ba), (rb, ab)] {
        assert!(snr > 10.0, "{snr}");
        assert_eq!(r.stats.frames_sent, (SECONDS * 50) as u64);
        assert_eq!(r.stats.media_received, (SECONDS * 50) as u64);
        assert_eq!(
            (r.stats.rejected, r.stats.concealed, r.pcm_dropped),
            (0, 0, 0)
        );
        assert!(r.stats.rtt.is_some() && r.stats.rtcp_sent >= 2);
        assert!(r.remote_bye);
    }
}

/// A peer that is gone: datagrams go nowhere, the driver still runs the call to its
/// end and reports it.
#[tokio::test(start_paused = true)]
async fn a_vanished_peer_does_not_stop_the_driver() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // An address nobody listens on: the kernel answers with "port unreachable".
    let gone = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let speech = synthetic_speech(RATE, FRAME * 25, 12);
    let (driver, playback) = leg(0xC0, (3, 4), sock, gone, speech).await;
    let report = driver.await.unwrap();
    assert_eq!(report.stats.frames_sent, 25);
    assert_eq!(report.stats.datagrams_received, 0);
    assert!(playback.await.unwrap().is_empty());
}
