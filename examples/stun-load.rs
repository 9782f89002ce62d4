//! A STUN/TURN load generator for loopback benchmarks (`benches/compare-coturn.sh`).
//!
//! ```text
//! cargo run --release --example stun-load -- binding --server 127.0.0.1:3478
//! cargo run --release --example stun-load -- relay --server 127.0.0.1:3478 --allocations 1000
//! ```
//!
//! One thread, batched system calls (`sendmmsg`/`recvmmsg`), no allocation per
//! datagram, so that one core of load saturates one core of server:
//!
//! - **binding**: `--sockets` client sockets each keep up to `--window` Binding
//!   requests in flight (a closed loop, so a slow server is never flooded into
//!   dropping); every response is counted. A socket that hears nothing for 20 ms counts
//!   its outstanding requests as lost and starts again.
//! - **relay**: for each of `--allocations` client sockets the generator performs a TURN
//!   allocation with long-term credentials (Allocate, 401, Allocate with
//!   MESSAGE-INTEGRITY), a CreatePermission and a ChannelBind to a peer socket it owns,
//!   then sends ChannelData through the relays, round-robin over the allocations, and
//!   counts what reaches the peer sockets; at most `--window` packets are in flight.
//! - **relay, paced** (`--pps-per-allocation R`): the same allocations, but each one
//!   carries one media-like flow instead of bursts: one `--size`-byte ChannelData every
//!   1/R s, one datagram per `send(2)` (no GSO, no batching), and the allocations' sends
//!   interleaved evenly over each period (allocation i sends at offset i/(R·N) s of it),
//!   as a thousand independent callers would. Each packet carries a sequence number, so
//!   a packet counts as delivered only if it was sent in the measured time, and
//!   `lost` = sent − delivered after a 200 ms drain (`peer_drops`, datagrams the
//!   generator's own peer sockets dropped, tells how many of those were its fault). `late` counts sends more than 1 ms
//!   behind their schedule (the generator falling behind turns pacing into bursts).
//!
//! It ends with one line a script can read:
//! `result mode=<m> rate=<answered or delivered per s> sent=<per s> lost=<n> cpu=<fraction of one core> ...`.
//! `cpu` below 1 while the server's core is busy shows the generator is not the
//! bottleneck: it waits in `poll(2)` for the server. (Kernel work done for the
//! generator's sends on loopback is counted in its system time.) With `--watch-pid PID`
//! the line also has `server_cpu=<fraction of one core>`: that process's CPU time
//! (`/proc/PID/stat`, all threads) over exactly the measured time, excluding the
//! allocation setup and the warm-up. `--watch-core N` (repeatable) adds
//! `core<N>=<busy fraction>` for that CPU over the same time (`/proc/stat`: everything
//! that ran on it, softirq and other tenants included).

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus::nat::stun::{
    Attribute, Class, Key, Limits, Message, Method, PasswordAlgorithm, TransactionId,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendmsg,
};

const HELP: &str = "\
stun-load: STUN Binding and TURN relay load over loopback

USAGE:
    stun-load binding --server ADDR [OPTIONS]
    stun-load relay --server ADDR [--allocations N] [OPTIONS]

OPTIONS:
    --server ADDR        the server (UDP)
    --duration SECS      measured time (default 5)
    --warmup SECS        unmeasured time first (default 1)
    --sockets N          binding: client sockets (default 8)
    --window N           binding: requests in flight per socket (default 32);
                         relay: packets in flight in total (default 256)
    --batch N            datagrams per sendmmsg/recvmmsg (default 32, at most 64)
    --allocations N      relay: allocations, one client socket each (default 1)
    --peers N            relay: peer sockets (default 1)
    --size N             relay: application bytes per ChannelData (default 100)
    --burst N            relay: packets per allocation per round (default 8)
    --pps-per-allocation R
                         relay: paced instead of bursts: each allocation sends one
                         --size datagram every 1/R s, the allocations' sends spread
                         evenly over the period, one send(2) each (--window, --burst,
                         --gso do not apply)
    --watch-pid PID      also report that process's CPU over the measured time
    --watch-core N       also report how busy CPU N was then; repeatable
    --user U --password P    relay credentials (default alice / secret)
    --gso                send each burst as one UDP GSO sendmsg (cheaper for the
                         generator; the server still receives separate datagrams)
    -h, --help           print this help
