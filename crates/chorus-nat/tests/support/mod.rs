//! Helpers shared by the integration tests that run external programs (coturn) or
//! need scratch space: every process is killed by a drop guard, every directory is
//! removed, and a missing program skips the test unless `CHORUS_REQUIRE_INTEROP=1`.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::UdpSocket as StdUdpSocket;
use std::path::{Path, PathBuf};
use std::process::Child;

/// Whether `binary` is on PATH; otherwise skip (or fail under CHORUS_REQUIRE_INTEROP=1,
/// see `chorus_testkit::skip`).
pub(crate) fn have(binary: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(binary).is_file()));
    if !found {
        chorus_testkit::skip(&format!(
            "`{binary}` not found (install the Debian package `coturn`; cargo xtask test does)"
        ));
    }
    found
}

/// A child process, killed and reaped when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("chorus-nat-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free for both UDP and TCP on `ip` right now, taken from 20000..32000.
///
/// A port the kernel hands out for a port-0 bind (32768..60999 on Linux) can be
/// handed again to another test's port-0 bind between this check and the server's
/// own bind; ports below that range are never handed out that way, and a per-process
/// counter keeps this binary's tests from picking the same one twice.
pub(crate) fn free_port(ip: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread concurrent test binaries apart by process id.
    let base = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n) % SPAN) as u16;
        let udp = StdUdpSocket::bind((ip, port));
        let tcp = std::net::TcpListener::bind((ip, port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{} on {ip}", LOW + SPAN);
}

/// Two UDP ports free on both 127.0.0.1 and 127.0.0.2 right now, for an RFC 5780
/// server that binds all four combinations (a port free on one IP may be taken on the
/// other).
pub(crate) fn free_rfc5780_ports() -> (u16, u16) {
    for _ in 0..100 {
        let (a, b) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
        let held: Vec<_> = ["127.0.0.1", "127.0.0.2"]
            .iter()
            .flat_map(|ip| [a, b].map(|p| StdUdpSocket::bind((*ip, p))))
            .collect();
        if a != b && held.iter().all(Result::is_ok) {
            return (a, b);
        }
    }
    panic!("no free RFC 5780 port pair on 127.0.0.1/127.0.0.2");
}

/// A server the test runs on its own thread and current-thread runtime while the test
/// itself blocks on child processes: `serve` binds, says so on `ready`, then serves.
/// Stopped (its future dropped) when [`ServerThread::stop`] is called or it is dropped.
pub(crate) struct ServerThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    pub(crate) fn spawn<F, Fut>(serve: F) -> Self
    where
        F: FnOnce(std::sync::mpsc::Sender<()>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        Self::spawn_with(serve).0
    }

    /// As [`ServerThread::spawn`], with a value sent on `ready` (the port the server
    /// bound, when it picks its own).
    pub(crate) fn spawn_with<R, F, Fut>(serve: F) -> (Self, R)
    where
        R: Send + 'static,
        F: FnOnce(std::sync::mpsc::Sender<R>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                tokio::select! {
                    () = serve(ready_tx) => {}
                    _ = stopped => {}
                }
            });
        });
        let value = ready_rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("server ready");
        let server = Self {
            stop: Some(stop),
            thread: Some(thread),
        };
        (server, value)
    }

    /// Stops the server and waits for its thread (a panic there fails the test).
    pub(crate) fn stop(mut self) {
        assert!(self.shutdown(), "the server thread panicked");
    }

    /// Whether the thread ended without a panic.
    fn shutdown(&mut self) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().is_none_or(|t| t.join().is_ok())
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        // During a test's own panic: do not panic again.
        let _ = self.shutdown();
    }
}
