//! What the end-to-end benchmarks (`conference-bench --end-to-end`, `sfu-bench`) share:
//! random SRTP keys per leg, thread pinning, thread CPU time, and running a sans-IO
//! datagram core in real time on chorus-framing's runtime's batched UDP sockets (`recvmmsg` /
//! `sendmmsg`) on a current-thread tokio runtime, as a deployment would.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use chorus::crypto::SystemEntropy;
use chorus::crypto::srtp::{Policy, Suite};
use chorus::framing::DatagramCore;
use chorus::framing::Entropy;
use chorus::runtime::{Runtime, SocketConfig, SocketStats, Sockets};
use nix::time::{ClockId, clock_gettime};

/// The suite Chorus calls use (chorus-crypto's default).
pub(crate) const SUITE: Suite = Suite::AeadAes128Gcm;

/// An SRTP policy of [`SUITE`] with a fresh random key and salt: one per direction of
/// every leg, as a handshake would give.
pub(crate) fn policy(rng: &mut SystemEntropy) -> Result<Policy, Box<dyn std::error::Error>> {
    let mut key = vec![0u8; SUITE.key_len()];
    let mut salt = vec![0u8; SUITE.salt_len()];
    rng.fill(&mut key)?;
    rng.fill(&mut salt)?;
    Ok(Policy::new(SUITE, &key, &salt)?)
}

/// Pins the calling thread to core `cpu`, if given.
pub(crate) fn pin(cpu: Option<usize>) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(cpu) = cpu {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    }
    Ok(())
}

/// The calling thread's CPU time, user and kernel (`CLOCK_THREAD_CPUTIME_ID`).
pub(crate) fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Milliseconds, for printing.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What [`serve_until`] measured.
pub(crate) struct Served {
    /// The driver's counters (datagrams and system calls).
    pub(crate) stats: SocketStats,
    /// The serving thread's CPU time, user and kernel.
    pub(crate) cpu: Duration,
    /// Wall-clock time served.
    pub(crate) wall: Duration,
}

impl Served {
    /// CPU time over wall time: the share of one core the core and its driver took.
    pub(crate) fn core_fraction(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Serves `core` on `socket` with the batched driver on a current-thread runtime on
/// the calling thread until `until`, measuring the thread's CPU time.
pub(crate) fn serve_until<C: DatagramCore<Event = std::convert::Infallible>>(
    core: &mut C,
    socket: UdpSocket,
    until: Instant,
) -> Result<Served, Box<dyn std::error::Error>> {
    socket.set_nonblocking(true)?;
    // Datagrams queue while the core works on a burst: room for many. SO_RCVBUFFORCE
    // (root) goes past net.core.rmem_max, which a deployment raises instead; the
    // driver then keeps the socket's size.
    use nix::sys::socket::{setsockopt, sockopt};
    let forced = setsockopt(&socket, sockopt::RcvBufForce, &(16usize << 20)).is_ok();
    let mut batch = SocketConfig::default();
    if forced {
        batch.recv_buffer = None;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu_start = thread_cpu();
    let wall_start = Instant::now();
    let stats = runtime.block_on(async {
        let mut io = Sockets::new(batch)?;
        io.add(tokio::net::UdpSocket::from_std(socket)?)?;
        let mut rt = Runtime::new(core, io);
        // The driver serves until stopped.
        let served = tokio::time::timeout_at(until.into(), rt.run()).await;
        match served {
            Err(_elapsed) => Ok::<_, Box<dyn std::error::Error>>(rt.sockets().stats()),
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(())) => Err("the driver stopped early".into()),
        }
    })?;
    Ok(Served {
        stats,
        cpu: thread_cpu().saturating_sub(cpu_start),
        wall: wall_start.elapsed(),
    })
}
