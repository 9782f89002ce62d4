//! A batched UDP driver for sans-IO datagram servers (Linux): many datagrams per
//! system call, no heap allocation per datagram.
//!
//! A relay or STUN server on Linux spends most of its time in the kernel: every
//! datagram costs a system call entry, the UDP/IP stack and a copy, while the protocol
//! work is a few hundred nanoseconds (`docs/performance.md`). This driver cuts the
//! per-datagram kernel work:
//!
//! - **receive**: `recvmmsg(2)` fills up to [`BatchConfig::batch`] buffers per call;
//!   with [`BatchConfig::gro`] the socket also accepts coalesced datagrams (`UDP_GRO`,
//!   Linux 5.0+), which are cut back into segments by their stride.
//! - **send**: the transmits the core queued are copied into one reused buffer. A run of
//!   consecutive datagrams to the same destination with the same size leaves in one
//!   `sendmsg(2)` with `UDP_SEGMENT` (UDP GSO, Linux 4.18+; detected at start, turned off
//!   after the first `EIO`); everything else leaves in `sendmmsg(2)` batches.
//! - **no allocation per datagram**: receive buffers, message headers and the send
//!   buffer are allocated once (with GRO on, the receive headers are rebuilt once per
//!   batch, because `nix` does not reset `msg_controllen` between calls).
//!
//! - **many sockets, readiness per socket**: a wake-up costs O(sockets that became
//!   readable), not O(sockets). Each socket has a [`Waker`] of its own that, when
//!   tokio's reactor wakes it, puts the socket's slot in a FIFO queue shared with the
//!   set and wakes the driver task; [`BatchSockets::readable`] asks only the queued
//!   sockets (`poll_recv_ready` with the socket's waker, which registers it again when
//!   the socket is not readable), and every socket that was read goes back in the
//!   queue: a drained socket so its waker is registered again, a socket that still has
//!   data (it used up [`BatchConfig::rounds`]) to be read again after the others,
//!   round-robin, so no socket starves. A relay server with a socket per allocation
//!   and paced traffic (one datagram per wake-up) thus pays for one socket per
//!   datagram, not for all of them; a socket with many datagrams is still read with
//!   `recvmmsg` in batches. A transmit finds its socket by a map from local address.
//! - **no empty read after a short batch**: `recvmmsg` with `MSG_DONTWAIT` stops
//!   early only when the next receive would block, so a batch shorter than
//!   [`BatchConfig::batch`] clears the socket's tokio readiness (the closure given to
//!   `try_io` reports "would block" after keeping the datagrams) instead of paying a
//!   second system call to learn it. tokio clears readiness only if no new readiness
//!   event arrived since the read began (its tick), and epoll reports every later
//!   datagram as a new event, so none is missed.
//! - `SO_RCVBUF` of 4 MiB per socket by default ([`BatchConfig::recv_buffer`]).
//!
//! The protocol stays in the core: anything implementing [`DatagramCore`] (the STUN
//! [`Server`] does) runs on [`run_batched`], or on [`BatchSockets`] with [`serve_with`]
//! for a driver whose socket set changes (a TURN server binding relay sockets with
//! [`BatchSockets::bind`] when its core asks).
//!
//! The run loop of [`run_batched`]:
//! 1. Drain [`DatagramCore::poll_transmit`] and send everything ([`BatchSockets::flush`]).
//! 2. Wait until a socket is readable or [`DatagramCore::poll_timeout`] is due (one
//!    timer, moved only when the deadline changes).
//! 3. Read every readable socket in batches until it would block (at most
//!    [`BatchConfig::rounds`] batches per socket before going back to step 1, so
//!    responses are not starved) and give each datagram to
//!    [`DatagramCore::handle_datagram`].
//!
//! The readiness bookkeeping, per socket slot: a slot is *queued* (its waker fired, or
//! it was just added or read: [`BatchSockets::readable`] asks it next), *ready* (it
//! said readable: [`BatchSockets::recv_ready`] reads it, then queues it again) or
//! *armed* (it said "not readable", which left its waker with tokio's reactor). A slot
//! is queued at most once at a time.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use chorus_framing::Transmit;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
    sendmmsg, sendmsg, sendto, setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::{DriverError, now};
use crate::client::Transport;
use crate::server::Server;

