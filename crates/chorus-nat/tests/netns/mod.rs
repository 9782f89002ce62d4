//! A small Internet in network namespaces, for NAT scenario tests (root only).
//!
//! ```text
//!   client ns C0 (10.1.0.2) ── router ns R0 (10.1.0.1 | 203.0.113.10, NAT) ─┐
//!   client ns C1 (10.2.0.2) ── router ns R1 (10.2.0.1 | 203.0.113.11, NAT) ─┤ br0 in
//!                                                                           │ "public" ns P:
//!                                                 server 203.0.113.1 and .2 ┘
//! ```
//!
//! Each router masquerades its clients with nftables and drops unsolicited packets to
//! itself from the outside, as a home router's firewall does; the NAT kind picks
//! Linux's port behaviour. The drop matters for hole punching: a peer's packet that
//! reaches the router before the client's own outgoing packet would otherwise leave a
//! conntrack entry that occupies the mapping, and the router would then give the
//! client's packet another port. Sockets are opened from a thread that has
//! entered the namespace (`setns`), and keep that namespace when handed to tokio, so
//! one test process drives every party. Namespaces are deleted when the world drops.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// How a router translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatKind {
    /// `masquerade`: Linux keeps the source port when it can, so the mapping is
    /// endpoint-independent; conntrack admits replies only from the exact peer, so
    /// filtering is address-and-port-dependent (a port-restricted cone).
    Masquerade,
    /// `masquerade fully-random`: a random port for every new 5-tuple, so the mapping
    /// depends on the destination (symmetric).
    Symmetric,
    /// Masquerade, and a firewall that forwards no UDP at all (TCP only).
    UdpBlocked,
}

/// Why the scenario tests cannot run here, if they cannot.
pub(crate) fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("not running as root (network namespaces need CAP_SYS_ADMIN)".into());
    }
    for (bin, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()));
        if !found {
            return Some(format!(
                "`{bin}` not found: install the Debian package `{package}`"
            ));
        }
    }
    None
}

/// Runs a command, panicking with its output if it fails.
fn run(cmd: &mut Command, stdin: Option<&str>) {
    use std::io::Write as _;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &str) {
    run(Command::new("ip").args(args.split_whitespace()), None);
}

fn in_ns(ns: &str, cmd: &str, stdin: Option<&str>) {
    run(
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd.split_whitespace()),
        stdin,
    );
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub(crate) struct Netns(pub(crate) String);

impl Netns {
    fn new(name: String) -> Self {
        ip(&format!("netns add {name}"));
        ip(&format!("-n {name} link set lo up"));
        Self(name)
    }

