//! A batched UDP driver for sans-IO datagram servers (Linux): many datagrams per
//! system call, no heap allocation per datagram.
//!
//! A relay or STUN server on Linux spends most of its time in the kernel: every
//! datagram costs a system call entry, the UDP/IP stack and a copy, while the protocol
//! work is a few hundred nanoseconds (`docs/performance.md`). This driver cuts the
//! per-datagram kernel work:
//!
//! - **receive**: `recvmmsg(2)` fills up to [`SocketConfig::batch`] buffers per call;
//!   with [`SocketConfig::gro`] the socket also accepts coalesced datagrams (`UDP_GRO`,
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
//!   set and wakes the driver task; [`Sockets::readable`] asks only the queued
//!   sockets (`poll_recv_ready` with the socket's waker, which registers it again when
//!   the socket is not readable), and every socket that was read goes back in the
//!   queue: a drained socket so its waker is registered again, a socket that still has
//!   data (it used up [`SocketConfig::rounds`]) to be read again after the others,
//!   round-robin, so no socket starves. A relay server with a socket per allocation
//!   and paced traffic (one datagram per wake-up) thus pays for one socket per
//!   datagram, not for all of them; a socket with many datagrams is still read with
//!   `recvmmsg` in batches. A transmit finds its socket by a map from local address.
//! - **no empty read after a short batch**: `recvmmsg` with `MSG_DONTWAIT` stops
//!   early only when the next receive would block, so a batch shorter than
//!   [`SocketConfig::batch`] clears the socket's tokio readiness (the closure given to
//!   `try_io` reports "would block" after keeping the datagrams) instead of paying a
//!   second system call to learn it. tokio clears readiness only if no new readiness
//!   event arrived since the read began (its tick), and epoll reports every later
//!   datagram as a new event, so none is missed.
//! - `SO_RCVBUF` of 4 MiB per socket by default ([`SocketConfig::recv_buffer`]).
//!
//! The protocol stays in the core: anything implementing [`DatagramCore`] runs on a
//! [`Runtime`](crate::runtime::Runtime) over a [`Sockets`] set, which may change while it runs
//! (a TURN server binding relay sockets with [`Sockets::bind`] when its core asks).
//!
//! - **the portable path** ([`SocketConfig::batched`] off, and every system but
//!   Linux): the same bookkeeping, one `recvfrom`/`sendto` per datagram.
//!
//! The run loop of [`Runtime::run`](crate::runtime::Runtime::run):
//! 1. Drain [`DatagramCore::poll_transmit`] and send everything ([`Sockets::flush`]).
//! 2. Wait until a socket is readable or [`DatagramCore::poll_timeout`] is due (one
//!    timer, moved only when the deadline changes).
//! 3. Read every readable socket in batches until it would block (at most
//!    [`SocketConfig::rounds`] batches per socket before going back to step 1, so
//!    responses are not starved) and give each datagram to
//!    [`DatagramCore::handle_datagram`].
//!
//! The readiness bookkeeping, per socket slot: a slot is *queued* (its waker fired, or
//! it was just added or read: [`Sockets::readable`] asks it next), *ready* (it
//! said readable: [`Sockets::recv_ready`] reads it, then queues it again) or
//! *armed* (it said "not readable", which left its waker with tokio's reactor). A slot
//! is queued at most once at a time.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use crate::{DatagramCore, Redacted};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::runtime::{DriverError, is_peer_error, now};

#[cfg(target_os = "linux")]
mod linux;

/// Most datagrams per `recvmmsg`/`sendmmsg` call (and the largest allowed
/// [`SocketConfig::batch`]).
pub const MAX_BATCH: usize = 64;

/// Most segments in one UDP GSO send (the kernel's `UDP_MAX_SEGMENTS`).
const MAX_GSO_SEGMENTS: usize = 64;

/// Largest UDP payload: the size of one receive buffer when GRO is on.
const MAX_UDP_PAYLOAD: usize = 65_535;

/// Batching options.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketConfig {
    /// Datagrams per `recvmmsg`/`sendmmsg` call. Default 32; 1 to [`MAX_BATCH`].
    pub batch: usize,
    /// Receive buffer size per datagram, in bytes. Default 2048 (longer datagrams
    /// are dropped and counted in [`SocketStats::truncated`]); 64 to 65,535. Ignored
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
    /// Batched system calls (`recvmmsg`/`sendmmsg`, GSO, GRO). Default true on Linux,
    /// where they exist; false uses the portable path, one `recvfrom`/`sendto` per
    /// datagram (what every other system gets, whatever this says).
    pub batched: bool,
}

