//! How two clients reach each other: the Chorus TURN relay on loopback, and ICE
//! between two clients either directly or, when one of them can only be reached
//! through a relay, through a TURN allocation.

use std::net::SocketAddr;
use std::time::Duration;

use chorus::crypto::SystemEntropy;
use chorus::index::record::NatClass;
use chorus::nat::TurnClientConfig;
use chorus::nat::client::Transport;
use chorus::nat::driver::ice::{Connection, Signalling, connect};
use chorus::nat::driver::turn_client::TurnHandle;
use chorus::nat::driver::turn_server::{self, TurnServerHandle};
use chorus::nat::ice::{Agent, IceConfig, Role};
use chorus::nat::turn::server::{Cidr, StaticUsers};
use chorus::nat::{TurnConfig, TurnServer};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::DemoError;

const REALM: &str = "chorus.demo";
/// How long ICE may take on loopback.
const ICE_LIMIT: Duration = Duration::from_secs(30);

/// The relay: a Chorus TURN server on 127.0.0.1. Loopback peers are special-purpose
/// addresses, denied by default (RFC 8656 §21.1.2): the demo allows 127.0.0.0/8.
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    handle: TurnServerHandle,
}

impl Relay {
    pub(crate) async fn start(users: &[(String, String)]) -> Result<Self, DemoError> {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = udp.local_addr()?;
        let mut config = TurnConfig::default();
        config.realm = REALM.to_owned();
        config.server_addresses = vec![addr];
        config.relay_ips = vec![addr.ip()];
        config.allowed_peers =
            vec![Cidr::new([127, 0, 0, 0].into(), 8).ok_or(DemoError::Step("bad CIDR".into()))?];
        let mut accounts = StaticUsers::new(REALM);
        for (user, password) in users {
            accounts.add(user, password);
        }
        let core = TurnServer::new(
            config,
            Box::new(accounts),
            Box::new(chorus::crypto::SystemEntropy::new()),
        )?;
        let handle = turn_server::spawn(core, vec![udp], Vec::new());
        Ok(Self { addr, handle })
    }

    pub(crate) async fn stop(self) {
        let _ = self.handle.shutdown().await;
    }
}

/// One side of a call being set up: its ICE agent's host socket and TURN account.
pub(crate) struct Side {
    pub(crate) name: &'static str,
    /// The host candidate's socket; `None` for a relay-only side (the WebRTC "relay"
    /// transport policy): a client behind a symmetric NAT whose direct packets the
    /// other side's NAT would drop.
    pub(crate) host: Option<UdpSocket>,
    /// TURN credentials: this side gathers a relayed candidate.
    pub(crate) turn: Option<(SocketAddr, String, String)>,
}

/// Whether two clients' NATs defeat hole punching (RFC 5780 classes): a symmetric
/// NAT against anything but an open host or a full cone, or UDP blocked.
pub(crate) fn needs_relay(a: NatClass, b: NatClass) -> bool {
    use NatClass::{FullCone, Open, Symmetric, UdpBlocked};
    let hard = |x: NatClass, other: NatClass| x == Symmetric && !matches!(other, Open | FullCone);
    a == UdpBlocked || b == UdpBlocked || hard(a, b) || hard(b, a)
}

/// Runs ICE between `a` (controlling) and `b`; the connected pair.
pub(crate) async fn connect_pair(a: Side, b: Side) -> Result<(Connection, Connection), DemoError> {
    let (a_tx, b_rx) = mpsc::channel::<String>(64);
    let (b_tx, a_rx) = mpsc::channel::<String>(64);
    let a_fut = gather_and_connect(a, Role::Controlling, Signalling { tx: a_tx, rx: a_rx });
    let b_fut = gather_and_connect(b, Role::Controlled, Signalling { tx: b_tx, rx: b_rx });
    let (ra, rb) = tokio::time::timeout(ICE_LIMIT, async { tokio::join!(a_fut, b_fut) })
        .await
        .map_err(|_| DemoError::Step("ICE did not finish in time".into()))?;
    Ok((ra?, rb?))
}

async fn gather_and_connect(
    side: Side,
    role: Role,
    signalling: Signalling,
) -> Result<Connection, DemoError> {
    let mut config = IceConfig::default();
    config.role = role;
    let agent = Agent::new(config, Box::new(SystemEntropy::new()))?;
    let relay = match side.turn {
        Some((server, user, password)) => {
            let config = TurnClientConfig::new(server, Transport::Udp, &user, &password);
            let handle = TurnHandle::connect(config)
                .await
                .map_err(|e| DemoError::Step(format!("{}: TURN allocation: {e}", side.name)))?;
            Some(
                handle
                    .into_relay_channel()
                    .map_err(|e| DemoError::Step(e.to_string()))?,
            )
        }
        None => None,
    };
    connect(agent, side.host.into_iter().collect(), relay, signalling)
        .await
        .map_err(|e| DemoError::Step(format!("{}: ICE: {e}", side.name)))
}