";

const MAX_BATCH: usize = 64;

/// A socket silent this long with requests outstanding counts them lost.
const LOSS_TIMEOUT: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
struct Opts {
    relay: bool,
    server: SocketAddr,
    duration: f64,
    warmup: f64,
    sockets: usize,
    window: Option<usize>,
    batch: usize,
    allocations: usize,
    peers: usize,
    size: usize,
    burst: usize,
    user: String,
    password: String,
    gso: bool,
    pps_per_allocation: Option<f64>,
    watch_pid: Option<u32>,
    watch_cores: Vec<usize>,
}

fn parse() -> Result<Option<Opts>, String> {
    let mut args = std::env::args().skip(1);
    let relay = match args.next().as_deref() {
        Some("binding") => false,
        Some("relay") => true,
        Some("-h" | "--help") | None => return Ok(None),
        Some(other) => return Err(format!("unknown mode {other} (try --help)")),
    };
    let mut o = Opts {
        relay,
        server: SocketAddr::from(([127, 0, 0, 1], 3478)),
        duration: 5.0,
        warmup: 1.0,
        sockets: 8,
        window: None,
        batch: 32,
        allocations: 1,
        peers: 1,
        size: 100,
        burst: 8,
        user: "alice".into(),
        password: "secret".into(),
        gso: false,
        pps_per_allocation: None,
        watch_pid: None,
        watch_cores: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        }
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--server" => o.server = num("--server", value()?)?,
            "--duration" => o.duration = num("--duration", value()?)?,
            "--warmup" => o.warmup = num("--warmup", value()?)?,
            "--sockets" => o.sockets = num("--sockets", value()?)?,
            "--window" => o.window = Some(num("--window", value()?)?),
            "--batch" => o.batch = num("--batch", value()?)?,
            "--allocations" => o.allocations = num("--allocations", value()?)?,
            "--peers" => o.peers = num("--peers", value()?)?,
            "--size" => o.size = num("--size", value()?)?,
            "--burst" => o.burst = num("--burst", value()?)?,
            "--user" => o.user = value()?,
            "--password" => o.password = value()?,
            "--gso" => o.gso = true,
            "--pps-per-allocation" => {
                o.pps_per_allocation = Some(num("--pps-per-allocation", value()?)?);
            }
            "--watch-pid" => o.watch_pid = Some(num("--watch-pid", value()?)?),
            "--watch-core" => o.watch_cores.push(num("--watch-core", value()?)?),
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    if !(1..=MAX_BATCH).contains(&o.batch) || o.sockets == 0 || o.allocations == 0 || o.peers == 0 {
        return Err("--batch must be 1..=64; --sockets, --allocations, --peers at least 1".into());
    }
    if o.size > 1400 {
        return Err("--size at most 1400".into());
    }
    if o.pps_per_allocation
        .is_some_and(|r| !o.relay || !(0.0..=1000.0).contains(&r) || r == 0.0 || o.size < 8)
    {
        return Err(
            "--pps-per-allocation: relay mode only, 0 < R <= 1000, --size at least 8 (the \
             sequence number)"
                .into(),
        );
    }
    Ok(Some(o))
}

/// User plus system CPU seconds of this process so far (`/proc/self/stat`, USER_HZ 100).
fn cpu_seconds() -> f64 {
    proc_cpu_seconds("self")
}

/// User plus system CPU seconds of process `pid` (all its threads) so far, 0 if gone.
fn proc_cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / 100.0
}