    /// Runs `f` on a thread inside this namespace: sockets it opens live here.
    pub(crate) fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    }

    /// Runs `f`'s future on a thread inside this namespace, on its own tokio runtime,
    /// until the returned task is dropped: for servers that bind sockets as they go
    /// (a TURN server's relay sockets must be in this namespace too).
    pub(crate) fn run<F, Fut>(&self, f: F) -> NsTask
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let path = format!("/run/netns/{}", self.0);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                tokio::select! {
                    () = f() => {}
                    _ = stopped => {}
                }
            });
        });
        NsTask {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A tokio UDP socket bound to `addr` inside this namespace.
    pub(crate) fn udp(&self, addr: SocketAddr) -> tokio::net::UdpSocket {
        let sock = self.enter(move || {
            let s = std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            s.set_nonblocking(true).unwrap();
            s
        });
        tokio::net::UdpSocket::from_std(sock).unwrap()
    }

    /// A tokio TCP connection from this namespace to `addr`.
    pub(crate) fn tcp_connect(&self, addr: SocketAddr) -> tokio::net::TcpStream {
        let s = self.enter(move || {
            let s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
            s.set_nonblocking(true).unwrap();
            s
        });
        tokio::net::TcpStream::from_std(s).unwrap()
    }

    /// A tokio TCP listener on `addr` inside this namespace.
    pub(crate) fn tcp_listener(&self, addr: SocketAddr) -> tokio::net::TcpListener {
        let l = self.enter(move || {
            let l = std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
            l.set_nonblocking(true).unwrap();
            l
        });
        tokio::net::TcpListener::from_std(l).unwrap()
    }

    /// Sets a sysctl inside this namespace.
    pub(crate) fn sysctl(&self, key_value: &str) {
        in_ns(&self.0, &format!("sysctl -qw {key_value}"), None);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A future running on a thread inside a namespace; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct NsTask {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for NsTask {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client behind its own NAT router.
#[derive(Debug)]
pub(crate) struct Site {
    /// The client's namespace.
    pub(crate) client: Netns,
    /// The router's namespace.
    pub(crate) router: Netns,
    /// The client's private address.
    pub(crate) client_ip: IpAddr,
    /// The router's public address.
    pub(crate) public_ip: IpAddr,
}

/// The public namespace with the server's two addresses, and the NATed sites.
#[derive(Debug)]
pub(crate) struct World {
    // Sites first: their veths go when the public namespace is deleted anyway.
    pub(crate) sites: Vec<Site>,
    /// The public namespace (the server lives here).
    pub(crate) public: Netns,
}

/// The server's primary and alternate IPs.
pub(crate) const SERVER_IPS: [&str; 2] = ["203.0.113.1", "203.0.113.2"];

static WORLDS: AtomicU32 = AtomicU32::new(0);

impl World {
    /// Builds the public namespace and one NATed site per entry of `nats`.
    pub(crate) fn new(nats: &[NatKind]) -> Self {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            WORLDS.fetch_add(1, Ordering::Relaxed)
        );
        let public = Netns::new(format!("chp-{tag}"));
        let p = public.0.clone();
        ip(&format!("-n {p} link add br0 type bridge"));
        ip(&format!("-n {p} link set br0 up"));
        for server_ip in SERVER_IPS {
            ip(&format!("-n {p} addr add {server_ip}/24 dev br0"));
        }
        let mut sites = Vec::new();
        for (i, nat) in nats.iter().enumerate() {
            let router = Netns::new(format!("chr{i}-{tag}"));
            let client = Netns::new(format!("chc{i}-{tag}"));
            let (r, c) = (router.0.clone(), client.0.clone());
            let public_ip = format!("203.0.113.{}", 10 + i);
            let lan = format!("10.{}.0", i + 1);
            ip(&format!(
                "-n {r} link add out type veth peer name r{i} netns {p}"
            ));
            ip(&format!("-n {p} link set r{i} master br0 up"));
            ip(&format!("-n {r} addr add {public_ip}/24 dev out"));
            ip(&format!("-n {r} link set out up"));
            ip(&format!(
                "-n {r} link add in type veth peer name eth0 netns {c}"
            ));
            ip(&format!("-n {r} addr add {lan}.1/24 dev in"));
            ip(&format!("-n {r} link set in up"));
            ip(&format!("-n {c} addr add {lan}.2/24 dev eth0"));
            ip(&format!("-n {c} link set eth0 up"));
            ip(&format!("-n {c} route add default via {lan}.1"));
            router.sysctl("net.ipv4.ip_forward=1");
            let flags = match nat {
                NatKind::Masquerade | NatKind::UdpBlocked => "",
                NatKind::Symmetric => " fully-random",
            };
            let forward = if *nat == NatKind::UdpBlocked {
                "table ip fw {\n chain forward {\n  type filter hook forward priority 0;\n  \
                 meta l4proto udp drop\n }\n}\n"
            } else {
                ""
            };
            in_ns(
                &r,
                "nft -f -",
                Some(&format!(
                    "table ip nat {{\n chain post {{\n  type nat hook postrouting priority 100;\n  \
                     oifname \"out\" masquerade{flags}\n }}\n}}\n\
                     table ip filter {{\n chain input {{\n  type filter hook input priority 0;\n  \
                     iifname \"out\" ct state new drop\n }}\n}}\n{forward}"
                )),
            );
            sites.push(Site {
                client,
                router,
                client_ip: format!("{lan}.2").parse().unwrap(),
                public_ip: public_ip.parse().unwrap(),
            });
        }
        Self { sites, public }
    }

    /// The server's primary address at `port`.
    pub(crate) fn server(port: u16) -> SocketAddr {
        SocketAddr::new(SERVER_IPS[0].parse().unwrap(), port)
    }
}
