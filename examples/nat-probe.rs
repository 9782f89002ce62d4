//! NAT behaviour discovery (RFC 5780) against any RFC 5780 STUN server (the Chorus
//! `stun-server` example with `--alt-ip`/`--alt-port`, or coturn's `turnserver`).
//!
//! ```text
//! cargo run --release --example nat-probe -- --server 127.0.0.1:3478 [--json]
//! ```
//!
//! Prints the mapping and filtering behaviour (RFC 4787 terms), the classic name, the
//! mapped address, hairpinning and, when UDP is blocked, TCP reachability. With
//! `--lifetime` it also measures how long the NAT keeps an idle UDP binding (RFC 5780
//! §4.6; this takes minutes).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use chorus::crypto::SystemEntropy;
use chorus::nat::discovery::{
    Behaviour, Classic, Discovery, DiscoveryConfig, Lifetime, LifetimeConfig, LifetimeProbe, Report,
};
use chorus::nat::driver::{run_discovery, run_lifetime};
use tokio::net::UdpSocket;

const HELP: &str = "\
nat-probe: RFC 5780 NAT behaviour discovery against a STUN server

USAGE:
    nat-probe --server ADDR:PORT [OPTIONS]

OPTIONS:
    --server ADDR:PORT   the STUN server (RFC 5780 support gives the full report)
    --bind ADDR:PORT     local address to probe from (default: any, same family)
    --json               print one JSON object instead of text
    --lifetime           also estimate the UDP binding lifetime (RFC 5780 4.6; slow)
    --lifetime-max SECS  longest idle time tried by --lifetime (default 600)
    -h, --help           print this help
";

struct Args {
    server: SocketAddr,
    bind: Option<SocketAddr>,
    json: bool,
    lifetime: Option<Duration>,
}

fn parse() -> Result<Option<Args>, String> {
    let (mut server, mut bind, mut json) = (None, None, false);
    let (mut lifetime, mut max) = (false, Duration::from_secs(600));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--server" => {
                server = Some(
                    value("--server")?
                        .parse()
                        .map_err(|e| format!("--server: {e}"))?,
                );
            }
            "--bind" => {
                bind = Some(
                    value("--bind")?
                        .parse()
                        .map_err(|e| format!("--bind: {e}"))?,
                )
            }
            "--json" => json = true,
            "--lifetime" => lifetime = true,
            "--lifetime-max" => {
                let secs: u64 = value("--lifetime-max")?
                    .parse()
                    .map_err(|e| format!("--lifetime-max: {e}"))?;
                max = Duration::from_secs(secs.max(1));
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    let server = server.ok_or("--server is required (try --help)")?;
    Ok(Some(Args {
        server,
        bind,
        json,
        lifetime: lifetime.then_some(max),
    }))
}

const fn behaviour(b: Behaviour) -> &'static str {
    match b {
        Behaviour::EndpointIndependent => "endpoint-independent",
        Behaviour::AddressDependent => "address-dependent",
        Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        Behaviour::Unknown => "unknown",
    }
}

const fn classic(c: Classic) -> &'static str {
    match c {
        Classic::OpenInternet => "open Internet",
        Classic::FullCone => "full cone",
        Classic::RestrictedCone => "restricted cone",
        Classic::PortRestrictedCone => "port-restricted cone",
        Classic::Symmetric => "symmetric",
        Classic::SymmetricUdpFirewall => "symmetric UDP firewall",
        Classic::UdpBlocked => "UDP blocked",
        Classic::Unknown => "unknown",
    }
}

fn json_opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| format!("\"{}\"", v.to_string()))
}