/// Most datagrams per `recvmmsg`/`sendmmsg` call (and the largest allowed
/// [`BatchConfig::batch`]).
pub const MAX_BATCH: usize = 64;

/// Most segments in one UDP GSO send (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;

/// Largest UDP payload: the size of one receive buffer when GRO is on.
const MAX_UDP_PAYLOAD: usize = 65_535;

/// What [`run_batched`] drives: the contract every Chorus datagram core keeps, defined
/// once in chorus-framing.
pub use chorus_framing::DatagramCore;

/// The STUN server (RFC 8489 Binding, RFC 5780 behaviour discovery) behind one port:
/// it takes STUN messages only.
impl DatagramCore for Server {
    type Event = std::convert::Infallible;
    type Error = crate::Error;

    fn accepts(&self, _: SocketAddr, _: SocketAddr, bytes: &[u8]) -> bool {
        chorus_framing::classify(bytes) == chorus_framing::PacketKind::Stun
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), crate::Error> {
        self.handle_input(now, local, from, Transport::Udp, bytes)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        Self::poll_transmit(self)
    }

    fn poll_event(&mut self) -> Option<std::convert::Infallible> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now);
    }
}

/// Batching options.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchConfig {
    /// Datagrams per `recvmmsg`/`sendmmsg` call. Default 32; 1 to [`MAX_BATCH`].
    pub batch: usize,
    /// Receive buffer size per datagram, in bytes. Default 2048 (longer datagrams
    /// are dropped and counted in [`BatchStats::truncated`]); 64 to 65,535. Ignored
    /// with GRO on (each buffer then holds 65,535 bytes).
    pub max_datagram: usize,
    /// Batches read from one socket before responses are sent. Default 4; at least 1.
    pub rounds: usize,
    /// Send runs to one destination with UDP GSO when the kernel has it. Default true.
    pub gso: bool,
    /// `SO_RCVBUF` to ask for on each socket, in bytes (the kernel caps it at
    /// `net.core.rmem_max`); `None` keeps the system default (often 208 KiB, a few
    /// hundred small datagrams: a burst from many clients overflows it). Default 4 MiB.
    pub recv_buffer: Option<usize>,
    /// Accept GRO-coalesced datagrams (`UDP_GRO`) when the kernel has it. Default false:
    /// loopback traffic is never coalesced unless the sender uses GSO, and with GRO on
    /// every receive buffer is 64 KiB.
    pub gro: bool,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            max_datagram: 2048,
            rounds: 4,
            recv_buffer: Some(4 << 20),
            gso: true,
            gro: false,
        }
    }
}

/// Counters, for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchStats {
    /// Datagrams received (GRO segments counted one by one).
    pub received: u64,
    /// Receive system calls that returned data.
    pub recv_calls: u64,
    /// Datagrams sent (GSO segments counted one by one).
    pub sent: u64,
    /// Send system calls.
    pub send_calls: u64,
    /// Datagrams the kernel refused (unreachable, buffer full): dropped, as UDP does.
    pub send_errors: u64,
    /// Datagrams longer than [`BatchConfig::max_datagram`]: dropped unread.
    pub truncated: u64,
    /// Readiness checks: sockets asked whether they are readable (`poll_recv_ready`).
    /// One or two per socket that received something (the check that finds it
    /// readable, the one that registers its waker again), whatever the number of
    /// sockets in the set.
    pub readiness_polls: u64,
}

/// One queued outgoing datagram: a slice of the send buffer.
#[derive(Debug, Clone, Copy)]
struct Out {
    sock: usize,
    dst: SocketAddr,
    off: usize,
    len: usize,
}

/// Metadata of one received datagram, copied out of the `recvmmsg` results.
#[derive(Debug, Clone, Copy)]
struct Meta {
    from: Option<SocketAddr>,
    len: usize,
    stride: usize,
    truncated: bool,
}

const NO_META: Meta = Meta {
    from: None,
    len: 0,
    stride: 0,
    truncated: false,
};

/// Slots of sockets whose waker fired (or that must be asked again), in the order
/// they were queued, shared between a [`BatchSockets`] and its sockets' wakers.
#[derive(Debug, Default)]
struct ReadyQueue {
    inner: Mutex<Queued>,
}

