//! A TURN relay server (RFC 8656) with long-term credentials, over UDP and TCP.
//!
//! ```text
//! cargo run --release --example turn-server -- --bind 127.0.0.1:3478 --realm example.org \
//!     --user alice:secret --allow-loopback-peers
//! ```
//!
//! Any TURN client (coturn's `turnutils_uclient`, a browser's ICE agent) can allocate
//! relayed addresses on it: as a drop-in server it accepts the channel numbers of RFC
//! 5766 (0x4000-0x7FFF), which those clients pick from, unless `--strict-channels`
//! narrows them to RFC 8656's 0x4000-0x4FFF. Relayed addresses are taken from `--relay-ip` (by default
//! the `--bind` address) and the port range `--relay-ports`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use chorus::crypto::SystemEntropy;
use chorus::nat::driver::turn_server;
use chorus::nat::server::RateLimit;
use chorus::nat::turn::server::{Cidr, StaticUsers};
use chorus::nat::{TurnConfig, TurnServer};
use tokio::net::{TcpListener, UdpSocket};

const HELP: &str = "\
turn-server: a TURN relay server (RFC 8656) with long-term credentials

USAGE:
    turn-server [--bind ADDR:PORT] [--realm REALM] --user NAME:PASSWORD [OPTIONS]

OPTIONS:
    --bind ADDR:PORT       listening address, UDP and TCP (default 127.0.0.1:3478)
    --realm REALM          authentication realm (default chorus)
    --user NAME:PASSWORD   a user allowed to allocate; repeatable
    --relay-ip IP          IP address for relayed addresses, one per family;
                           repeatable (default: the --bind address)
    --relay-ports LO-HI    relay port range (default 49152-65535)
    --allow-loopback-peers allow peers on 127.0.0.0/8 and ::1 (for tests)
    --allow-peer CIDR      allow peers in this special-purpose prefix; repeatable
    --strict-channels      accept only RFC 8656's channel numbers 0x4000-0x4FFF (by
                           default also RFC 5766's up to 0x7FFF, which coturn's and
                           browsers' clients pick from)
    --max-allocations N    allocations at most (default 1000)
    --user-quota N         allocations per user at most (default 10)
    --max-lifetime SECS    longest allocation lifetime (default 3600)
    --rate N               unauthenticated requests per second per IP (default 50;
                           0 = unlimited)
    --software TEXT        SOFTWARE attribute to put in responses (default none)
    --no-tcp               do not listen on TCP
    --batched              UDP only, through the batched driver (recvmmsg/sendmmsg,
                           UDP GSO; Linux): the fast path; implies --no-tcp
    --batch N              with --batched: datagrams per system call (default 32)
    --gro                  with --batched: accept GRO-coalesced datagrams
    -h, --help             print this help
";

struct Options {
    bind: SocketAddr,
    config: TurnConfig,
    users: Vec<(String, String)>,
    tcp: bool,
    batched: bool,
    batch: usize,
    gro: bool,
}