fn print(report: &Report, lifetime: Option<Lifetime>, json: bool) {
    let secs = |d: Duration| d.as_secs_f64();
    if json {
        let mut out = format!(
            "{{\"mapped\":{},\"behind_nat\":{},\"mapping\":\"{}\",\"filtering\":\"{}\",\
             \"classic\":\"{}\",\"hairpinning\":{},\"tcp_mapped\":{},\"super_node_eligible\":{}",
            json_opt(report.mapped),
            report
                .behind_nat
                .map_or("null".to_owned(), |b| b.to_string()),
            behaviour(report.mapping),
            behaviour(report.filtering),
            classic(report.classic),
            report
                .hairpinning
                .map_or("null".to_owned(), |b| b.to_string()),
            json_opt(report.tcp_mapped),
            report.super_node_eligible(),
        );
        if let Some(l) = lifetime {
            out += &format!(
                ",\"lifetime\":{{\"at_least_s\":{},\"expired_by_s\":{}}}",
                secs(l.at_least),
                l.expired_by
                    .map_or("null".to_owned(), |d| secs(d).to_string())
            );
        }
        println!("{out}}}");
        return;
    }
    let or = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    println!(
        "mapped address:  {}",
        or(report.mapped.map(|a| a.to_string()))
    );
    println!("mapping:         {}", behaviour(report.mapping));
    println!("filtering:       {}", behaviour(report.filtering));
    println!("classic name:    {}", classic(report.classic));
    println!(
        "hairpinning:     {}",
        or(report.hairpinning.map(|b| b.to_string()))
    );
    let eligible = if report.super_node_eligible() {
        "eligible"
    } else {
        "not eligible"
    };
    println!("super node:      {eligible}");
    if report.classic == Classic::UdpBlocked {
        println!(
            "TCP reachable:   {}",
            or(report.tcp_mapped.map(|a| format!("yes, as {a}")))
        );
    }
    if let Some(l) = lifetime {
        match l.expired_by {
            Some(d) => println!(
                "binding lifetime: between {:.0} s and {:.0} s",
                secs(l.at_least),
                secs(d)
            ),
            None => println!("binding lifetime: at least {:.0} s", secs(l.at_least)),
        }
    }
}

async fn probe(args: &Args) -> Result<(Report, Option<Lifetime>), String> {
    let any: SocketAddr = if args.server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|_| "address")?
    } else {
        "[::]:0".parse().map_err(|_| "address")?
    };
    let sock = UdpSocket::bind(args.bind.unwrap_or(any))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    // The local address must be the one the server sees when there is no NAT: connect
    // a throwaway socket to learn the route's source address.
    let mut local = sock.local_addr().map_err(|e| e.to_string())?;
    if local.ip().is_unspecified() {
        let route = std::net::UdpSocket::bind(any).map_err(|e| e.to_string())?;
        route
            .connect(args.server)
            .map_err(|e| format!("no route to {}: {e}", args.server))?;
        local.set_ip(route.local_addr().map_err(|e| e.to_string())?.ip());
    }
    let now = tokio::time::Instant::now().into_std();
    let mut d = Discovery::new(
        DiscoveryConfig::default(),
        now,
        local,
        args.server,
        Box::new(SystemEntropy::new()),
    )
    .map_err(|e| e.to_string())?;
    let report = run_discovery(&mut d, &sock)
        .await
        .map_err(|e| e.to_string())?;
    let Some(max) = args.lifetime else {
        return Ok((report, None));
    };
    let y = UdpSocket::bind(SocketAddr::new(local.ip(), 0))
        .await
        .map_err(|e| e.to_string())?;
    let y_addr = y.local_addr().map_err(|e| e.to_string())?;
    let mut config = LifetimeConfig::default();
    config.max = max;
    config.first = config.first.min(max);
    let mut p = LifetimeProbe::new(
        config,
        tokio::time::Instant::now().into_std(),
        (local, y_addr),
        args.server,
        Box::new(SystemEntropy::new()),
    )
    .map_err(|e| e.to_string())?;
    let lifetime = run_lifetime(&mut p, &sock, &y)
        .await
        .map_err(|e| e.to_string())?;
    Ok((report, Some(lifetime)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("nat-probe: {e}");
            return ExitCode::from(2);
        }
    };
    match probe(&args).await {
        Ok((report, lifetime)) => {
            print(&report, lifetime, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("nat-probe: {e}");
            ExitCode::FAILURE
        }
    }
}