#[derive(Debug, Default)]
struct Queued {
    /// FIFO of slots to ask.
    slots: Vec<usize>,
    /// By slot: whether it is in `slots` already (a slot is queued once).
    queued: Vec<bool>,
    /// The task waiting in [`BatchSockets::readable`], woken by the first push.
    task: Option<Waker>,
}

impl ReadyQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        // Nothing panics while the lock is held; a poisoned queue is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `slot` unless it is queued already; returns the waiting task's waker,
    /// for the caller to wake once the lock is released.
    fn push(&self, slot: usize) -> Option<Waker> {
        let mut q = self.lock();
        if q.queued.len() <= slot {
            q.queued.resize(slot + 1, false);
        }
        if let Some(flag) = q.queued.get_mut(slot)
            && !*flag
        {
            *flag = true;
            q.slots.push(slot);
        }
        q.task.take()
    }

    /// Moves the queued slots to the end of `out` and registers `task` to be woken by
    /// the next push.
    fn drain_into(&self, out: &mut Vec<usize>, task: &Waker) {
        let mut q = self.lock();
        let Queued {
            slots,
            queued,
            task: waiting,
        } = &mut *q;
        for &slot in slots.iter() {
            if let Some(flag) = queued.get_mut(slot) {
                *flag = false;
            }
        }
        out.append(slots);
        match waiting {
            Some(w) => w.clone_from(task),
            None => *waiting = Some(task.clone()),
        }
    }
}

/// The waker tokio's reactor holds for one socket: queues its slot, wakes the task.
#[derive(Debug)]
struct SocketWaker {
    slot: usize,
    queue: Arc<ReadyQueue>,
}

impl Wake for SocketWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(task) = self.queue.push(self.slot) {
            task.wake();
        }
    }
}

/// One socket of a [`BatchSockets`].
#[derive(Debug)]
struct Slot {
    local: SocketAddr,
    sock: UdpSocket,
    /// A [`SocketWaker`] for this slot, given to tokio by every readiness check.
    waker: Waker,
}

/// A set of UDP sockets read and written in batches. Owns its buffers; reuse one for
/// the life of the server.
///
/// Not `Send` (`nix`'s preallocated message headers hold raw pointers): run it on a
/// current-thread runtime or in a `LocalSet`, one per core, which is how a server is
/// meant to scale anyway.
#[derive(Debug)]
pub struct BatchSockets {
    config: BatchConfig,
    /// Sockets by slot; a removed socket leaves a hole that the next one added fills,
    /// so a slot (what wakers and queued transmits name) never changes while its
    /// socket is in the set.
    sockets: Vec<Option<Slot>>,
    /// Empty slots, reused first.
    free: Vec<usize>,
    /// Sockets in the set.
    live: usize,
    /// Local address to slot: a relay server has one socket per allocation, and every
    /// transmit names its socket.
    by_addr: HashMap<SocketAddr, usize>,
    /// `batch` receive buffers of `slot` bytes each, back to back.
    recv_buf: Vec<u8>,
    slot: usize,
    recv_headers: MultiHeaders<SockaddrStorage>,
    send_headers: MultiHeaders<SockaddrStorage>,
    send_buf: Vec<u8>,
    queue: Vec<Out>,
    /// Slots to ask for readiness: fed by the sockets' wakers and by `recv_ready`.
    wake_queue: Arc<ReadyQueue>,
    /// Slots taken from `wake_queue`, being asked (kept to reuse its allocation).
    asking: Vec<usize>,
    /// Slots found readable by the last [`BatchSockets::readable`], not read yet.
    ready: Vec<usize>,
    /// The slot the last datagram arrived on (the default source of a reply).
    last_local: usize,
    gso: bool,
    gro: bool,
    stats: BatchStats,
}

fn gro_cmsg_space() -> Vec<u8> {
    nix::cmsg_space!(i32)
}