impl SocketConfig {
    /// For an endpoint that exchanges a few datagrams at a time (a STUN client, a call
    /// leg, a bootstrap): batches of 8, and the socket's receive buffer left as the
    /// system set it (the socket may be the caller's).
    #[must_use]
    pub fn endpoint() -> Self {
        Self {
            batch: 8,
            recv_buffer: None,
            ..Self::default()
        }
    }
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            batch: 32,
            max_datagram: 2048,
            rounds: 4,
            recv_buffer: Some(4 << 20),
            gso: true,
            gro: false,
            batched: cfg!(target_os = "linux"),
        }
    }
}

/// Counters, for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStats {
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
    /// Datagrams longer than [`SocketConfig::max_datagram`]: dropped unread.
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
/// they were queued, shared between a [`Sockets`] and its sockets' wakers.
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
    /// The task waiting in [`Sockets::readable`], woken by the first push.
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

/// One socket of a [`Sockets`].
#[derive(Debug)]
struct Slot<S> {
    local: SocketAddr,
    sock: S,
    /// A [`SocketWaker`] for this slot, given to tokio by every readiness check.
    waker: Waker,
}

/// A set of UDP sockets read and written in batches. Owns its buffers; reuse one for
/// the life of the server.
///
/// `S` is how the set holds a socket: owned (`UdpSocket`, the default) or borrowed
/// (`&UdpSocket`, for a caller that keeps its socket after the run).
#[derive(Debug)]
pub struct Sockets<S = UdpSocket> {
    config: SocketConfig,
    /// Sockets by slot; a removed socket leaves a hole that the next one added fills,
    /// so a slot (what wakers and queued transmits name) never changes while its
    /// socket is in the set.
    sockets: Vec<Option<Slot<S>>>,
    /// Empty slots, reused first.
    free: Vec<usize>,
    /// Sockets in the set.
    live: usize,
    /// Local address to slot: a relay server has one socket per allocation, and every
    /// transmit names its socket.
    by_addr: HashMap<SocketAddr, usize>,
    /// `batch` receive buffers of `chunk` bytes each, back to back.
    recv_buf: Vec<u8>,
    /// `slot` (the longest datagram accepted) on the batched path, one more on the
    /// portable one, to tell a datagram that was cut.
    chunk: usize,
    send_buf: Vec<u8>,
    queue: Vec<Out>,
    /// Slots to ask for readiness: fed by the sockets' wakers and by `recv_ready`.
    wake_queue: Arc<ReadyQueue>,
    /// Slots taken from `wake_queue`, being asked (kept to reuse its allocation).
    asking: Vec<usize>,
    /// Slots found readable by the last [`Sockets::readable`], not read yet.
    ready: Vec<usize>,
    /// The slot the last datagram arrived on (the default source of a reply).
    last_local: usize,
    gso: bool,
    gro: bool,
    batched: bool,
    stats: SocketStats,
}

impl Sockets<UdpSocket> {
    /// Binds a UDP socket to `addr` and adds it ([`Sockets::add`]); returns its
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
}

impl<S: Borrow<UdpSocket>> Sockets<S> {
    /// An empty set.
    ///
    /// # Errors
    /// [`DriverError::Io`] (`InvalidInput`) for a value outside its documented bounds.
    pub fn new(config: SocketConfig) -> Result<Self, DriverError> {
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
        let batched = config.batched && cfg!(target_os = "linux");
        let chunk = if batched { slot } else { slot + 1 };
        Ok(Self {
            recv_buf: vec![0; chunk * config.batch],
            chunk,
            send_buf: Vec::with_capacity(MAX_BATCH * 2048),
            queue: Vec::with_capacity(MAX_BATCH * 4),
            wake_queue: Arc::default(),
            asking: Vec::new(),
            ready: Vec::new(),
            last_local: 0,
            gso: config.gso && batched,
            gro: config.gro && batched,
            batched,
            sockets: Vec::new(),
            free: Vec::new(),
            live: 0,
            by_addr: HashMap::new(),
            config,
            stats: SocketStats::default(),
        })
    }

