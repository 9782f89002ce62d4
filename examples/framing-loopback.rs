//! Chorus framing on loopback: a control channel over TCP and a shared UDP port.
//!
//! Until the full demo exists, this is the most complete runnable example and what
//! `cargo xtask demo` runs. It starts, on 127.0.0.1:
//! 1. a TCP control server speaking stream frames: it answers `Open` with `Open`,
//!    echoes `Data`, answers `Ping` with `Pong` and `Close` with `Close`;
//! 2. a UDP port that receives STUN, TURN ChannelData, RTP, RTCP and Chorus datagrams
//!    from one peer, routes each by its first bytes (RFC 7983) and answers Chorus
//!    probes.
//!
//! It prints what crossed each path and exits non-zero if anything went missing.
//!
//! `cargo run --release --example framing-loopback [-- --frames N]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus::framing::tlv::{Attributes, TlvLimits, TlvWriter};
use chorus::framing::{
    Datagram, DatagramHeader, DatagramType, Frame, FrameCodec, FrameConfig, FrameType, PacketKind,
    classify,
};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::codec::Framed;

/// Attribute carried in `Open`: the channel's purpose.
const ATTR_PURPOSE: u16 = 0x0001;
/// Bound on every network wait, so a lost packet fails the example instead of hanging.
const WAIT: Duration = Duration::from_secs(5);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let mut frames = 200u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--frames" => frames = args.next().ok_or("--frames needs a number")?.parse()?,
            "-h" | "--help" => {
                println!("usage: framing-loopback [--frames N]   (default 200 data frames)");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}; try --help").into()),
        }
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            tcp_control_channel(frames).await?;
            udp_shared_port().await
        })
}

fn codec() -> FrameCodec {
    FrameCodec::new(FrameConfig::default()).expect("default config is valid")
}

async fn tcp_control_channel(count: u32) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        serve_control(Framed::new(stream, codec())).await
    });

    let mut conn = Framed::new(TcpStream::connect(addr).await?, codec());
    let mut purpose = TlvWriter::new(TlvLimits::default());
    purpose.put(ATTR_PURPOSE, &"echo")?;
    conn.send(Frame::new(FrameType::Open, 1, purpose.finish()))
        .await?;
    let opened = next(&mut conn).await?;
    let attrs = Attributes::decode(&opened.payload, &[ATTR_PURPOSE], &TlvLimits::default())?;
    println!(
        "tcp  {addr}: channel 1 opened for {:?}",
        attrs.require::<&str>(ATTR_PURPOSE)?
    );

    let started = Instant::now();
    let mut bytes = 0usize;
    for i in 0..count {
        let payload = Bytes::from(vec![i as u8; 100 + (i as usize * 13) % 1400]);
        bytes += payload.len();
        conn.send(Frame::data(1, payload.clone())).await?;
        let echo = next(&mut conn).await?;
        if echo.payload != payload || echo.channel != 1 {
            return Err(format!("frame {i} came back altered").into());
        }
    }
    let elapsed = started.elapsed();
    conn.send(Frame::ping(*b"chorus!!")).await?;
    let pong = next(&mut conn).await?;
    if pong.frame_type != FrameType::Pong || &pong.payload[..] != b"chorus!!" {
        return Err("ping was not answered".into());
    }
    conn.send(Frame::new(FrameType::Close, 1, Bytes::new()))
        .await?;
    next(&mut conn).await?;
    server.await??;
    println!(
        "tcp  {count} data frames ({bytes} payload bytes) echoed intact, mean round trip {:.1} us; ping answered",
        elapsed.as_secs_f64() * 1e6 / f64::from(count.max(1))
    );
    Ok(())
}

async fn next(conn: &mut Framed<TcpStream, FrameCodec>) -> Result<Frame> {
    match tokio::time::timeout(WAIT, conn.next()).await? {
        Some(frame) => Ok(frame?),
        None => Err("connection closed early".into()),
    }
}

async fn serve_control(mut conn: Framed<TcpStream, FrameCodec>) -> Result<()> {
    while let Some(frame) = conn.next().await {
        let frame = frame?;
        let reply = match frame.frame_type {
            FrameType::Open | FrameType::Data => frame,
            FrameType::Ping => frame.pong_for().ok_or("ping without pong")?,
            FrameType::Close => {
                conn.send(frame).await?;
                return Ok(());
            }
            other => return Err(format!("unexpected {other:?}").into()),
        };
        conn.send(reply).await?;
    }
    Ok(())
}

async fn udp_shared_port() -> Result<()> {
    let port = UdpSocket::bind("127.0.0.1:0").await?;
    let peer = UdpSocket::bind("127.0.0.1:0").await?;
    let probe = Datagram::new(DatagramHeader::new(DatagramType::Probe, 7, 1), Bytes::new());
    let sent: [(&str, Bytes); 5] = [
        // STUN Binding request header (RFC 8489 §5) with the magic cookie.
        (
            "stun",
            Bytes::from_static(&[
                0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
            ]),
        ),
        // TURN ChannelData on channel 0x4000 carrying 4 bytes (RFC 8656 §12.4).
        (
            "channel-data",
            Bytes::from_static(&[0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]),
        ),
        // RTP, Opus payload type 111.
        (
            "rtp",
            Bytes::from_static(&[0x80, 111, 0, 1, 0, 0, 0, 160, 0, 0, 0, 42]),
        ),
        // RTCP receiver report with no blocks.
        ("rtcp", Bytes::from_static(&[0x80, 201, 0, 1, 0, 0, 0, 42])),
        ("chorus", probe.to_bytes()?),
    ];
    for (_, bytes) in &sent {
        peer.send_to(bytes, port.local_addr()?).await?;
    }

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut buf = vec![0u8; 2048];
    for _ in 0..sent.len() {
        let (n, from) = tokio::time::timeout(WAIT, port.recv_from(&mut buf)).await??;
        let bytes = Bytes::copy_from_slice(&buf[..n]);
        let kind = classify(&bytes);
        *seen.entry(format!("{kind:?}")).or_default() += 1;
        if kind == PacketKind::Chorus {
            let probe = Datagram::decode(&bytes)?;
            let header = DatagramHeader::new(
                DatagramType::ProbeReply,
                probe.header.connection_id,
                probe.header.sequence,
            );
            port.send_to(&Datagram::new(header, Bytes::new()).to_bytes()?, from)
                .await?;
        }
    }
    let (n, _) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf)).await??;
    let reply = Datagram::decode(&Bytes::copy_from_slice(&buf[..n]))?;
    if reply.header.datagram_type != DatagramType::ProbeReply {
        return Err("probe was not answered".into());
    }
    println!(
        "udp  {}: one port demultiplexed {seen:?}",
        port.local_addr()?
    );
    println!(
        "udp  Chorus probe answered with {:?}",
        reply.header.datagram_type
    );
    let expected: BTreeMap<String, usize> = ["Stun", "ChannelData", "Rtp", "Rtcp", "Chorus"]
        .into_iter()
        .map(|k| (k.to_owned(), 1))
        .collect();
    if seen != expected {
        return Err(format!("expected one of each kind, got {seen:?}").into());
    }
    println!("ok: every frame and datagram arrived where it belonged");
    Ok(())
}
