//! TURN (RFC 8656): relaying for peers that cannot reach each other directly.
//!
//! - [`channel_data`]: the ChannelData framing shared by client and server.
//! - [`server`]: the relay server core (allocations, permissions, channels, auth).
//! - [`client`]: the client core (allocate, refresh, permissions, channels, data).
//!
//! The cores are sans-IO like the rest of the crate; the tokio drivers live in
//! `crate::driver`.

pub mod channel_data;
pub mod client;
pub mod server;
