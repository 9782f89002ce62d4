//! The STUN server through the shared datagram contract and on chorus-framing's runtime's
//! batched sockets.
#![allow(clippy::field_reassign_with_default)] // as callers outside the crate must

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use chorus_framing::DatagramCore;
use chorus_framing::runtime::{Runtime, SocketConfig, Sockets};
use chorus_nat::server::{Server, ServerConfig};
use chorus_nat::stun::{Attribute, Class, Limits, Message, Method, TransactionId};
use nix::sys::socket::{setsockopt, sockopt};
use tokio::net::UdpSocket;

async fn bound() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Tests send bursts before reading: never lose them to a small default queue.
    setsockopt(&s, sockopt::RcvBuf, &(4 << 20)).unwrap();
    s
}

fn request(i: u32) -> BytesMut {
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&i.to_be_bytes());
    let mut out = BytesMut::new();
    Message::new(Class::Request, Method::BINDING, TransactionId::new(id))
        .encode(None, &mut out)
        .unwrap();
    out
}

#[test]
fn the_stun_server_accepts_stun_only_and_reports_rejects_through_the_contract() {
    let local: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let mut cfg = ServerConfig::default();
    cfg.primary = local;
    cfg.rate_limit = None;
    let mut server = Server::new(cfg).unwrap();
    let from: SocketAddr = "198.51.100.7:5000".parse().unwrap();
    let binding = request(1);
    assert!(DatagramCore::accepts(&server, local, from, &binding));
    let rtp = [0x80, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    assert!(!DatagramCore::accepts(&server, local, from, &rtp));
    assert!(!DatagramCore::accepts(
        &server,
        local,
        from,
        b"\x40\x00\x00\x00"
    ));
    let now = Instant::now();
    DatagramCore::handle_datagram(&mut server, now, local, from, &binding).unwrap();
    assert_eq!(
        DatagramCore::poll_transmit(&mut server).map(|t| t.dst),
        Some(from)
    );
    assert!(DatagramCore::handle_datagram(&mut server, now, local, from, &rtp).is_err());
    assert_eq!(DatagramCore::poll_event(&mut server), None);
}

#[tokio::test]
async fn binding_server_answers_every_request_of_a_burst() {
    let sock = bound().await;
    let addr = sock.local_addr().unwrap();
    let mut cfg = ServerConfig::default();
    cfg.primary = addr;
    cfg.rate_limit = None;
    let mut server = Server::new(cfg).unwrap();
    let client = bound().await;
    let me = client.local_addr().unwrap();
    let clients = async {
        // More than one batch, sent before anything is read.
        for i in 0..100 {
            client.send_to(&request(i), addr).await.unwrap();
        }
        let mut seen = [false; 100];
        let mut buf = [0u8; 128];
        for _ in 0..100 {
            let (n, from) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, addr);
            let m = Message::decode(&buf[..n], &Limits::default()).unwrap();
            assert_eq!(m.class, Class::Success);
            assert_eq!(m.attributes, vec![Attribute::XorMappedAddress(me)]);
            let id = m.transaction_id.0;
            let i = u32::from_be_bytes(id[..4].try_into().unwrap());
            seen[i as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::select! {
            r = serve(&mut server, sock) => panic!("{r:?}"),
            () = clients => {}
        }
    })
    .await
    .unwrap();
    assert_eq!(server.stats().responses, 100);
}

async fn serve(
    server: &mut Server,
    sock: UdpSocket,
) -> Result<(), chorus_framing::runtime::DriverError> {
    let mut sockets = Sockets::new(SocketConfig::default())?;
    sockets.add(sock)?;
    Runtime::new(server, sockets).run().await
}
