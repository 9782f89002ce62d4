//! The driver against a scripted, credential-less TURN server on loopback (UDP and
//! TCP) that echoes what a client relays, tagged by how it came: a Send indication
//! comes back as a Data indication with "ind:", ChannelData as ChannelData with "chan:".

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpListener;

use super::*;
use crate::stun::{Attribute, Class, Limits, Message, Method};
use crate::turn::channel_data::ChannelData;

const RELAYED: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// The fake server's answers to one message; `channels` maps numbers to peers.
fn answer(
    bytes: &[u8],
    from: SocketAddr,
    t: Transport,
    channels: &mut HashMap<u16, SocketAddr>,
) -> Vec<Vec<u8>> {
    let mut out = BytesMut::new();
    if let Ok((cd, _)) = ChannelData::decode(bytes, t) {
        let mut data = b"chan:".to_vec();
        data.extend_from_slice(cd.data);
        ChannelData {
            channel: cd.channel,
            data: &data,
        }
        .encode(t, &mut out)
        .unwrap();
        return vec![out.to_vec()];
    }
    let Ok(m) = Message::decode(bytes, &Limits::default()) else {
        return vec![];
    };
    let peer = m.find(|a| match a {
        Attribute::XorPeerAddress(p) => Some(*p),
        _ => None,
    });
    let mut r = Message::new(Class::Success, m.method, m.transaction_id);
    match (m.class, m.method) {
        (Class::Indication, Method::SEND) => {
            let data = m
                .find(|a| match a {
                    Attribute::Data(d) => Some(*d),
                    _ => None,
                })
                .unwrap_or_default();
            let mut tagged = b"ind:".to_vec();
            tagged.extend_from_slice(data);
            let mut d = Message::new(Class::Indication, Method::DATA, m.transaction_id);
            d.attributes.push(Attribute::XorPeerAddress(peer.unwrap()));
            d.attributes.push(Attribute::Data(&tagged));
            d.encode(None, &mut out).unwrap();
            return vec![out.to_vec()];
        }
        (Class::Request, Method::ALLOCATE) => {
            r.attributes.push(Attribute::XorRelayedAddress(RELAYED));
            r.attributes.push(Attribute::XorMappedAddress(from));
            r.attributes.push(Attribute::Lifetime(600));
        }
        (Class::Request, Method::REFRESH) => {
            let l = m.find(|a| match a {
                Attribute::Lifetime(l) => Some(*l),
                _ => None,
            });
            r.attributes.push(Attribute::Lifetime(l.unwrap_or(600)));
        }
        (Class::Request, Method::CHANNEL_BIND) => {
            let n = m
                .find(|a| match a {
                    Attribute::ChannelNumber(n) => Some(*n),
                    _ => None,
                })
                .unwrap();
            channels.insert(n, peer.unwrap());
        }
        (Class::Request, _) => {}
        _ => return vec![],
    }
    r.encode(None, &mut out).unwrap();
    vec![out.to_vec()]
}

/// The scripted server over UDP; the LIFETIME of every Refresh goes to `refreshes`.
async fn udp_server(refreshes: Option<mpsc::Sender<u32>>) -> (SocketAddr, JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut channels = HashMap::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if let (Some(tx), Ok(m)) = (&refreshes, Message::decode(&buf[..n], &Limits::default()))
                && m.method == Method::REFRESH
            {
                let l = m.find(|a| match a {
                    Attribute::Lifetime(l) => Some(*l),
                    _ => None,
                });
                let _ = tx.send(l.unwrap_or(600)).await;
            }
            for reply in answer(&buf[..n], from, Transport::Udp, &mut channels) {
                sock.send_to(&reply, from).await.unwrap();
            }
        }
    });
    (addr, task)
}

async fn tcp_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut conn, from) = listener.accept().await.unwrap();
        let mut channels = HashMap::new();
        let mut stream = Deframer::new(&Limits::default());
        let mut buf = vec![0u8; 7]; // small reads: messages arrive in pieces
        loop {
            let n = conn.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            stream.push(&buf[..n]);
            while let Some(m) = stream.next_message().unwrap() {
                for reply in answer(&m, from, Transport::Tcp, &mut channels) {
                    conn.write_all(&reply).await.unwrap();
                }
            }
        }
    });
    (addr, task)
}

async fn exercise(server: SocketAddr, transport: Transport) {
    let config = TurnClientConfig::new(server, transport, "alice", "secret");
    let entropy = Box::new(chorus_framing::SeededEntropy::new(9));
    let mut turn = TurnHandle::connect_with(config, entropy).await.unwrap();
    assert_eq!(turn.relayed(), [RELAYED]);
    assert!(turn.mapped().is_some());
    assert_eq!(turn.reservation_token(), None);
    let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert!(matches!(
        turn.send_to(peer, b"early").await,
        Err(TurnError::Core(crate::Error::Usage(
            crate::UsageError::NoPermission
        )))
    ));
    turn.create_permission(peer.ip()).await.unwrap();
    turn.create_permission(peer.ip()).await.unwrap(); // already installed: at once
    turn.send_to(peer, b"one").await.unwrap();
    let (from, data) = turn.recv_from().await.unwrap();
    assert_eq!((from, &data[..]), (peer, &b"ind:one"[..]));
    assert_eq!(turn.bind_channel(peer).await.unwrap(), 0x4000);
    assert_eq!(turn.bind_channel(peer).await.unwrap(), 0x4000);
    turn.send_to(peer, b"two").await.unwrap();
    let (from, data) = turn.recv_from().await.unwrap();
    assert_eq!((from, &data[..]), (peer, &b"chan:two"[..]));
    turn.close().await.unwrap();
}

#[tokio::test]
async fn drives_allocation_permission_channel_and_data_over_udp_and_tcp() {
    let limit = Duration::from_secs(10);
    let (udp, udp_task) = udp_server(None).await;
    tokio::time::timeout(limit, exercise(udp, Transport::Udp))
        .await
        .expect("UDP run finishes");
    let (tcp, tcp_task) = tcp_server().await;
    tokio::time::timeout(limit, exercise(tcp, Transport::Tcp))
        .await
        .expect("TCP run finishes");
    udp_task.abort();
    tcp_task.abort();
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_allocate_fails_after_the_transaction_timeout() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = TurnClientConfig::new(silent.local_addr().unwrap(), Transport::Udp, "a", "b");
    let entropy = Box::new(chorus_framing::SeededEntropy::new(1));
    let start = tokio::time::Instant::now();
    let err = TurnHandle::connect_with(config, entropy).await.unwrap_err();
    assert!(matches!(err, TurnError::Failed { code: None, .. }), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(39_500));
    assert!(TurnError::Closed.to_string().contains("closed"));
}

#[tokio::test]
async fn dropping_the_handle_deletes_the_allocation() {
    let (tx, mut rx) = mpsc::channel(4);
    let (server, task) = udp_server(Some(tx)).await;
    let config = TurnClientConfig::new(server, Transport::Udp, "alice", "secret");
    let entropy = Box::new(chorus_framing::SeededEntropy::new(2));
    let turn = TurnHandle::connect_with(config, entropy).await.unwrap();
    drop(turn);
    let lifetime = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a Refresh within 10 s");
    assert_eq!(lifetime, Some(0));
    task.abort();
}
