//! A call between two clients over their ICE path: the SIGMA-I handshake (chorus-crypto)
//! proves who is at each end and derives the call's SRTP keys.

use std::time::{Duration, SystemTime};

use chorus::crypto::srtp::SrtpSession;
use chorus::media::netsim::{NetConfig, Network};
use chorus::media::session::{Session, SessionConfig};
use tokio::time::Instant;

use crate::conference::FRAME;

use bytes::{Bytes, BytesMut};
use chorus::crypto::SystemEntropy;
use chorus::crypto::handshake::{Config, Established, Initiator, Responder};
use chorus::crypto::srtp::{Policy, Suite};
use chorus::framing::{Datagram, DatagramHeader, DatagramType};
use chorus::nat::driver::ice::Connection;

use crate::DemoError;

/// The SRTP suite of the demo's calls (RFC 7714).
pub(crate) const SUITE: Suite = Suite::AeadAes128Gcm;

/// Each side's SRTP policies: `(send, receive)`.
pub(crate) type Keys = (Policy, Policy);

/// Runs the handshake across the path, caller first, as Chorus `Control` datagrams
/// (their first byte keeps them apart from STUN and RTP, RFC 7983). Returns the
/// caller's and the callee's established sessions, from which each call over the
/// path derives its SRTP keys ([`keys`]).
pub(crate) async fn handshake(
    caller: &mut Connection,
    callee: &mut Connection,
    caller_config: &Config,
    callee_config: &Config,
) -> Result<(Established, Established), DemoError> {
    let mut rng = SystemEntropy::new();
    let (initiator, hello) = Initiator::start(caller_config, &mut rng)?;
    let hello = carry(caller, callee, hello, 1).await?;
    let (responder, response) = Responder::handle_hello(callee_config, &hello, &mut rng)?;
    let response = carry(callee, caller, response, 1).await?;
    let (caller_side, finish) = initiator.handle_response(&response, SystemTime::now())?;
    let finish = carry(caller, callee, finish, 2).await?;
    let callee_side = responder.handle_finish(&finish, SystemTime::now())?;
    Ok((caller_side, callee_side))
}

/// One side's SRTP policies `(send, receive)` for call number `call` over a path: the
/// exporter context is the call number (big-endian), and the label names the suite and
/// the direction, so every call and direction gets its own keys.
pub(crate) fn keys(side: &Established, call: u64) -> Result<Keys, DemoError> {
    Ok(side.srtp_policies(SUITE, &call.to_be_bytes())?)
}

/// Sends `message` from `from` as a `Control` datagram and returns its payload as
/// `to` receives it.
async fn carry(
    from: &mut Connection,
    to: &mut Connection,
    message: Vec<u8>,
    sequence: u64,
) -> Result<Vec<u8>, DemoError> {
    let mut wire = BytesMut::new();
    Datagram::new(
        DatagramHeader::new(DatagramType::Control, 0, sequence),
        message,
    )
    .encode(&mut wire)
    .map_err(|e| DemoError::Step(format!("handshake message: {e}")))?;
    from.send(wire.freeze())
        .await
        .map_err(|e| DemoError::Step(format!("handshake send: {e}")))?;
    let got: Bytes = tokio::time::timeout(Duration::from_secs(5), to.recv())
        .await
        .map_err(|_| DemoError::Step("handshake message lost".into()))?
        .map_err(|e| DemoError::Step(format!("handshake receive: {e}")))?;
    let datagram =
        Datagram::decode(&got).map_err(|e| DemoError::Step(format!("handshake: {e}")))?;
    Ok(datagram.payload.to_vec())
}

/// One direction of a call, as the report gives it.
pub(crate) struct Direction {
    /// Media frames sent and FEC repair packets among the datagrams.
    pub(crate) frames: u64,
    pub(crate) repair: u64,
    /// Datagrams the impaired network lost, of those sent.
    pub(crate) lost: u64,
    pub(crate) datagrams: u64,
    /// At the receiver: media packets rebuilt by FEC, frames rebuilt from Opus
    /// in-band FEC, frames concealed.
    pub(crate) recovered: u64,
    pub(crate) recovered_inband: u64,
    pub(crate) concealed: u64,
    /// The receiver's jitter-buffer target delay at the end.
    pub(crate) playout: Duration,
    /// What the receiver played (48 kHz mono).
    pub(crate) heard: Vec<i16>,
}