fn parse() -> Result<Option<Options>, String> {
    let mut config = TurnConfig::default();
    // A drop-in server: RFC 5766 clients (coturn's, libwebrtc's) pick channel numbers
    // up to 0x7FFF.
    config.rfc5766_channels = true;
    let mut bind = SocketAddr::from(([127, 0, 0, 1], 3478));
    let mut users = Vec::new();
    let mut relay_ips: Vec<IpAddr> = Vec::new();
    let mut tcp = true;
    let mut batched = false;
    let (mut batch, mut gro) = (32, false);
    let mut rate = RateLimit::default();
    let mut unlimited = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let num = |name: &str, v: String| v.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--bind" => {
                bind = value("--bind")?
                    .parse()
                    .map_err(|e| format!("--bind: {e}"))?;
            }
            "--realm" => config.realm = value("--realm")?,
            "--user" => {
                let v = value("--user")?;
                let (name, password) = v
                    .split_once(':')
                    .ok_or("--user takes NAME:PASSWORD".to_string())?;
                users.push((name.to_string(), password.to_string()));
            }
            "--relay-ip" => relay_ips.push(
                value("--relay-ip")?
                    .parse()
                    .map_err(|e| format!("--relay-ip: {e}"))?,
            ),
            "--relay-ports" => {
                let v = value("--relay-ports")?;
                let (lo, hi) = v
                    .split_once('-')
                    .ok_or("--relay-ports takes LO-HI".to_string())?;
                let lo: u16 = lo.parse().map_err(|e| format!("--relay-ports: {e}"))?;
                let hi: u16 = hi.parse().map_err(|e| format!("--relay-ports: {e}"))?;
                config.relay_ports = lo..=hi;
            }
            "--allow-loopback-peers" => config.allow_loopback_peers = true,
            "--strict-channels" => config.rfc5766_channels = false,
            "--allow-peer" => config.allowed_peers.push(
                value("--allow-peer")?
                    .parse::<Cidr>()
                    .map_err(|e| format!("--allow-peer: {e}"))?,
            ),
            "--max-allocations" => {
                config.max_allocations = num(&arg, value(&arg)?)? as usize;
            }
            "--user-quota" => config.max_allocations_per_user = num(&arg, value(&arg)?)? as usize,
            "--max-lifetime" => {
                config.max_lifetime = std::time::Duration::from_secs(num(&arg, value(&arg)?)?);
            }
            "--rate" => {
                rate.per_second = num(&arg, value(&arg)?)? as u32;
                unlimited = rate.per_second == 0;
            }
            "--software" => config.software = Some(value("--software")?),
            "--no-tcp" => tcp = false,
            "--batch" => batch = num(&arg, value(&arg)?)? as usize,
            "--gro" => gro = true,
            "--batched" => {
                batched = true;
                tcp = false;
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    if users.is_empty() {
        return Err("at least one --user NAME:PASSWORD is needed (try --help)".into());
    }
    if relay_ips.is_empty() {
        if bind.ip().is_unspecified() {
            return Err("--relay-ip is needed when --bind is an unspecified address".into());
        }
        relay_ips.push(bind.ip());
    }
    config.relay_ips = relay_ips;
    config.server_addresses = vec![bind];
    config.rate_limit = (!unlimited).then_some(rate);
    Ok(Some(Options {
        bind,
        config,
        users,
        tcp,
        batched,
        batch,
        gro,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let options = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("turn-server: {e}");
            return ExitCode::from(2);
        }
    };
    let mut users = StaticUsers::new(&options.config.realm);
    for (name, password) in &options.users {
        users.add(name, password);
    }
    let relay_ips: Vec<String> = options
        .config
        .relay_ips
        .iter()
        .map(ToString::to_string)
        .collect();
    let realm = options.config.realm.clone();
    let core = match TurnServer::new(
        options.config,
        Box::new(users),
        Box::new(SystemEntropy::new()),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("turn-server: {e}");
            return ExitCode::from(2);
        }
    };
    let udp = match UdpSocket::bind(options.bind).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("turn-server: cannot bind UDP {}: {e}", options.bind);
            return ExitCode::FAILURE;
        }
    };
    let mut listeners = Vec::new();
    if options.tcp {
        match TcpListener::bind(options.bind).await {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("turn-server: cannot bind TCP {}: {e}", options.bind);
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "turn-server: UDP{} on {}, realm {realm}, relaying on {}",
        if options.tcp { " and TCP" } else { "" },
        options.bind,
        relay_ips.join(", ")
    );
    // Runs until the process is stopped.
    let served = if options.batched {
        batched(core, udp, options.batch, options.gro).await
    } else {
        turn_server::run(core, vec![udp], listeners, std::future::pending()).await
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turn-server: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(target_os = "linux")]
async fn batched(
    core: TurnServer,
    udp: UdpSocket,
    batch: usize,
    gro: bool,
) -> Result<(), chorus::nat::driver::DriverError> {
    let mut config = chorus::runtime::SocketConfig::default();
    config.batch = batch;
    config.gro = gro;
    turn_server::run_batched(core, vec![udp], config).await
}

#[cfg(not(target_os = "linux"))]
async fn batched(
    _core: TurnServer,
    _udp: UdpSocket,
    _batch: usize,
    _gro: bool,
) -> Result<(), chorus::nat::driver::DriverError> {
    Err(std::io::Error::other("--batched needs Linux (recvmmsg/sendmmsg)").into())
}
