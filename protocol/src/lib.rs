//! The Metrom wire protocol, shared by the controller, the agent and the CLI.
//!
//! Everything that crosses a process boundary lives here: identifiers, the
//! postcard messages and their length-prefixed framing, the join token format,
//! the identity bundle file, the rustls configurations for QUIC, and the
//! template format (`template`) the controller checks and the agents run.
//!
//! Postcard is not self-describing, so messages evolve append-only: new enum
//! variants go at the end, new fields go into new message types. The rules are
//! in `docs/protocol.md`.

pub mod cloudinit;
pub mod codec;
pub mod duration;
pub mod facts;
pub mod identity;
pub mod ids;
pub mod messages;
pub mod template;
pub mod tls;
pub mod token;

/// The protocol version this build speaks. Every connection's first exchange
/// carries it; a peer outside `MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION` is refused
/// with a message naming both versions.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest peer version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// ALPN for authenticated connections (agents and the CLI).
pub const ALPN_MAIN: &[u8] = b"metrom/1";
/// ALPN for enrollment: the only protocol a peer without a client certificate may speak.
pub const ALPN_JOIN: &[u8] = b"metrom-join/1";

/// The name every client verifies the controller's certificate against. The
/// controller's certificate always carries it, so a controller can be reached by
/// any address (NAT, several interfaces) without re-issuing its certificate; the
/// private CA is what makes the name trustworthy.
pub const CONTROLLER_SERVER_NAME: &str = "controller.metrom.internal";

/// Default UDP port of the controller's QUIC endpoint.
pub const DEFAULT_QUIC_PORT: u16 = 7443;
/// Default TCP port of the controller's HTTPS endpoint (installer and artifacts).
pub const DEFAULT_HTTPS_PORT: u16 = 7444;

/// The version of this build of Metrom, as shown by `metrom status`.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// An error and its sources on one line: `a: b: c`. Log it once, at the top.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// Checks a peer's protocol version against ours.
pub fn check_version(peer: u32) -> Result<(), VersionMismatch> {
    if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&peer) {
        Ok(())
    } else {
        Err(VersionMismatch {
            peer,
            ours: PROTOCOL_VERSION,
        })
    }
}

/// A peer speaks a protocol version we do not.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "protocol version mismatch: the peer speaks version {peer}, this side speaks version {ours} \
     (accepting {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}); upgrade the older side"
)]
pub struct VersionMismatch {
    pub peer: u32,
    pub ours: u32,
}

/// Application close codes used on QUIC connections, so the other side can tell
/// why it was closed without parsing the reason text.
pub mod close {
    use quinn::VarInt;
    /// Normal end of a session.
    pub const NORMAL: VarInt = VarInt::from_u32(0);
    /// The controller is shutting down; reconnect later.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(1);
    /// The peer's identity was revoked; do not reconnect.
    pub const REVOKED: VarInt = VarInt::from_u32(2);
    /// The peer broke the protocol (bad frame, wrong message, bad version).
    pub const PROTOCOL: VarInt = VarInt::from_u32(3);
    /// The peer is not allowed on this channel (no or unknown certificate).
    pub const UNAUTHENTICATED: VarInt = VarInt::from_u32(4);
    /// A newer session for the same host replaced this one.
    pub const REPLACED: VarInt = VarInt::from_u32(5);
    /// The host stopped heartbeating for longer than the heartbeat TTL.
    pub const HEARTBEAT_TIMEOUT: VarInt = VarInt::from_u32(6);
}
