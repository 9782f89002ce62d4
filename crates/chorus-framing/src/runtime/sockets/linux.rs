//! The Linux system calls of the batched path: `recvmmsg(2)`, `sendmmsg(2)`, UDP GSO
//! (`UDP_SEGMENT`) and GRO (`UDP_GRO`), through `nix`'s safe wrappers.
//!
//! `nix`'s preallocated message headers hold raw pointers, so they are not `Send`; they
//! live in a thread-local cache instead of in [`super::Sockets`] (which thus stays
//! `Send` and can move between a multi-threaded runtime's workers). Every call below
//! borrows them only while it runs, without an `.await` in between, and allocates
//! nothing once a thread has its pair.

use std::cell::RefCell;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
    sendmmsg, sendmsg, setsockopt, sockopt,
};
use tokio::net::UdpSocket;

use super::{MAX_BATCH, Meta};

/// Receive headers without and with room for a GRO control message, one of each per
/// address family, and send headers: each for [`MAX_BATCH`] messages, built on a
/// thread's first use.
///
/// Per family because `recvmmsg` leaves each header's `msg_namelen` at the length of
/// the address it last received (16 bytes for IPv4) and `nix` does not reset it: an
/// IPv6 socket reading through headers an IPv4 socket used would get its senders'
/// addresses cut to 16 bytes. A socket receives addresses of its own family only
/// (IPv4-mapped ones on a dual-stack socket are IPv6 addresses), so each family's
/// headers keep the right length.
struct Headers {
    recv: [MultiHeaders<SockaddrStorage>; 2],
    recv_gro: [MultiHeaders<SockaddrStorage>; 2],
    send: MultiHeaders<SockaddrStorage>,
}

thread_local! {
    static HEADERS: RefCell<Option<Headers>> = const { RefCell::new(None) };
}

fn gro_cmsg_space() -> Vec<u8> {
    nix::cmsg_space!(i32)
}

/// Runs `f` with this thread's headers.
fn with_headers<T>(f: impl FnOnce(&mut Headers) -> T) -> T {
    HEADERS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let headers = slot.get_or_insert_with(|| Headers {
            recv: std::array::from_fn(|_| MultiHeaders::preallocate(MAX_BATCH, None)),
            recv_gro: std::array::from_fn(|_| {
                MultiHeaders::preallocate(MAX_BATCH, Some(gro_cmsg_space()))
            }),
            send: MultiHeaders::preallocate(MAX_BATCH, None),
        });
        f(headers)
    })
}

/// Whether the kernel has UDP GSO for `sock` (Linux 4.18+ has `UDP_SEGMENT`).
pub(super) fn has_gso(sock: &UdpSocket) -> bool {
    nix::sys::socket::getsockopt(sock, sockopt::UdpGsoSegment).is_ok()
}

/// Asks for a receive buffer of `size` bytes (best effort).
pub(super) fn set_recv_buffer(sock: &UdpSocket, size: usize) {
    let _ = setsockopt(sock, sockopt::RcvBuf, &size);
}

/// Turns on GRO; false if the kernel does not have it.
pub(super) fn set_gro(sock: &UdpSocket) -> bool {
    setsockopt(sock, sockopt::UdpGroSegment, &true).is_ok()
}

/// One `recvmmsg` with `MSG_DONTWAIT` into `batch` buffers of `slot` bytes each (the
/// chunks of `buf`), describing each datagram in `meta`; returns how many arrived.
/// `v6`: the socket is an IPv6 one.
#[allow(clippy::too_many_arguments)]
pub(super) fn recv_mmsg(
    sock: &UdpSocket,
    v6: bool,
    batch: usize,
    gro: bool,
    buf: &mut [u8],
    slot: usize,
    meta: &mut [Meta],
) -> io::Result<usize> {
    with_headers(|h| {
        let family = usize::from(v6);
        let headers = if gro {
            let headers = h.recv_gro.get_mut(family).ok_or(io::ErrorKind::Other)?;
            // nix keeps the kernel's shortened msg_controllen between calls.
            *headers = MultiHeaders::preallocate(MAX_BATCH, Some(gro_cmsg_space()));
            headers
        } else {
            h.recv.get_mut(family).ok_or(io::ErrorKind::Other)?
        };
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
        Ok(n)
    })
}

/// One `sendmsg` with `UDP_SEGMENT`: `data` leaves as datagrams of `seg` bytes (the
/// last may be shorter) to `dst`.
pub(super) fn send_gso(sock: &UdpSocket, data: &[u8], seg: u16, dst: SocketAddr) -> io::Result<()> {
    let dst = SockaddrStorage::from(dst);
    sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(data)],
        &[ControlMessage::UdpGsoSegments(&seg)],
        MsgFlags::empty(),
        Some(&dst),
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// One `sendmmsg` of `datagrams` (at most [`MAX_BATCH`]); returns how many the kernel
/// took.
pub(super) fn send_mmsg<'a>(
    sock: &UdpSocket,
    datagrams: impl Iterator<Item = (&'a [u8], SocketAddr)>,
) -> io::Result<usize> {
    let mut addrs = [None::<SockaddrStorage>; MAX_BATCH];
    let mut iovs: [[IoSlice<'_>; 1]; MAX_BATCH] = std::array::from_fn(|_| [IoSlice::new(&[])]);
    let mut count = 0;
    for ((data, dst), (iov, addr)) in datagrams.zip(iovs.iter_mut().zip(addrs.iter_mut())) {
        *iov = [IoSlice::new(data)];
        *addr = Some(SockaddrStorage::from(dst));
        count += 1;
    }
    with_headers(|h| {
        sendmmsg(
            sock.as_raw_fd(),
            &mut h.send,
            iovs.iter().take(count),
            addrs.get(..count).unwrap_or(&[]),
            [],
            MsgFlags::empty(),
        )
        .map(Iterator::count)
        .map_err(io::Error::from)
    })
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}