/// Busy and total jiffies of CPU `n` so far (`/proc/stat`; idle and iowait are not busy).
fn core_ticks(n: usize) -> (u64, u64) {
    let name = format!("cpu{n}");
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
    else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Datagrams the kernel dropped at these sockets' receive queues so far (the last
/// column of `/proc/net/udp`, IPv4 sockets): a full queue in the generator is not a
/// loss of the server's.
fn socket_drops(socks: &[UdpSocket]) -> u64 {
    let ports: Vec<String> = socks
        .iter()
        .filter_map(|s| s.local_addr().ok())
        .map(|a| format!(":{:04X}", a.port()))
        .collect();
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|local| ports.iter().any(|p| local.ends_with(p.as_str())))
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// One measured phase: counters zeroed after the warm-up.
struct Meter {
    start: Instant,
    cpu: f64,
    /// The watched process (`--watch-pid`) and its CPU seconds at `start`.
    watched: Option<(String, f64)>,
    /// `--watch-core` CPUs and their (busy, total) jiffies at `start`.
    cores: Vec<(usize, (u64, u64))>,
    sent: u64,
    got: u64,
    lost: u64,
}

impl Meter {
    fn new(o: &Opts) -> Self {
        let watched = o.watch_pid.map(|p| {
            let p = p.to_string();
            let c = proc_cpu_seconds(&p);
            (p, c)
        });
        let cores = o.watch_cores.iter().map(|&c| (c, core_ticks(c))).collect();
        Self {
            start: Instant::now(),
            cpu: cpu_seconds(),
            watched,
            cores,
            sent: 0,
            got: 0,
            lost: 0,
        }
    }

    /// ` server_cpu=<fraction of one core>` and ` core<N>=<busy fraction>` since
    /// `start`, or nothing.
    fn watched(&self, secs: f64) -> String {
        let mut out = self.watched.as_ref().map_or(String::new(), |(p, c0)| {
            format!(" server_cpu={:.4}", (proc_cpu_seconds(p) - c0) / secs)
        });
        for &(c, (b0, t0)) in &self.cores {
            let (b, t) = core_ticks(c);
            let busy = (b - b0) as f64 / (t - t0).max(1) as f64;
            out.push_str(&format!(" core{c}={busy:.4}"));
        }
        out
    }
}

fn bind_client(big_buffers: bool) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    if big_buffers {
        // Responses arrive in bursts; never lose them in the generator.
        let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
    }
    Ok(s)
}

/// How a burst of identical datagrams leaves.
struct Sender {
    headers: MultiHeaders<SockaddrStorage>,
    /// With GSO: `MAX_BATCH` copies of the payload back to back.
    gso: Option<Vec<u8>>,
}

impl Sender {
    fn new(gso: bool, payload: &[u8]) -> Self {
        Self {
            headers: MultiHeaders::preallocate(MAX_BATCH, None),
            gso: gso.then(|| payload.repeat(MAX_BATCH)),
        }
    }

    /// `n` copies of `payload` on a connected socket; returns how many left.
    fn send(&mut self, sock: &UdpSocket, payload: &[u8], n: usize) -> usize {
        let n = n.min(MAX_BATCH);
        if n == 0 {
            return 0;
        }
        if let Some(all) = &self.gso {
            let seg = u16::try_from(payload.len()).unwrap_or(u16::MAX);
            let r = sendmsg::<SockaddrStorage>(
                sock.as_raw_fd(),
                &[IoSlice::new(&all[..n * payload.len()])],
                &[ControlMessage::UdpGsoSegments(&seg)],
                MsgFlags::MSG_DONTWAIT,
                None,
            );
            return if r.is_ok() { n } else { 0 };
        }
        send_copies(sock, &mut self.headers, payload, n)
    }
}

/// `sendmmsg` of `n` copies of `payload` on a connected socket; returns how many left.
fn send_copies(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    payload: &[u8],
    n: usize,
) -> usize {
    let iovs = [[IoSlice::new(payload)]; MAX_BATCH];
    let addrs = [None::<SockaddrStorage>; MAX_BATCH];
    match sendmmsg(
        sock.as_raw_fd(),
        headers,
        iovs.iter().take(n),
        &addrs[..n],
        [],
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(r) => r.count(),
        Err(_) => 0,
    }
}

