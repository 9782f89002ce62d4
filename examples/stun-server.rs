//! A STUN server (RFC 8489) with RFC 5780 NAT behaviour discovery, over UDP and TCP.
//!
//! ```text
//! cargo run --release --example stun-server -- --bind 127.0.0.1:3478 --alt-ip 127.0.0.2 --alt-port 3479
//! ```
//!
//! With `--alt-ip` and `--alt-port` it listens on all four address/port combinations
//! and answers CHANGE-REQUEST; without them it is a plain Binding server. Any STUN
//! client (coturn's `turnutils_stunclient`, a browser's ICE agent) can use it.
//!
//! `--batched` serves UDP only, through the batched Linux driver
//! (`chorus_nat::driver::batch`: recvmmsg/sendmmsg, UDP GSO), on one thread: the
//! configuration `benches/compare-coturn.sh` measures.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use chorus::nat::driver::run_server;
use chorus::nat::server::{RateLimit, Server, ServerConfig};
use tokio::net::{TcpListener, UdpSocket};

const HELP: &str = "\
stun-server: a STUN server (RFC 8489) with RFC 5780 NAT behaviour discovery

USAGE:
    stun-server [--bind ADDR:PORT] [--alt-ip IP --alt-port PORT] [OPTIONS]

OPTIONS:
    --bind ADDR:PORT     primary address (default 127.0.0.1:3478)
    --alt-ip IP          alternate IP address (RFC 5780; needs --alt-port)
    --alt-port PORT      alternate port (RFC 5780; needs --alt-ip)
    --software TEXT      SOFTWARE attribute to put in responses (default none)
    --mapped-address     also send MAPPED-ADDRESS, for RFC 3489 clients
    --rate N             requests per second per source IP (default 50; 0 = unlimited)
    --burst N            burst per source IP (default 100)
    --no-tcp             do not listen on TCP
    --batched            UDP only, batched I/O (recvmmsg/sendmmsg, UDP GSO; Linux)
    --batch N            with --batched: datagrams per system call (default 32)
    --no-gso             with --batched: no UDP GSO
    -h, --help           print this help
";

/// The `--batched` options.
#[derive(Debug, Clone, Copy)]
struct Batched {
    on: bool,
    batch: usize,
    gso: bool,
}

fn parse() -> Result<Option<(ServerConfig, bool, Batched)>, String> {
    let mut config = ServerConfig::default();
    config.primary = SocketAddr::from(([127, 0, 0, 1], 3478));
    let mut rate = RateLimit::default();
    let mut unlimited = false;
    let mut tcp = true;
    let mut batched = Batched {
        on: false,
        batch: 32,
        gso: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--bind" => {
                config.primary = value("--bind")?
                    .parse()
                    .map_err(|e| format!("--bind: {e}"))?
            }
            "--alt-ip" => {
                config.alternate_ip = Some(
                    value("--alt-ip")?
                        .parse::<IpAddr>()
                        .map_err(|e| format!("--alt-ip: {e}"))?,
                );
            }
            "--alt-port" => {
                config.alternate_port = Some(
                    value("--alt-port")?
                        .parse()
                        .map_err(|e| format!("--alt-port: {e}"))?,
                );
            }
            "--software" => config.software = Some(value("--software")?),
            "--mapped-address" => config.mapped_address = true,
            "--rate" => {
                rate.per_second = value("--rate")?
                    .parse()
                    .map_err(|e| format!("--rate: {e}"))?;
                unlimited = rate.per_second == 0;
            }
            "--burst" => {
                rate.burst = value("--burst")?
                    .parse()
                    .map_err(|e| format!("--burst: {e}"))?
            }
            "--no-tcp" => tcp = false,
            "--batched" => batched.on = true,
            "--batch" => {
                batched.batch = value("--batch")?
                    .parse()
                    .map_err(|e| format!("--batch: {e}"))?
            }
            "--no-gso" => batched.gso = false,
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    config.rate_limit = (!unlimited).then_some(rate);
    Ok(Some((config, tcp && !batched.on, batched)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (config, tcp, batched) = match parse() {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("stun-server: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::new(config.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stun-server: {e}");
            return ExitCode::from(2);
        }
    };
    let mut udp = Vec::new();
    for addr in server.addresses() {
        match UdpSocket::bind(addr).await {
            Ok(s) => udp.push(s),
            Err(e) => {
                eprintln!("stun-server: cannot bind UDP {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut listeners = Vec::new();
    if tcp {
        match TcpListener::bind(config.primary).await {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("stun-server: cannot bind TCP {}: {e}", config.primary);
                return ExitCode::FAILURE;
            }
        }
    }
    let addrs: Vec<String> = server.addresses().iter().map(ToString::to_string).collect();
    println!(
        "stun-server: UDP on {}{}; RFC 5780 {}",
        addrs.join(", "),
        if tcp {
            format!(", TCP on {}", config.primary)
        } else {
            String::new()
        },
        if server.is_rfc5780() { "on" } else { "off" }
    );
    if batched.on {
        return run_batched_server(server, udp, batched).await;
    }
    match run_server(server, udp, listeners).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stun-server: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(target_os = "linux")]
async fn run_batched_server(mut server: Server, udp: Vec<UdpSocket>, b: Batched) -> ExitCode {
    use chorus::runtime::{Runtime, SocketConfig, Sockets};
    let mut config = SocketConfig::default();
    config.batch = b.batch;
    config.gso = b.gso;
    let serve = async {
        let mut sockets = Sockets::new(config)?;
        for sock in udp {
            sockets.add(sock)?;
        }
        Runtime::new(&mut server, sockets).run().await
    };
    match serve.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stun-server: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn run_batched_server(_: Server, _: Vec<UdpSocket>, _: Batched) -> ExitCode {
    eprintln!("stun-server: --batched needs Linux");
    ExitCode::from(2)
}