impl BatchSockets {
    /// An empty set.
    ///
    /// # Errors
    /// [`DriverError::Io`] (`InvalidInput`) for a value outside its documented bounds.
    pub fn new(config: BatchConfig) -> Result<Self, DriverError> {
        if !(1..=MAX_BATCH).contains(&config.batch)
            || !(64..=MAX_UDP_PAYLOAD).contains(&config.max_datagram)
            || config.rounds == 0
        {
            return Err(DriverError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "batch config out of bounds",
            )));
        }
        let slot = if config.gro {
            MAX_UDP_PAYLOAD
        } else {
            config.max_datagram
        };
        let cmsg = config.gro.then(gro_cmsg_space);
        Ok(Self {
            recv_buf: vec![0; slot * config.batch],
            slot,
            recv_headers: MultiHeaders::preallocate(config.batch, cmsg),
            send_headers: MultiHeaders::preallocate(config.batch, None),
            send_buf: Vec::with_capacity(MAX_BATCH * 2048),
            queue: Vec::with_capacity(MAX_BATCH * 4),
            wake_queue: Arc::default(),
            asking: Vec::new(),
            ready: Vec::new(),
            last_local: 0,
            gso: config.gso,
            gro: config.gro,
            sockets: Vec::new(),
            free: Vec::new(),
            live: 0,
            by_addr: HashMap::new(),
            config,
            stats: BatchStats::default(),
        })
    }

    /// Adds a socket (non-blocking, as tokio's are) and returns its local address.
    /// GSO is kept only if this socket supports it; GRO is switched on if configured
    /// and supported.
    ///
    /// # Errors
    /// [`DriverError::Io`] if the socket has no local address.
    pub fn add(&mut self, sock: UdpSocket) -> Result<SocketAddr, DriverError> {
        let local = sock.local_addr()?;
        // Linux without UDP_SEGMENT (before 4.18) refuses the option.
        if self.gso && nix::sys::socket::getsockopt(&sock, sockopt::UdpGsoSegment).is_err() {
            self.gso = false;
        }
        if let Some(size) = self.config.recv_buffer {
            // Best effort: a smaller buffer only means more drops under bursts.
            let _ = setsockopt(&sock, sockopt::RcvBuf, &size);
        }
        if self.gro && setsockopt(&sock, sockopt::UdpGroSegment, &true).is_err() {
            self.gro = false;
        }
        let slot = self.free.pop().unwrap_or(self.sockets.len());
        let waker = Waker::from(Arc::new(SocketWaker {
            slot,
            queue: self.wake_queue.clone(),
        }));
        let entry = Some(Slot { local, sock, waker });
        match self.sockets.get_mut(slot) {
            Some(hole) => *hole = entry,
            None => self.sockets.push(entry),
        }
        self.by_addr.insert(local, slot);
        self.live += 1;
        // Asked once by the next `readable`, which registers its waker.
        self.enqueue(slot);
        Ok(local)
    }

    /// Puts `slot` in the readiness queue (the task is running: nothing to wake).
    fn enqueue(&self, slot: usize) {
        drop(self.wake_queue.push(slot));
    }

    /// Binds a UDP socket to `addr` and adds it ([`BatchSockets::add`]); returns its
    /// local address (the port chosen by the system if `addr`'s is 0). Must run inside
    /// a tokio runtime.
    ///
    /// # Errors
    /// [`DriverError::Io`] if the address cannot be bound.
    pub fn bind(&mut self, addr: SocketAddr) -> Result<SocketAddr, DriverError> {
        let std_sock = std::net::UdpSocket::bind(addr)?;
        std_sock.set_nonblocking(true)?;
        self.add(UdpSocket::from_std(std_sock)?)
    }

    /// Removes the socket bound to `local` (queued datagrams from it are dropped).
    pub fn remove(&mut self, local: SocketAddr) -> Option<UdpSocket> {
        let slot = self.by_addr.remove(&local)?;
        let removed = self.sockets.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.live -= 1;
        self.queue.retain(|o| o.sock != slot);
        // Its slot may still be queued or ready: asking or reading an empty slot is a
        // no-op, and one reused meanwhile is only asked once more than needed.
        self.ready.retain(|&r| r != slot);
        if self.last_local == slot {
            self.last_local = self.sockets.iter().position(Option::is_some).unwrap_or(0);
        }
        Some(removed.sock)
    }

    /// The local addresses, in slot order: the order added, except that a socket
    /// added after a removal takes the first free place.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.sockets.iter().flatten().map(|s| s.local)
    }

    /// Whether sends use UDP GSO.
    #[must_use]
    pub fn is_gso(&self) -> bool {
        self.gso
    }

    /// Whether receives accept GRO-coalesced datagrams.
    #[must_use]
    pub fn is_gro(&self) -> bool {
        self.gro
    }

    /// The counters so far.
    #[must_use]
    pub fn stats(&self) -> BatchStats {
        self.stats
    }

    /// Waits until at least one socket is readable and remembers which. Asks only the
    /// sockets whose waker fired since the last call, plus those read since (see the
    /// module docs): the cost is O(sockets that became readable), not O(sockets).
    ///
    /// # Errors
    /// [`DriverError::Closed`] when there is no socket; [`DriverError::Io`] if readiness
    /// polling fails.
    pub async fn readable(&mut self) -> Result<(), DriverError> {
        if self.live == 0 {
            return Err(DriverError::Closed);
        }
        if !self.ready.is_empty() {
            return Ok(());
        }
        poll_fn(|cx| self.poll_readable(cx)).await
    }

    /// One step of [`BatchSockets::readable`]: asks the queued slots, keeps the
    /// readable ones in `ready`; `Pending` (the task's waker registered with the
    /// queue) when none is.
    fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DriverError>> {
        let mut asking = std::mem::take(&mut self.asking);
        // The task's waker is registered before the queue is emptied, so a wake-up
        // that comes while the slots are asked is not lost.
        self.wake_queue.drain_into(&mut asking, cx.waker());
        let mut failed = None;
        for (k, &slot) in asking.iter().enumerate() {
            let Some(Some(s)) = self.sockets.get(slot) else {
                continue;
            };
            self.stats.readiness_polls += 1;
            // With the socket's own waker: if it is not readable, tokio keeps that
            // waker and the reactor queues this slot when it becomes readable. (When
            // tokio's per-poll budget is spent it answers `Pending` and wakes that
            // waker at once: the slot is queued again and the task polled again.)
            match s.sock.poll_recv_ready(&mut Context::from_waker(&s.waker)) {
                Poll::Ready(Ok(())) => self.ready.push(slot),
                Poll::Ready(Err(e)) => {
                    // The slots not asked yet stay queued.
                    for &rest in asking.iter().skip(k) {
                        self.enqueue(rest);
                    }
                    failed = Some(e);
                    break;
                }
                Poll::Pending => {}
            }
        }
        asking.clear();
        self.asking = asking;
        if let Some(e) = failed {
            return Poll::Ready(Err(DriverError::Io(e)));
        }
        if self.ready.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// Reads the sockets found readable by [`BatchSockets::readable`] (at most
    /// [`BatchConfig::rounds`] batches each) into `core`; returns the datagrams read.
    /// Each socket read is queued to be asked again by the next
    /// [`BatchSockets::readable`].
    ///
    /// # Errors
    /// [`DriverError::Io`] if a socket fails for a reason other than "would block" or a
    /// per-peer error (ICMP unreachable reported on the socket).
    pub fn recv_ready<C: DatagramCore>(&mut self, core: &mut C) -> Result<usize, DriverError> {
        let mut total = 0;
        let ready = std::mem::take(&mut self.ready);
        // Queued first, so that none is forgotten if a read fails: a drained socket
        // must be asked once to register its waker, one with data left is read again
        // after the sockets queued before it.
        for &slot in &ready {
            self.enqueue(slot);
        }
        for &slot in &ready {
            for _ in 0..self.config.rounds {
                let n = self.recv_batch(slot, core)?;
                total += n;
                if n < self.config.batch {
                    break;
                }
            }
        }
        self.ready = ready;
        self.ready.clear();
        Ok(total)
    }

    /// One `recvmmsg` on socket `i`; 0 when it would block. Fewer than a batch
    /// means the socket is drained, and its tokio readiness is cleared.
    fn recv_batch<C: DatagramCore>(
        &mut self,
        i: usize,
        core: &mut C,
    ) -> Result<usize, DriverError> {
        let Some(Some(Slot { local, sock, .. })) = self.sockets.get(i) else {
            return Ok(0);
        };
        let local = *local;
        let batch = self.config.batch;
        let mut meta = [NO_META; MAX_BATCH];
        if self.gro {
            // nix keeps the kernel's shortened msg_controllen between calls.
            self.recv_headers = MultiHeaders::preallocate(batch, Some(gro_cmsg_space()));
        }
        let (headers, buf, slot) = (&mut self.recv_headers, &mut self.recv_buf, self.slot);
        let mut got = 0;
        let result = sock.try_io(Interest::READABLE, || {
            let mut chunks = buf.chunks_mut(slot);
            let mut iovs: [[IoSliceMut<'_>; 1]; MAX_BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
            let results = recvmmsg(
                sock.as_raw_fd(),
                headers,
                iovs.iter_mut().take(batch),
                MsgFlags::MSG_DONTWAIT,
                None,
            )?;
            let mut n = 0;
            for (m, r) in meta.iter_mut().zip(results) {
                let mut stride = r.bytes;
                if let Ok(cmsgs) = r.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::UdpGroSegments(s) = c {
                            stride = usize::try_from(s).unwrap_or(r.bytes);
                        }
                    }
                }
                *m = Meta {
                    from: r.address.as_ref().and_then(to_std),
                    len: r.bytes,
                    stride,
                    truncated: r.flags.contains(MsgFlags::MSG_TRUNC),
                };
                n += 1;
            }
            got = n;
            // MSG_DONTWAIT: `recvmmsg` stopped early because the next receive would
            // block. Saying so makes tokio clear the readiness (unless a new event
            // came in meanwhile), which spares the empty read that would learn it.
            if n < batch {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            // ICMP errors for an earlier send surface here on Linux: not fatal.
            Err(e) if is_peer_error(&e) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        self.stats.recv_calls += 1;
        self.last_local = i;
        let now = now();
        for (m, chunk) in meta.iter().take(n).zip(self.recv_buf.chunks(slot)) {
            // Longer than a receive buffer: only a prefix arrived, which the core must
            // not mistake for a whole message.
            if m.truncated {
                self.stats.truncated += 1;
                continue;
            }
            let (Some(from), Some(data)) = (m.from, chunk.get(..m.len)) else {
                continue;
            };
            for seg in data.chunks(m.stride.max(1)) {
                self.stats.received += 1;
                // A rejected datagram is the core's to count; the driver goes on.
                let _ = core.handle_datagram(now, local, from, seg);
            }
        }
        Ok(n)
    }

    /// Drains `core`'s transmits and sends them all: GSO runs and `sendmmsg` batches.
    /// Returns the datagrams handed to the kernel.
    ///
    /// # Errors
    /// [`DriverError::Io`] if a socket fails for a reason other than a per-peer error
    /// (those datagrams are dropped and counted in [`BatchStats::send_errors`]).
    pub async fn flush<C: DatagramCore>(&mut self, core: &mut C) -> Result<usize, DriverError> {
        let mut sent = 0;
        loop {
            self.send_buf.clear();
            self.queue.clear();
            while self.queue.len() < MAX_BATCH * 4 {
                let Some(t) = core.poll_transmit() else { break };
                let sock = t
                    .src
                    .and_then(|s| self.by_addr.get(&s).copied())
                    .unwrap_or(self.last_local);
                let off = self.send_buf.len();
                self.send_buf.extend_from_slice(&t.payload);
                self.queue.push(Out {
                    sock,
                    dst: t.dst,
                    off,
                    len: t.payload.len(),
                });
            }
            if self.queue.is_empty() {
                return Ok(sent);
            }
            sent += self.send_queue().await?;
        }
    }

    async fn send_queue(&mut self) -> Result<usize, DriverError> {
        let mut sent = 0;
        let mut i = 0;
        while i < self.queue.len() {
            let run = self.gso_run(i);
            let n = if run >= 2 {
                self.send_gso(i, run).await?
            } else {
                let singles = self.singles(i);
                self.send_mmsg(i, singles).await?
            };
            // 0: GSO was just switched off; the same datagrams go again without it.
            sent += n;
            i += n;
        }
        Ok(sent)
    }

    /// How many datagrams from `i` on can leave as one GSO send: same socket and
    /// destination, all the size of the first except a shorter last one.
    fn gso_run(&self, i: usize) -> usize {
        let Some(first) = self.queue.get(i) else {
            return 0;
        };
        if !self.gso || first.len == 0 {
            return 1;
        }
        let mut n = 1;
        let mut total = first.len;
        for o in self.queue.iter().skip(i + 1) {
            if n == MAX_GSO_SEGMENTS
                || o.sock != first.sock
                || o.dst != first.dst
                || o.len > first.len
                || o.len == 0
                || total + o.len > MAX_UDP_PAYLOAD - 8
            {
                break;
            }
            n += 1;
            total += o.len;
            if o.len < first.len {
                break;
            }
        }
        n
    }

    /// How many datagrams from `i` on go in one `sendmmsg`: same socket, none starting
    /// a GSO run, at most a batch.
    fn singles(&self, i: usize) -> usize {
        let sock = self.queue.get(i).map(|o| o.sock);
        let mut n = 0;
        while n < self.config.batch
            && self.queue.get(i + n).map(|o| o.sock) == sock
            && (n == 0 || self.gso_run(i + n) < 2)
        {
            n += 1;
        }
        n.max(1)
    }

    async fn send_gso(&mut self, i: usize, run: usize) -> Result<usize, DriverError> {
        let Some(first) = self.queue.get(i).copied() else {
            return Ok(0);
        };
        let last = self
            .queue
            .get(i + run - 1)
            .map_or(first.off, |o| o.off + o.len);
        let seg = u16::try_from(first.len).unwrap_or(u16::MAX);
        let Some(Some(Slot { sock, .. })) = self.sockets.get(first.sock) else {
            return Ok(run);
        };
        let dst = SockaddrStorage::from(first.dst);
        let data = self.send_buf.get(first.off..last).unwrap_or(&[]);
        let result = send_with(sock, || {
            sendmsg(
                sock.as_raw_fd(),
                &[IoSlice::new(data)],
                &[ControlMessage::UdpGsoSegments(&seg)],
                MsgFlags::empty(),
                Some(&dst),
            )
            .map_err(io::Error::from)
        })
        .await;
        match result {
            Ok(_) => {
                self.stats.send_calls += 1;
                self.stats.sent += run as u64;
                Ok(run)
            }
            // EIO: the device cannot segment (no checksum offload); send unsegmented.
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => {
                self.gso = false;
                Ok(0)
            }
            Err(e) if is_peer_error(&e) => {
                self.stats.send_errors += run as u64;
                Ok(run)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn send_mmsg(&mut self, i: usize, count: usize) -> Result<usize, DriverError> {
        let Some(sock_index) = self.queue.get(i).map(|o| o.sock) else {
            return Ok(0);
        };
        let Some(Some(Slot { sock, .. })) = self.sockets.get(sock_index) else {
            return Ok(count);
        };
        if count == 1 {
            return self.send_one(i).await;
        }
        let mut addrs = [None::<SockaddrStorage>; MAX_BATCH];
        let mut outs = self.queue.iter().skip(i).take(count);
        let buf = &self.send_buf;
        let iovs: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|k| {
            let Some(o) = outs.next() else {
                return [IoSlice::new(&[])];
            };
            if let Some(a) = addrs.get_mut(k) {
                *a = Some(SockaddrStorage::from(o.dst));
            }
            [IoSlice::new(buf.get(o.off..o.off + o.len).unwrap_or(&[]))]
        });
        let headers = &mut self.send_headers;
        let result = send_with(sock, || {
            sendmmsg(
                sock.as_raw_fd(),
                headers,
                iovs.iter().take(count),
                addrs.get(..count).unwrap_or(&[]),
                [],
                MsgFlags::empty(),
            )
            .map(Iterator::count)
            .map_err(io::Error::from)
        })
        .await;
        match result {
            Ok(n) => {
                self.stats.send_calls += 1;
                self.stats.sent += n as u64;
                Ok(n.max(1))
            }
            // The first datagram of the batch was refused: drop it, send the rest.
            Err(e) if is_peer_error(&e) => {
                self.stats.send_errors += 1;
                Ok(1)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The datagram at `i` alone, with `sendto(2)`: under paced traffic (one datagram
    /// per wake-up) most sends are single, and `sendmmsg` would first fill arrays of
    /// [`MAX_BATCH`] message headers for one.
    async fn send_one(&mut self, i: usize) -> Result<usize, DriverError> {
        let Some(o) = self.queue.get(i).copied() else {
            return Ok(0);
        };
        let Some(Some(Slot { sock, .. })) = self.sockets.get(o.sock) else {
            return Ok(1);
        };
        let data = self.send_buf.get(o.off..o.off + o.len).unwrap_or(&[]);
        let dst = SockaddrStorage::from(o.dst);
        let result = send_with(sock, || {
            sendto(sock.as_raw_fd(), data, &dst, MsgFlags::empty()).map_err(io::Error::from)
        })
        .await;
        match result {
            Ok(_) => {
                self.stats.send_calls += 1;
                self.stats.sent += 1;
            }
            Err(e) if is_peer_error(&e) => self.stats.send_errors += 1,
            Err(e) => return Err(e.into()),
        }
        Ok(1)
    }
}

/// Runs `f` when `sock` is writable, retrying after "would block".
async fn send_with<T>(sock: &UdpSocket, mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match sock.try_io(Interest::WRITABLE, &mut f) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable().await?,
            other => return other,
        }
    }
}

/// Errors about one peer (reported by ICMP or refused by the kernel for that
/// destination) that must not stop a server.
fn is_peer_error(e: &io::Error) -> bool {
    use nix::libc;
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EACCES
                | libc::EPERM
                | libc::EMSGSIZE
                | libc::EINVAL
                | libc::ENOBUFS
                | libc::EAFNOSUPPORT
        )
    )
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// Serves `core` on `sockets` with batched I/O until a socket fails. Dropping the
/// future stops it. For a core without events; one with events runs on
/// [`serve_with`], which drains them.
///
/// # Errors
/// [`DriverError::Io`] if a socket fails, [`DriverError::Closed`] without sockets or
/// for a [`BatchConfig`] value out of bounds.
pub async fn run_batched<C: DatagramCore<Event = std::convert::Infallible>>(
    core: &mut C,
    sockets: Vec<UdpSocket>,
    config: BatchConfig,
) -> Result<(), DriverError> {
    let mut io = BatchSockets::new(config)?;
    for s in sockets {
        io.add(s)?;
    }
    serve(core, &mut io).await
}

/// [`run_batched`] on a [`BatchSockets`] the caller keeps (to read its
/// [`BatchSockets::stats`] afterwards, or to add sockets between calls).
///
/// # Errors
/// As [`run_batched`].
pub async fn serve<C: DatagramCore<Event = std::convert::Infallible>>(
    core: &mut C,
    io: &mut BatchSockets,
) -> Result<(), DriverError> {
    serve_with(core, io, |_, _| {}).await
}

/// [`serve`] with `between` called after every flush, before waiting for input: where
/// a driver performs what its core asks besides sending, such as a TURN server's
/// "open a relay socket on this address" ([`BatchSockets::bind`], then report back to
/// the core) or "close it" ([`BatchSockets::remove`]). Transmits queued by `between`
/// leave before the driver waits.
///
/// ```no_run
/// use chorus_nat::driver::batch::{BatchConfig, BatchSockets, serve_with};
/// use chorus_nat::server::{Server, ServerConfig};
///
/// # #[allow(dead_code)]
/// async fn run() -> Result<(), chorus_nat::driver::DriverError> {
///     let mut core = Server::new(ServerConfig::default()).expect("a valid configuration");
///     let mut io = BatchSockets::new(BatchConfig::default())?;
///     io.bind("127.0.0.1:3478".parse().expect("an address"))?;
///     serve_with(&mut core, &mut io, |_core, io| {
///         // A TURN driver: `while let Some(e) = core.poll_event()`, then `io.bind` a
///         // relay socket (and report the outcome to the core) or `io.remove` one.
///         let _ = io.stats();
///     })
///     .await
/// }
/// ```
///
/// # Errors
/// As [`run_batched`].
pub async fn serve_with<C: DatagramCore>(
    core: &mut C,
    io: &mut BatchSockets,
    mut between: impl FnMut(&mut C, &mut BatchSockets),
) -> Result<(), DriverError> {
    // One timer, moved only when the core's deadline changes: a new `Sleep` per
    // wake-up would register and deregister a timer for every datagram.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        io.flush(core).await?;
        between(core, io);
        io.flush(core).await?;
        let deadline = core.poll_timeout();
        if deadline.is_some_and(|t| t <= now()) {
            core.handle_timeout(now());
            continue;
        }
        if deadline != armed {
            if let Some(t) = deadline {
                timer.as_mut().reset(t.into());
            }
            armed = deadline;
        }
        tokio::select! {
            biased;
            r = io.readable() => r?,
            () = &mut timer, if armed.is_some() => {
                armed = None;
                core.handle_timeout(now());
                continue;
            }
        }
        io.recv_ready(core)?;
    }
}

#[cfg(test)]
mod tests;