    /// Adds a socket (non-blocking, as tokio's are) and returns its local address.
    /// GSO is kept only if this socket supports it; GRO is switched on if configured
    /// and supported.
    ///
    /// # Errors
    /// [`DriverError::Io`] if the socket has no local address.
    pub fn add(&mut self, sock: S) -> Result<SocketAddr, DriverError> {
        let local = sock.borrow().local_addr()?;
        #[cfg(target_os = "linux")]
        {
            let s = sock.borrow();
            // Linux without UDP_SEGMENT (before 4.18) refuses the option.
            if self.gso && !linux::has_gso(s) {
                self.gso = false;
            }
            if let Some(size) = self.config.recv_buffer {
                // Best effort: a smaller buffer only means more drops under bursts.
                linux::set_recv_buffer(s, size);
            }
            if self.gro && !linux::set_gro(s) {
                self.gro = false;
            }
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
        tracing::debug!(local = %Redacted(local), sockets = self.live, "socket added");
        Ok(local)
    }

    /// Puts `slot` in the readiness queue (the task is running: nothing to wake).
    fn enqueue(&self, slot: usize) {
        drop(self.wake_queue.push(slot));
    }

    /// Removes the socket bound to `local` (queued datagrams from it are dropped).
    pub fn remove(&mut self, local: SocketAddr) -> Option<S> {
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
        tracing::debug!(local = %Redacted(local), sockets = self.live, "socket removed");
        Some(removed.sock)
    }

    /// The local addresses, in slot order: the order added, except that a socket
    /// added after a removal takes the first free place.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.sockets.iter().flatten().map(|s| s.local)
    }

