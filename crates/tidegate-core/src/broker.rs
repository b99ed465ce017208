//! The broker: every session, connection, subscription and retained message of one gateway,
//! driven by events. (Skeleton: the public API is the contract the server is written against.)

use crate::BrokerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tidegate_protocol::{DecodeError, Packet, ReasonCode, Utf8};

/// Identifies one network connection; assigned by the IO shell, never reused while the broker
/// knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the IO shell knows about a connection's transport, for logs, limits and (later) auth.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnInfo {
    /// Name of the listener that accepted it (e.g. `"tcp:0.0.0.0:1883"`).
    pub listener: Arc<str>,
    /// The peer's address, when the transport has one.
    pub peer: Option<SocketAddr>,
}

/// An action for the IO shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Encode and send `packet` on `conn`, after everything sent to it before.
    Send {
        /// Target connection.
        conn: ConnId,
        /// Packet to send.
        packet: Packet,
    },
    /// Flush what was sent to `conn`, then close the socket. The broker has forgotten `conn`.
    Close {
        /// Connection to close.
        conn: ConnId,
    },
}

/// The whole sans-IO engine.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
}

impl Broker {
    /// An empty broker.
    pub fn new(config: BrokerConfig) -> Broker {
        Broker { config }
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// A socket was accepted: CONNECT must arrive within `connect_timeout`.
    pub fn handle_open(&mut self, now: Instant, conn: ConnId, info: ConnInfo) {
        let _ = (now, conn, info);
    }

    /// A packet decoded from `conn`.
    pub fn handle_packet(&mut self, now: Instant, conn: ConnId, packet: Packet) {
        let _ = (now, conn, packet);
    }

    /// The codec rejected bytes from `conn`: answer with DISCONNECT carrying the error's reason
    /// code (v5, after CONNECT; CONNACK for a bad CONNECT) and close. Counts as an abnormal
    /// disconnect (the will is published).
    pub fn handle_decode_error(&mut self, now: Instant, conn: ConnId, error: &DecodeError) {
        let _ = (now, conn, error);
    }

    /// The socket of `conn` ended without DISCONNECT (EOF, IO error): abnormal disconnect.
    pub fn handle_closed(&mut self, now: Instant, conn: ConnId) {
        let _ = (now, conn);
    }

    /// Fires every deadline at or before `now` (connect timeout, keep alive, will delay,
    /// session expiry, message expiry).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
    }

    /// The earliest pending deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next action for the IO shell.
    pub fn poll_output(&mut self) -> Option<Output> {
        None
    }

    /// Graceful shutdown: DISCONNECT with `reason` (normally 0x8B Server shutting down) and an
    /// optional Server Reference to every v5 client, close every connection.
    pub fn shutdown(&mut self, now: Instant, reason: ReasonCode, server_reference: Option<Utf8>) {
        let _ = (now, reason, server_reference);
    }
}
