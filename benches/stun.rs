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
//!
//! Inputs are fixed and built before timing starts.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use chorus_nat::client::Transport;
use chorus_nat::server::{RateLimit, Server, ServerConfig};
use chorus_nat::stun::{Attribute, Class, Key, Limits, Message, Method, TransactionId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

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

criterion_group!(benches, codec, server);
criterion_main!(benches);
