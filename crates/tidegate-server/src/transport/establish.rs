//! The transport steps of a TCP-based listener, in order: PROXY header, TLS, WebSocket upgrade.
//!
//! Place in the data flow: `listener --accept--> establish --> Established --> connection
//! task`. It runs in a short-lived task of its own, bounded by the listener's handshake
//! timeout, so that the connection task that follows does not carry the handshake's state in
//! its future for the rest of its life.

use super::proxy::{self, ProxyError, ProxyHeader};
use super::tls::TlsSetup;
use super::ws::WsStream;
use super::ws::handshake::{self, UpgradeError};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tidegate_core::ConnInfo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::debug;

/// Which steps a listener takes before MQTT starts.
#[derive(Debug)]
pub(crate) struct Steps {
    /// Read a PROXY protocol header first.
    pub(crate) proxy_protocol: bool,
    /// Run a TLS handshake.
    pub(crate) tls: Option<Arc<TlsSetup>>,
    /// Upgrade to WebSocket on this path.
    pub(crate) ws_path: Option<Box<str>>,
    /// Accept permessage-deflate when a WebSocket client offers it, a compressed message
    /// inflating to at most this many bytes (`limits.max_packet_size`); `None`: declined.
    pub(crate) ws_deflate: Option<u32>,
    /// The time all steps together may take.
    pub(crate) timeout: Duration,
}

impl Steps {
    /// Whether a socket can go straight to its connection task.
    pub(crate) fn is_empty(&self) -> bool {
        !self.proxy_protocol && self.tls.is_none() && self.ws_path.is_none()
    }
}

/// A socket ready for MQTT, by transport.
#[derive(Debug)]
pub(crate) enum Established {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// WebSocket over TCP.
    Ws(WsStream<TcpStream>),
    /// WebSocket over TLS over TCP.
    Wss(Box<WsStream<TlsStream<TcpStream>>>),
}

/// What failed, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// A missing or malformed PROXY header.
    Proxy,
    /// The TLS handshake (no or bad client certificate, plaintext on a TLS port, ...).
    Tls,
    /// The WebSocket upgrade (no Upgrade header, wrong path, ...).
    WebSocket,
    /// The handshake timeout passed.
    Timeout,
}

/// Why a socket never reached MQTT.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// See [`ProxyError`].
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The TLS handshake failed; rustls's reason is inside.
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// See [`UpgradeError`].
    #[error("WebSocket upgrade failed: {0}")]
    WebSocket(#[from] UpgradeError),
    /// The steps took longer than the listener's `handshake_timeout_ms`.
    #[error("handshake not complete after {0:?}")]
    Timeout(Duration),
}

impl HandshakeError {
    /// The counter this failure goes to.
    pub(crate) fn failure(&self) -> HandshakeFailure {
        match self {
            HandshakeError::Proxy(_) => HandshakeFailure::Proxy,
            HandshakeError::Tls(_) => HandshakeFailure::Tls,
            HandshakeError::WebSocket(_) => HandshakeFailure::WebSocket,
            HandshakeError::Timeout(_) => HandshakeFailure::Timeout,
        }
    }
}

/// Runs `steps` on `stream`, recording in `info` what they learn, within the steps' timeout.
pub(crate) async fn establish(
    stream: TcpStream,
    info: &mut ConnInfo,
    steps: &Steps,
) -> Result<Established, HandshakeError> {
    tokio::time::timeout(steps.timeout, run_steps(stream, info, steps))
        .await
        .unwrap_or(Err(HandshakeError::Timeout(steps.timeout)))
}

async fn run_steps(
    mut stream: TcpStream,
    info: &mut ConnInfo,
    steps: &Steps,
) -> Result<Established, HandshakeError> {
    if steps.proxy_protocol {
        match proxy::read_header(&mut stream).await? {
            ProxyHeader::Proxied { source, .. } => {
                debug!(proxy = ?info.peer, client = %source, "PROXY header");
                info.peer = Some(source);
            }
            ProxyHeader::Local => debug!(proxy = ?info.peer, "PROXY header without addresses"),
        }
    }
    match (&steps.tls, &steps.ws_path) {
        (None, None) => Ok(Established::Tcp(stream)),
        (Some(tls), None) => {
            let tls = tls
                .accept(stream, info)
                .await
                .map_err(HandshakeError::Tls)?;
            Ok(Established::Tls(Box::new(tls)))
        }
        (None, Some(path)) => {
            let upgraded = handshake::accept(&mut stream, path, steps.ws_deflate.is_some()).await?;
            let max_message = steps.ws_deflate.unwrap_or_default();
            Ok(Established::Ws(WsStream::upgraded(
                stream,
                upgraded,
                max_message,
            )))
        }
        (Some(tls), Some(path)) => {
            let mut tls = tls
                .accept(stream, info)
                .await
                .map_err(HandshakeError::Tls)?;
            let upgraded = handshake::accept(&mut tls, path, steps.ws_deflate.is_some()).await?;
            let max_message = steps.ws_deflate.unwrap_or_default();
            Ok(Established::Wss(Box::new(WsStream::upgraded(
                tls,
                upgraded,
                max_message,
            ))))
        }
    }
}