/// Runs a call both ways for `seconds` over the path `(a, b)`: each side's
/// chorus-media session (Opus, RTP, adaptive FEC, SRTP, RTCP, jitter buffer), whose
/// datagrams pass a seeded impairment (`impairment`) before they take the path.
/// Returns the `a -> b` and `b -> a` directions.
pub(crate) async fn talk(
    (a, b): (&mut Connection, &mut Connection),
    (a_keys, b_keys): (Keys, Keys),
    speech: [Vec<i16>; 2],
    impairment: &NetConfig,
    seed: u64,
) -> Result<[Direction; 2], DemoError> {
    let start = Instant::now();
    let mut sessions = Vec::new();
    for (i, (send, recv)) in [a_keys, b_keys].into_iter().enumerate() {
        let mut config = SessionConfig::default();
        (config.ssrc, config.fec_ssrc) = (0x100 + 2 * i as u32, 0x101 + 2 * i as u32);
        sessions.push(Session::new(
            config,
            SrtpSession::new(send)?,
            SrtpSession::new(recv)?,
            Box::new(chorus::crypto::SystemEntropy::new()),
            start.into_std(),
        )?);
    }
    let mut nets = [
        Network::<Bytes>::new(impairment.clone(), seed)?,
        Network::<Bytes>::new(impairment.clone(), seed + 1)?,
    ];
    let frames = speech[0].len().min(speech[1].len()) / FRAME;
    let mut heard = [Vec::new(), Vec::new()];
    let mut conns = [a, b];
    let mut sent = 0usize;
    // The talk, then time for the last packets to play out.
    let end = start + Duration::from_millis(20 * frames as u64 + 400);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if sent < frames && now >= start + Duration::from_millis(20 * sent as u64) {
            for (s, pcm) in sessions.iter_mut().zip(&speech) {
                s.send_frame(now.into_std(), &pcm[sent * FRAME..(sent + 1) * FRAME])?;
            }
            sent += 1;
            if sent == frames {
                // RTCP BYE: the receiver plays out what is left and then silence,
                // instead of concealing the end of the talk as lost packets.
                sessions.iter_mut().for_each(Session::close);
            }
        }
        for (i, s) in sessions.iter_mut().enumerate() {
            s.handle_timeout(now.into_std());
            while let Some(d) = s.poll_transmit() {
                let len = d.len() + 28;
                nets[i].handle_send(now.into_std(), d, len);
            }
            while let Some(pcm) = s.poll_pcm() {
                heard[i].extend_from_slice(&pcm);
            }
        }
        for (i, net) in nets.iter_mut().enumerate() {
            while let Some(d) = net.poll_deliver(now.into_std()) {
                conns[i]
                    .send(d)
                    .await
                    .map_err(|e| DemoError::Step(format!("call: {e}")))?;
            }
        }
        let next_frame = (sent < frames).then(|| start + Duration::from_millis(20 * sent as u64));
        let deadline = sessions
            .iter()
            .filter_map(Session::poll_timeout)
            .chain(nets.iter().filter_map(Network::poll_timeout))
            .map(Instant::from_std)
            .chain(next_frame)
            .min()
            .unwrap_or(end)
            .min(end);
        let [x, y] = &mut conns;
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            got = x.recv() => {
                let d = got.map_err(|e| DemoError::Step(format!("call: {e}")))?;
                // A datagram the session refuses (replay, forgery) is dropped.
                let _ = sessions[0].handle_input(Instant::now().into_std(), &d);
            }
            got = y.recv() => {
                let d = got.map_err(|e| DemoError::Step(format!("call: {e}")))?;
                let _ = sessions[1].handle_input(Instant::now().into_std(), &d);
            }
        }
    }
    let [heard_by_a, heard_by_b] = heard;
    let direction = |from: usize, heard: Vec<i16>| {
        let (tx, rx) = (sessions[from].stats(), sessions[1 - from].stats());
        let net = nets[from].stats();
        Direction {
            frames: tx.frames_sent,
            repair: tx.repair_sent,
            lost: net.lost + net.dropped,
            datagrams: net.sent,
            recovered: rx.recovered_by_fec,
            recovered_inband: rx.recovered_inband,
            concealed: rx.concealed,
            playout: rx.jitter_target,
            heard,
        }
    };
    // `heard[i]` is what session i played: what the other side said.
    Ok([direction(0, heard_by_b), direction(1, heard_by_a)])
}