/// `recvmmsg` without waiting; returns how many datagrams passed `check`.
fn recv_count(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &mut [u8],
    batch: usize,
    check: impl Fn(&[u8]) -> bool,
) -> (usize, usize) {
    let slot = bufs.len() / MAX_BATCH;
    let mut lens = [0usize; MAX_BATCH];
    let got = {
        let mut chunks = bufs.chunks_mut(slot);
        let mut iovs: [[IoSliceMut<'_>; 1]; MAX_BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        match recvmmsg(
            sock.as_raw_fd(),
            headers,
            iovs.iter_mut().take(batch),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => {
                let mut n = 0;
                for (l, m) in lens.iter_mut().zip(r) {
                    *l = m.bytes;
                    n += 1;
                }
                n
            }
            Err(_) => 0,
        }
    };
    let valid = lens
        .iter()
        .take(got)
        .zip(bufs.chunks(slot))
        .filter(|(l, b)| b.get(..**l).is_some_and(&check))
        .count();
    (got, valid)
}

fn wait_readable(socks: &[UdpSocket], timeout_ms: u8) {
    let mut fds: Vec<PollFd<'_>> = socks
        .iter()
        .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
        .collect();
    let _ = poll(&mut fds, PollTimeout::from(timeout_ms));
}

fn report(mode: &str, o: &Opts, m: &Meter, extra: &str) {
    let secs = m.start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - m.cpu) / secs;
    let watched = m.watched(secs);
    println!(
        "result mode={mode} rate={:.0} sent={:.0} lost={} cpu={cpu:.2} secs={secs:.2} batch={}{extra}{watched}",
        m.got as f64 / secs,
        m.sent as f64 / secs,
        m.lost,
        o.batch
    );
}

fn binding(o: &Opts) -> std::io::Result<()> {
    let window = o.window.unwrap_or(32);
    let mut req = BytesMut::new();
    Message::new(
        Class::Request,
        Method::BINDING,
        TransactionId::new([0x42; 12]),
    )
    .encode(None, &mut req)
    .map_err(std::io::Error::other)?;
    let mut socks = Vec::new();
    for _ in 0..o.sockets {
        let s = bind_client(true)?;
        s.connect(o.server)?;
        s.set_nonblocking(true)?;
        socks.push(s);
    }
    // A Binding success response: type 0x0101 and our transaction id.
    let check = |b: &[u8]| b.len() >= 20 && b[..2] == [0x01, 0x01] && b[8..20] == [0x42; 12];
    let mut sender = Sender::new(o.gso, &req);
    let mut recv_h = MultiHeaders::<SockaddrStorage>::preallocate(MAX_BATCH, None);
    let mut bufs = vec![0u8; MAX_BATCH * 256];
    let mut inflight = vec![0usize; socks.len()];
    let mut last_rx = vec![Instant::now(); socks.len()];
    let warm_end = Instant::now() + Duration::from_secs_f64(o.warmup);
    let mut warm = true;
    let mut m = Meter::new(o);
    let end = warm_end + Duration::from_secs_f64(o.duration);
    loop {
        let now = Instant::now();
        if warm && now >= warm_end {
            warm = false;
            m = Meter::new(o);
        }
        if now >= end {
            break;
        }
        let mut progress = false;
        for (i, s) in socks.iter().enumerate() {
            let room = window.saturating_sub(inflight[i]);
            if room > 0 {
                let n = sender.send(s, &req, room.min(o.batch));
                inflight[i] += n;
                m.sent += n as u64;
                if inflight[i] == n {
                    last_rx[i] = now;
                }
            }
        }
        for (i, s) in socks.iter().enumerate() {
            loop {
                let (got, valid) = recv_count(s, &mut recv_h, &mut bufs, o.batch, check);
                if got == 0 {
                    break;
                }
                progress = true;
                inflight[i] = inflight[i].saturating_sub(got);
                last_rx[i] = now;
                m.got += valid as u64;
                if got < o.batch {
                    break;
                }
            }
            if inflight[i] > 0 && now.duration_since(last_rx[i]) > LOSS_TIMEOUT {
                m.lost += inflight[i] as u64;
                inflight[i] = 0;
            }
        }
        if !progress {
            wait_readable(&socks, 1);
        }
    }
    report(
        "binding",
        o,
        &m,
        &format!(" sockets={} window={window} gso={}", o.sockets, o.gso),
    );
    Ok(())
}

/// Simple transaction ids: unique within the run, which is all a server needs.
fn tid(n: &mut u64) -> TransactionId {
    *n += 1;
    let mut id = [0u8; 12];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&std::process::id().to_be_bytes());
    TransactionId::new(id)
}

