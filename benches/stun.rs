//! Cost of the STUN codec and the sans-IO STUN server of `chorus-nat`.
//!
//! Groups (results and machine in `docs/performance.md`; run `cargo bench --bench stun`):
//! - `stun_encode/binding_request`, `stun_decode/binding_request`: a bare 20-byte
//!   Binding request.
//! - `stun_encode/response_integrity_fingerprint`: a Binding success response with
//!   XOR-MAPPED-ADDRESS, SOFTWARE, MESSAGE-INTEGRITY (HMAC-SHA1) and FINGERPRINT.
//! - `stun_decode/response_integrity_fingerprint`: decoding it (FINGERPRINT checked)
//!   and `stun_decode_verify/...` decoding plus MESSAGE-INTEGRITY verification.
//! - `stun_server/binding`: the server core answering one Binding request (decode,
//!   response, encode, queue, drain), rate limiting off and on: binding responses per
//!   second on one core, without sockets.
//! - `stun_server_loopback/{batched,tokio}`: a real UDP round trip on loopback: a burst
//!   of 64 Binding requests (one `sendmmsg`) to a server thread, and the 64 responses
//!   back (`recvmmsg`). Both serve on chorus-framing's runtime's `Runtime`: `batched` with its
//!   Linux path (recvmmsg/sendmmsg, UDP GSO; what `driver::run_server` uses), `tokio`
//!   with its portable path (one `recv_from`/`send_to` per datagram, what other
//!   systems get). Throughput is
//!   responses; client and server each have a thread, so pin nothing and expect noise.
//!   `benches/compare-coturn.sh` is the one-core-each comparison with coturn.
//!
//! Inputs are fixed and built before timing starts.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use chorus_framing::runtime::{Runtime, SocketConfig, Sockets};
use chorus_nat::client::Transport;
use chorus_nat::server::{RateLimit, Server, ServerConfig};
use chorus_nat::stun::{Attribute, Class, Key, Limits, Message, Method, TransactionId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;

fn request() -> Message<'static> {
    Message::new(Class::Request, Method::BINDING, TransactionId::new([7; 12]))
}

fn response() -> Message<'static> {
    let mut m = Message::new(Class::Success, Method::BINDING, TransactionId::new([7; 12]));
    m.attributes.push(Attribute::XorMappedAddress(
        "198.51.100.7:50000".parse().unwrap(),
    ));
    m.attributes.push(Attribute::Software("chorus"));
    m.message_integrity = true;
    m.fingerprint = true;
    m
}

fn codec(c: &mut Criterion) {
    let key = Key::short_term("VOkJxbRl1RmTxUk/WvJxBt");
    let limits = Limits::default();
    let (req, resp) = (request(), response());
    let mut req_wire = BytesMut::new();
    req.encode(None, &mut req_wire).unwrap();
    let mut resp_wire = BytesMut::new();
    resp.encode(Some(&key), &mut resp_wire).unwrap();

    let mut g = c.benchmark_group("stun_encode");
    g.throughput(Throughput::Elements(1));
    let mut buf = BytesMut::with_capacity(256);
    g.bench_function("binding_request", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&req).encode(None, &mut buf).unwrap();
            black_box(buf.len())
        });
    });
    g.bench_function("response_integrity_fingerprint", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&resp).encode(Some(&key), &mut buf).unwrap();
            black_box(buf.len())
        });
    });
    g.finish();

    let mut g = c.benchmark_group("stun_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("binding_request", |b| {
        b.iter(|| Message::decode(black_box(&req_wire), &limits).unwrap());
    });
    g.bench_function("response_integrity_fingerprint", |b| {
        b.iter(|| Message::decode(black_box(&resp_wire), &limits).unwrap());
    });
    g.finish();

    let mut g = c.benchmark_group("stun_decode_verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("response_integrity_fingerprint", |b| {
        b.iter(|| {
            let m = Message::decode(black_box(&resp_wire), &limits).unwrap();
            Message::verify(&resp_wire, &key).unwrap();
            m
        });
    });
    g.finish();
}