    /// How many sockets the set holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether the set holds no socket.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live == 0
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
    pub fn stats(&self) -> SocketStats {
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

    /// One step of [`Sockets::readable`]: asks the queued slots, keeps the
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
            match s
                .sock
                .borrow()
                .poll_recv_ready(&mut Context::from_waker(&s.waker))
            {
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

    /// Reads the sockets found readable by [`Sockets::readable`] (at most
    /// [`SocketConfig::rounds`] batches each) into `core`; returns the datagrams read.
    /// Each socket read is queued to be asked again by the next
    /// [`Sockets::readable`].
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

    /// One batch from socket `i` (`recvmmsg`, or `recvfrom` on the portable path); 0
    /// when it would block. Fewer than a batch means the socket is drained, and its
    /// tokio readiness is cleared.
    fn recv_batch<C: DatagramCore>(
        &mut self,
        i: usize,
        core: &mut C,
    ) -> Result<usize, DriverError> {
        let Some(Some(Slot { local, sock, .. })) = self.sockets.get(i) else {
            return Ok(0);
        };
        let (local, sock) = (*local, sock.borrow());
        let batch = self.config.batch;
        let mut meta = [NO_META; MAX_BATCH];
        let (chunk, buf) = (self.chunk, &mut self.recv_buf);
        let mut got = 0;
        let result = if self.batched {
            #[cfg(target_os = "linux")]
            let gro = self.gro;
            sock.try_io(Interest::READABLE, || {
                #[cfg(target_os = "linux")]
                let n = linux::recv_mmsg(sock, local.is_ipv6(), batch, gro, buf, chunk, &mut meta)?;
                #[cfg(not(target_os = "linux"))]
                let n = 0;
                got = n;
                // MSG_DONTWAIT: `recvmmsg` stopped early because the next receive would
                // block. Saying so makes tokio clear the readiness (unless a new event
                // came in meanwhile), which spares the empty read that would learn it.
                if n < batch {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            })
        } else {
            recv_each(sock, batch, buf, chunk, &mut meta)
        };
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            // ICMP errors for an earlier send surface here: not fatal.
            Err(e) if is_peer_error(&e) => return Ok(0),
            Err(e) => {
                tracing::warn!(local = %Redacted(local), error = %e, "receive failed");
                return Err(e.into());
            }
        };
        // The portable path made one call per datagram.
        self.stats.recv_calls += if self.batched { 1 } else { n as u64 };
        self.last_local = i;
        let now = now();
        for (m, chunk) in meta.iter().take(n).zip(self.recv_buf.chunks(self.chunk)) {
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
                if let Err(e) = core.handle_datagram(now, local, from, seg) {
                    tracing::trace!(from = %Redacted(from), error = %e, "datagram rejected");
                }
            }
        }
        Ok(n)
    }

    /// Drains `core`'s transmits and sends them all: GSO runs and `sendmmsg` batches.
    /// Returns the datagrams handed to the kernel.
    ///
    /// # Errors
    /// [`DriverError::Io`] if a socket fails for a reason other than a per-peer error
    /// (those datagrams are dropped and counted in [`SocketStats::send_errors`]).
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
        let Some(Some(Slot { sock, .. })) = self.sockets.get(first.sock) else {
            return Ok(run);
        };
        let sock = sock.borrow();
        let data = self.send_buf.get(first.off..last).unwrap_or(&[]);
        #[cfg(target_os = "linux")]
        let result = {
            let seg = u16::try_from(first.len).unwrap_or(u16::MAX);
            send_with(sock, || linux::send_gso(sock, data, seg, first.dst)).await
        };
        #[cfg(not(target_os = "linux"))]
        let result: io::Result<()> = {
            let _ = (sock, data);
            Err(io::ErrorKind::Unsupported.into())
        };
        match result {
            Ok(()) => {
                self.stats.send_calls += 1;
                self.stats.sent += run as u64;
                Ok(run)
            }
            // EIO: the device cannot segment (no checksum offload); send unsegmented.
            Err(e) if e.raw_os_error() == Some(EIO) || e.kind() == io::ErrorKind::Unsupported => {
                self.gso = false;
                Ok(0)
            }
            Err(e) if is_peer_error(&e) => {
                tracing::debug!(to = %Redacted(first.dst), error = %e, "datagrams dropped");
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
        if count == 1 || !self.batched {
            return self.send_one(i).await;
        }
        let sock = sock.borrow();
        let (queue, buf) = (&self.queue, &self.send_buf);
        let datagrams = || {
            queue
                .iter()
                .skip(i)
                .take(count)
                .map(|o| (buf.get(o.off..o.off + o.len).unwrap_or(&[]), o.dst))
        };
        #[cfg(target_os = "linux")]
        let result = send_with(sock, || linux::send_mmsg(sock, datagrams())).await;
        #[cfg(not(target_os = "linux"))]
        let result: io::Result<usize> = {
            let _ = (sock, datagrams);
            Err(io::ErrorKind::Unsupported.into())
        };
        match result {
            Ok(n) => {
                self.stats.send_calls += 1;
                self.stats.sent += n as u64;
                Ok(n.max(1))
            }
            // The first datagram of the batch was refused: drop it, send the rest.
            Err(e) if is_peer_error(&e) => {
                let to = queue.get(i).map(|o| o.dst);
                tracing::debug!(to = ?to.map(Redacted), error = %e, "datagram dropped");
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
        let sock = sock.borrow();
        let data = self.send_buf.get(o.off..o.off + o.len).unwrap_or(&[]);
        match sock.send_to(data, o.dst).await {
            Ok(_) => {
                self.stats.send_calls += 1;
                self.stats.sent += 1;
            }
            Err(e) if is_peer_error(&e) => {
                tracing::debug!(to = %Redacted(o.dst), error = %e, "datagram dropped");
                self.stats.send_errors += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "send failed");
                return Err(e.into());
            }
        }
        Ok(1)
    }
}

/// `EIO`, which a GSO send returns when the device cannot segment.
const EIO: i32 = 5;

/// The portable path's batch: up to `batch` `recvfrom` calls into the `chunk`-byte
/// pieces of `buf`, until one would block. A chunk is one byte longer than the longest
/// datagram accepted, so a datagram that filled it was cut.
fn recv_each(
    sock: &UdpSocket,
    batch: usize,
    buf: &mut [u8],
    chunk: usize,
    meta: &mut [Meta],
) -> io::Result<usize> {
    let mut n = 0;
    for (piece, m) in buf.chunks_mut(chunk).take(batch).zip(meta.iter_mut()) {
        match sock.try_recv_from(piece) {
            Ok((len, from)) => {
                *m = Meta {
                    from: Some(from),
                    len,
                    stride: len,
                    truncated: len >= chunk,
                };
                n += 1;
            }
            // What was read goes to the core first; a real error shows again next time.
            Err(_) if n > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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

#[cfg(all(test, target_os = "linux"))]
mod tests;