/// Sends `msg` and waits for the answer to it (3 tries, 1 s each).
fn transact(sock: &UdpSocket, msg: &Message<'_>, key: Option<&Key>) -> std::io::Result<Vec<u8>> {
    let mut out = BytesMut::new();
    msg.encode(key, &mut out).map_err(std::io::Error::other)?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = vec![0u8; 2048];
    for _ in 0..3 {
        sock.send(&out)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let Ok(n) = sock.recv(&mut buf) else { break };
            if n >= 20 && buf[8..20] == msg.transaction_id.0 {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer from the TURN server",
    ))
}

fn fail(what: &str, m: &Message<'_>) -> std::io::Error {
    let code = m.attributes.iter().find_map(|a| match a {
        Attribute::ErrorCode { code, reason } => Some(format!("{code} {reason}")),
        _ => None,
    });
    std::io::Error::other(format!(
        "{what} failed: {}",
        code.unwrap_or_else(|| format!("{:?}", m.class))
    ))
}

/// RFC 8656 §7.2 (Allocate with the 401 challenge), §9 (CreatePermission), §11
/// (ChannelBind): one allocation on `sock`, channel 0x4000 bound to `peer`.
fn allocate(
    sock: &UdpSocket,
    peer: SocketAddr,
    o: &Opts,
    n: &mut u64,
) -> std::io::Result<SocketAddr> {
    let limits = Limits::default();
    let mut first = Message::new(Class::Request, Method::ALLOCATE, tid(n));
    first.attributes.push(Attribute::RequestedTransport(17));
    let wire = transact(sock, &first, None)?;
    let challenge = Message::decode(&wire, &limits).map_err(std::io::Error::other)?;
    let mut realm = None;
    let mut nonce = None;
    for a in &challenge.attributes {
        match a {
            Attribute::Realm(r) => realm = Some(r.to_string()),
            Attribute::Nonce(v) => nonce = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(realm), Some(nonce)) = (realm, nonce) else {
        return Err(fail(
            "Allocate (expected a 401 with REALM and NONCE)",
            &challenge,
        ));
    };
    let key = Key::long_term(&o.user, &realm, &o.password, PasswordAlgorithm::Md5);
    let authed = |method: Method, n: &mut u64| {
        let mut m = Message::new(Class::Request, method, tid(n));
        m.attributes.push(Attribute::Username(&o.user));
        m.attributes.push(Attribute::Realm(&realm));
        m.attributes.push(Attribute::Nonce(&nonce));
        m.message_integrity = true;
        m
    };
    let mut alloc = authed(Method::ALLOCATE, n);
    alloc
        .attributes
        .insert(0, Attribute::RequestedTransport(17));
    let wire = transact(sock, &alloc, Some(&key))?;
    let resp = Message::decode(&wire, &limits).map_err(std::io::Error::other)?;
    let relayed = resp.attributes.iter().find_map(|a| match a {
        Attribute::XorRelayedAddress(r) => Some(*r),
        _ => None,
    });
    let Some(relayed) = relayed.filter(|_| resp.class == Class::Success) else {
        return Err(fail("Allocate", &resp));
    };
    let mut perm = authed(Method::CREATE_PERMISSION, n);
    perm.attributes.insert(0, Attribute::XorPeerAddress(peer));
    let wire = transact(sock, &perm, Some(&key))?;
    let resp = Message::decode(&wire, &limits).map_err(std::io::Error::other)?;
    if resp.class != Class::Success {
        return Err(fail("CreatePermission", &resp));
    }
    let mut bind = authed(Method::CHANNEL_BIND, n);
    bind.attributes.insert(0, Attribute::XorPeerAddress(peer));
    bind.attributes.insert(0, Attribute::ChannelNumber(0x4000));
    let wire = transact(sock, &bind, Some(&key))?;
    let resp = Message::decode(&wire, &limits).map_err(std::io::Error::other)?;
    if resp.class != Class::Success {
        return Err(fail("ChannelBind", &resp));
    }
    Ok(relayed)
}

fn relay(o: &Opts) -> std::io::Result<()> {
    let window = o.window.unwrap_or(256);
    let mut peers = Vec::new();
    for _ in 0..o.peers {
        let p = bind_client(true)?;
        p.set_nonblocking(true)?;
        peers.push(p);
    }
    let mut clients = Vec::new();
    let mut n = 0u64;
    let setup = Instant::now();
    for i in 0..o.allocations {
        let s = bind_client(false)?;
        s.connect(o.server)?;
        let peer = peers[i % peers.len()].local_addr()?;
        allocate(&s, peer, o, &mut n)
            .map_err(|e| std::io::Error::new(e.kind(), format!("allocation {}: {e}", i + 1)))?;
        s.set_nonblocking(true)?;
        clients.push(s);
    }
    eprintln!(
        "stun-load: {} allocations ready in {:.2} s",
        clients.len(),
        setup.elapsed().as_secs_f64()
    );
    if let Some(pps) = o.pps_per_allocation {
        return paced(o, &clients, &peers, pps);
    }
    // RFC 8656 §12.4: channel 0x4000, length, data (a multiple of 4 needs no padding
    // over UDP anyway).
    let mut packet = vec![0x40, 0x00];
    packet.extend_from_slice(&u16::try_from(o.size).unwrap_or(0).to_be_bytes());
    packet.resize(4 + o.size, 0x5a);
    let want = o.size;
    let check = move |b: &[u8]| b.len() == want;
    let mut sender = Sender::new(o.gso, &packet);
    let mut recv_h = MultiHeaders::<SockaddrStorage>::preallocate(MAX_BATCH, None);
    let mut bufs = vec![0u8; MAX_BATCH * 2048];
    let burst = if clients.len() == 1 {
        o.batch
    } else {
        o.burst.clamp(1, MAX_BATCH)
    };
    let mut inflight = 0usize;
    let mut last_rx = Instant::now();
    let mut next = 0usize;
    let warm_end = Instant::now() + Duration::from_secs_f64(o.warmup);
    let mut warm = true;
    let mut m = Meter::new(o);
    let end = warm_end + Duration::from_secs_f64(o.duration);
    loop {
        let now = Instant::now();
        if warm && now >= warm_end {
            warm = false;
            m = Meter::new(o);
        }
        if now >= end {
            break;
        }
        // Fill the window round-robin over the allocations.
        let mut tries = 0;
        while inflight + burst <= window && tries < clients.len() {
            let c = &clients[next];
            next = (next + 1) % clients.len();
            tries += 1;
            let k = sender.send(c, &packet, burst);
            if inflight == 0 {
                last_rx = now;
            }
            inflight += k;
            m.sent += k as u64;
        }
        let mut progress = false;
        for p in &peers {
            loop {
                let (got, valid) = recv_count(p, &mut recv_h, &mut bufs, o.batch, check);
                if got == 0 {
                    break;
                }
                progress = true;
                inflight = inflight.saturating_sub(got);
                last_rx = now;
                m.got += valid as u64;
                if got < o.batch {
                    break;
                }
            }
        }
        if inflight > 0 && now.duration_since(last_rx) > LOSS_TIMEOUT {
            m.lost += inflight as u64;
            inflight = 0;
        }
        if !progress && inflight + burst > window {
            wait_readable(&peers, 1);
        }
    }
    report(
        "relay",
        o,
        &m,
        &format!(
            " allocations={} size={} window={window} burst={burst} gso={}",
            o.allocations, o.size, o.gso
        ),
    );
    Ok(())
}

/// Paced relay load (`--pps-per-allocation`): one flow per allocation, the flows'
/// packets interleaved evenly, one datagram per `send(2)`.
fn paced(o: &Opts, clients: &[UdpSocket], peers: &[UdpSocket], pps: f64) -> std::io::Result<()> {
    // Sleeps of ~20 µs must not become the default 50 µs timer slack.
    if let Err(e) = nix::sys::prctl::set_timerslack(1_000) {
        eprintln!("stun-load: cannot lower the timer slack ({e}); pacing will be coarser");
    }
    // Packet k is due at k * gap and leaves through allocation k mod N: allocation i
    // sends at offsets i * gap, i * gap + 1/R, ...
    let gap = 1e9 / (pps * clients.len() as f64); // ns
    let index_at = |secs: f64| (secs * 1e9 / gap).ceil() as u64;
    let due = |start: Instant, k: u64| start + Duration::from_nanos((k as f64 * gap) as u64);
    let (first, last) = (index_at(o.warmup), index_at(o.warmup + o.duration));
    // RFC 8656 §12.4: channel 0x4000, length, data; the data starts with the packet's
    // sequence number (big-endian u64), the rest is filler.
    let mut packet = vec![0x40, 0x00];
    packet.extend_from_slice(&u16::try_from(o.size).unwrap_or(0).to_be_bytes());
    packet.resize(4 + o.size, 0x5a);
    let want = o.size;
    // Delivered in the measured range (the seq is in the first 8 data bytes).
    let check = move |b: &[u8]| {
        b.len() == want
            && b.first_chunk::<8>()
                .is_some_and(|s| (first..last).contains(&u64::from_be_bytes(*s)))
    };
    let mut recv_h = MultiHeaders::<SockaddrStorage>::preallocate(MAX_BATCH, None);
    let mut bufs = vec![0u8; MAX_BATCH * 2048];
    let mut drain = |got: &mut u64| {
        let mut any = false;
        for p in peers {
            loop {
                let (n, valid) = recv_count(p, &mut recv_h, &mut bufs, o.batch, check);
                *got += valid as u64;
                any |= n > 0;
                if n < o.batch {
                    break;
                }
            }
        }
        any
    };
    let (mut delivered, mut send_errors, mut late) = (0u64, 0u64, 0u64);
    let peer_drops0 = socket_drops(peers);
    let mut lag = Duration::ZERO;
    let mut m = Meter::new(o);
    let start = Instant::now();
    let mut k = 0u64;
    let mut measured: Option<(f64, f64, String)> = None; // (secs, cpu, server_cpu)
    while k < last {
        let now = Instant::now();
        // Everything due, one datagram per send; at most one period's worth at once.
        let mut n = 0;
        while k < last && n < clients.len() && due(start, k) <= now {
            if k == first {
                m = Meter::new(o);
            }
            let behind = now.duration_since(due(start, k));
            if k >= first {
                lag += behind;
                late += u64::from(behind > Duration::from_millis(1));
            }
            packet[4..12].copy_from_slice(&k.to_be_bytes());
            let c = &clients[(k % clients.len() as u64) as usize];
            if c.send(&packet).is_err() && k >= first {
                send_errors += 1;
            }
            k += 1;
            n += 1;
        }
        if k == last && measured.is_none() {
            let secs = m.start.elapsed().as_secs_f64();
            measured = Some((secs, (cpu_seconds() - m.cpu) / secs, m.watched(secs)));
        }
        drain(&mut delivered);
        let next = due(start, k);
        let now = Instant::now();
        if k < last && next > now {
            std::thread::sleep(next - now);
        }
    }
    // What is still in flight: 200 ms, far above a loopback relay's latency.
    let stop = Instant::now() + Duration::from_millis(200);
    while Instant::now() < stop {
        if !drain(&mut delivered) {
            wait_readable(peers, 5);
        }
    }
    let (secs, cpu, watched) = measured.unwrap_or_default();
    let peer_drops = socket_drops(peers) - peer_drops0;
    let scheduled = last - first;
    let lost = scheduled.saturating_sub(delivered);
    println!(
        "result mode=relay rate={:.0} sent={:.0} lost={lost} cpu={cpu:.2} secs={secs:.2} batch={} \
         allocations={} size={} paced pps_per_allocation={pps} scheduled={scheduled} \
         delivered={delivered} send_errors={send_errors} peer_drops={peer_drops} late={late} \
         lag_us={:.1}{watched}",
        delivered as f64 / secs.max(1e-9),
        scheduled as f64 / secs.max(1e-9),
        o.batch,
        clients.len(),
        o.size,
        lag.as_secs_f64() * 1e6 / scheduled.max(1) as f64,
    );
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
            eprintln!("stun-load: {e}");
            return ExitCode::from(2);
        }
    };
    let r = if o.relay { relay(&o) } else { binding(&o) };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stun-load: {e}");
            ExitCode::FAILURE
        }
    }
}