#[allow(clippy::field_reassign_with_default)] // the only way outside the crate
fn server(c: &mut Criterion) {
    let local: SocketAddr = "192.0.2.1:3478".parse().unwrap();
    let from: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let mut wire = BytesMut::new();
    request().encode(None, &mut wire).unwrap();
    let mut g = c.benchmark_group("stun_server");
    g.throughput(Throughput::Elements(1));
    // Limits high enough that the benchmark's single source is never refused.
    let mut unlimited = RateLimit::default();
    unlimited.per_second = u32::MAX;
    unlimited.burst = u32::MAX;
    for (name, rate) in [("binding", None), ("binding_rate_limited", Some(unlimited))] {
        let mut cfg = ServerConfig::default();
        cfg.primary = local;
        cfg.rate_limit = rate;
        let mut s = Server::new(cfg).unwrap();
        let now = Instant::now();
        g.bench_function(name, |b| {
            b.iter(|| {
                s.handle_input(now, local, from, Transport::Udp, black_box(&wire))
                    .unwrap();
                s.poll_transmit().unwrap()
            });
        });
    }
    g.finish();
}

/// A Binding server on its own thread and current-thread runtime; dropping the guard
/// stops it.
struct LoopbackServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[allow(clippy::field_reassign_with_default)] // the only way outside the crate
fn loopback_server(batched: bool) -> LoopbackServer {
    let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    std_sock.set_nonblocking(true).unwrap();
    let addr = std_sock.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sock = tokio::net::UdpSocket::from_std(std_sock).unwrap();
            let mut cfg = ServerConfig::default();
            cfg.primary = addr;
            cfg.rate_limit = None;
            let mut core = Server::new(cfg).unwrap();
            let mut config = SocketConfig::default();
            config.batched = batched;
            let mut sockets = Sockets::new(config).unwrap();
            sockets.add(sock).unwrap();
            let mut runtime = Runtime::new(&mut core, sockets);
            tokio::select! {
                r = runtime.run() => r.unwrap(),
                _ = stopped => {}
            }
        });
    });
    LoopbackServer {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    }
}

fn loopback(c: &mut Criterion) {
    const BURST: usize = 64;
    let mut req = BytesMut::new();
    request().encode(None, &mut req).unwrap();
    let mut g = c.benchmark_group("stun_server_loopback");
    g.throughput(Throughput::Elements(BURST as u64));
    for (name, batched) in [("batched", true), ("tokio", false)] {
        let server = loopback_server(batched);
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.addr).unwrap();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut send_h = MultiHeaders::<SockaddrStorage>::preallocate(BURST, None);
        let mut recv_h = MultiHeaders::<SockaddrStorage>::preallocate(BURST, None);
        let mut bufs = vec![0u8; BURST * 128];
        let iovs = [[IoSlice::new(&req)]; BURST];
        let addrs = [None::<SockaddrStorage>; BURST];
        g.bench_function(name, |b| {
            b.iter(|| {
                let sent = sendmmsg(
                    client.as_raw_fd(),
                    &mut send_h,
                    &iovs,
                    addrs,
                    [],
                    MsgFlags::empty(),
                )
                .unwrap()
                .count();
                assert_eq!(sent, BURST);
                let mut got = 0;
                while got < BURST {
                    let mut chunks = bufs.chunks_mut(128);
                    let mut slices: Vec<[IoSliceMut<'_>; 1]> = (0..BURST - got)
                        .map(|_| [IoSliceMut::new(chunks.next().unwrap())])
                        .collect();
                    // Blocks (2 s timeout) for the first, takes what else is queued.
                    got += recvmmsg(
                        client.as_raw_fd(),
                        &mut recv_h,
                        slices.iter_mut(),
                        MsgFlags::MSG_WAITFORONE,
                        None,
                    )
                    .expect("responses within 2 s")
                    .count();
                }
                got
            });
        });
        drop(server);
    }
    g.finish();
}

criterion_group!(benches, codec, server, loopback);
criterion_main!(benches);
