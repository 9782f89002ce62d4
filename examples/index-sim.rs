//! The Global Index simulator: N super nodes on a virtual clock, with latency, loss,
//! churn and malicious nodes, running the real `chorus-index` node core.
//!
//! ```text
//! cargo run --release --example index-sim -- --nodes 100000 --churn 0.2 --malicious 0.1 --lookups 10000
//! cargo run --release --example index-sim -- --nodes 10000 --kademlia
//! ```
//!
//! Prints the success rate, hops, lookup latency, messages per lookup, routing-table
//! size and memory per node, simulated duration and wall-clock time. The same seed
//! gives the same run.

use std::process::ExitCode;
use std::time::Duration;

use chorus::index::node::Config;
use chorus::index::sim::{SimConfig, run};

const HELP: &str = "\
index-sim: deterministic simulation of the Chorus Global Index

USAGE:
    index-sim [OPTIONS]

OPTIONS:
    --nodes N          super nodes (default 10000)
    --churn F          fraction of nodes replaced per hour (default 0.2)
    --malicious F      fraction of malicious nodes (default 0)
    --lookups N        user lookups (default 10000)
    --searches N       searches by display-name word (default 0; publishes word entries)
    --users N          users with presence records (default 10000)
    --duration SECS    simulated seconds of lookups after a 30 s warm-up (default 600)
    --rtt MS           median round-trip time (default 50)
    --loss F           datagram loss probability (default 0.01)
    --seed N           seed of every random choice (default 1)
    --kademlia         plain Kademlia (k=20, alpha=3, one path) instead of Chorus's
    --paths N          disjoint lookup paths (default 2; Kademlia 1)
    --alpha N          requests in flight per path (default 3)
    --quorum N         holders a user lookup waits for (default 2; Kademlia 1)
    -h, --help         print this help
";

fn parse() -> Result<Option<SimConfig>, String> {
    let mut c = SimConfig::default();
    c.nodes = 10_000;
    c.users = 10_000;
    c.lookups = 10_000;
    let mut kademlia = false;
    let (mut paths, mut alpha, mut quorum) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        if flag == "--kademlia" {
            kademlia = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_| format!("bad value for {flag}: {value}");
        match flag.as_str() {
            "--nodes" => c.nodes = value.parse().map_err(bad)?,
            "--churn" => {
                c.churn_per_hour = value.parse().map_err(|_| format!("bad value for {flag}"))?
            }
            "--malicious" => {
                c.malicious = value.parse().map_err(|_| format!("bad value for {flag}"))?
            }
            "--lookups" => c.lookups = value.parse().map_err(bad)?,
            "--searches" => c.searches = value.parse().map_err(bad)?,
            "--users" => c.users = value.parse().map_err(bad)?,
            "--duration" => c.duration = Duration::from_secs(value.parse().map_err(bad)?),
            "--rtt" => c.median_rtt = Duration::from_millis(value.parse().map_err(bad)?),
            "--loss" => c.loss = value.parse().map_err(|_| format!("bad value for {flag}"))?,
            "--seed" => c.seed = value.parse().map_err(|_| format!("bad value for {flag}"))?,
            "--paths" => paths = Some(value.parse().map_err(bad)?),
            "--alpha" => alpha = Some(value.parse().map_err(bad)?),
            "--quorum" => quorum = Some(value.parse().map_err(bad)?),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let mut node = if kademlia {
        Config::kademlia()
    } else {
        Config::default()
    };
    if let Some(p) = paths {
        node.disjoint_paths = p;
    }
    if let Some(a) = alpha {
        node.alpha = a;
    }
    if let Some(q) = quorum {
        node.value_quorum = q;
    }
    c.node = node;
    if !(0.0..=1.0).contains(&c.malicious)
        || !(0.0..=1.0).contains(&c.loss)
        || c.churn_per_hour < 0.0
    {
        return Err("fractions must be within 0-1 and churn non-negative".into());
    }
    if c.nodes < 2 || c.nodes > 1 << 23 {
        return Err("--nodes must be 2 to 8,388,608".into());
    }
    Ok(Some(c))
}

/// Peak resident memory of this process, from /proc (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let config = match parse() {
        Ok(Some(c)) => c,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("index-sim: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let design = if config.node.table.wide_levels == 0 {
        "Kademlia"
    } else {
        "Chorus"
    };
    println!(
        "{design}: {} nodes, {:.0} % churn/h, {:.0} % malicious, {} users, {} lookups, \
         median RTT {} ms, loss {:.1} %, seed {}",
        config.nodes,
        config.churn_per_hour * 100.0,
        config.malicious * 100.0,
        config.users,
        config.lookups,
        config.median_rtt.as_millis(),
        config.loss * 100.0,
        config.seed
    );
    println!(
        "node: replication {}, alpha {}, {} disjoint path(s), quorum {}, buckets {} (top {} levels {})",
        config.node.replication,
        config.node.alpha,
        config.node.disjoint_paths,
        config.node.value_quorum,
        config.node.table.bucket_size,
        config.node.table.wide_levels,
        config.node.table.wide_bucket_size
    );
    let report = run(&config);
    println!("{report}");
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak memory        {:.0} MiB ({:.1} KiB per node)",
            kib as f64 / 1024.0,
            kib as f64 / config.nodes as f64
        );
    }
    ExitCode::SUCCESS
}
