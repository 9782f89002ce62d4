//! A call between two clients over their ICE path: the SIGMA-I handshake (chorus-crypto)
//! proves who is at each end and derives the call's SRTP keys.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use chorus::crypto::SystemEntropy;
use chorus::crypto::handshake::{Config, Established, Initiator, Responder};
use chorus::crypto::srtp::{Policy, Suite};
use chorus::framing::{Datagram, DatagramHeader, DatagramType};
use chorus::nat::driver::ice::Connection;

use crate::DemoError;

/// The SRTP suite of the demo's calls (RFC 7714).
pub(crate) const SUITE: Suite = Suite::AeadAes128Gcm;

/// Each side's SRTP policies: `(send, receive)`.
pub(crate) type Keys = (Policy, Policy);

/// Runs the handshake across the path, caller first, as Chorus `Control` datagrams
/// (their first byte keeps them apart from STUN and RTP, RFC 7983). Returns the
/// caller's and the callee's established sessions, from which each call over the
/// path derives its SRTP keys ([`keys`]).
pub(crate) async fn handshake(
    caller: &mut Connection,
    callee: &mut Connection,
    caller_config: &Config,
    callee_config: &Config,
) -> Result<(Established, Established), DemoError> {
    let mut rng = SystemEntropy::new();
    let (initiator, hello) = Initiator::start(caller_config, &mut rng)?;
    let hello = carry(caller, callee, hello, 1).await?;
    let (responder, response) = Responder::handle_hello(callee_config, &hello, &mut rng)?;
    let response = carry(callee, caller, response, 1).await?;
    let (caller_side, finish) = initiator.handle_response(&response, SystemTime::now())?;
    let finish = carry(caller, callee, finish, 2).await?;
    let callee_side = responder.handle_finish(&finish, SystemTime::now())?;
    Ok((caller_side, callee_side))
}

/// One side's SRTP policies `(send, receive)` for call number `call` over a path.
pub(crate) fn keys(side: &Established, call: u64) -> Result<Keys, DemoError> {
    Ok(side.srtp_policies(call, SUITE)?)
}

/// Sends `message` from `from` as a `Control` datagram and returns its payload as
/// `to` receives it.
async fn carry(
    from: &mut Connection,
    to: &mut Connection,
    message: Vec<u8>,
    sequence: u64,
) -> Result<Vec<u8>, DemoError> {
    let mut wire = BytesMut::new();
    Datagram::new(
        DatagramHeader::new(DatagramType::Control, 0, sequence),
        message,
    )
    .encode(&mut wire)
    .map_err(|e| DemoError::Step(format!("handshake message: {e}")))?;
    from.send(wire.freeze())
        .await
        .map_err(|e| DemoError::Step(format!("handshake send: {e}")))?;
    let got: Bytes = tokio::time::timeout(Duration::from_secs(5), to.recv())
        .await
        .map_err(|_| DemoError::Step("handshake message lost".into()))?
        .map_err(|e| DemoError::Step(format!("handshake receive: {e}")))?;
    let datagram =
        Datagram::decode(&got).map_err(|e| DemoError::Step(format!("handshake: {e}")))?;
    Ok(datagram.payload.to_vec())
}
