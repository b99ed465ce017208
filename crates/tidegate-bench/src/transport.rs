//! Byte transports to the broker: one enum per direction, so the MQTT client above never knows
//! which kind of socket it writes to.
//!
//! Place in the data flow: `client` → [`connect`] → ([`ReadHalf`], [`WriteHalf`]) → socket.
//! An [`Endpoint`] is the resolved [`Target`]: a socket address (TCP or Unix), optionally TLS
//! on top ([`crate::tls`]), optionally WebSocket on top of that ([`crate::ws`]), the same
//! layering as the gateway's listeners. The halves are split so a connection task can wait for
//! "readable" and "writable" at once (`select!` over a read and a write): plain TCP and Unix
//! sockets split for free; layered streams go through `tokio::io::split`, and their writing
//! side completes a write only once it is flushed to the socket ([`LayeredWriter`]: a TLS
//! record left inside rustls would otherwise wait for the next write).

mod layered;

pub use layered::{Boxed, LayeredReader, LayeredWriter};

use crate::target::{Target, host_port};
use crate::tls::{TlsClient, TlsError, TlsOptions};
use layered::Layered;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream, tcp, unix};

/// The socket under the layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// TCP to this address.
    Tcp(SocketAddr),
    /// Unix socket at this path.
    Unix(PathBuf),
}

/// A resolved broker address with its layers, cheap to clone into every connection task.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where to connect.
    pub socket: SocketAddress,
    /// TLS on top, if any.
    pub tls: Option<TlsClient>,
    /// WebSocket request URI on top, if any (e.g. `ws://host:port/mqtt`).
    pub ws_uri: Option<String>,
}

/// Why a target cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// DNS failed.
    #[error("cannot resolve {0}: {1}")]
    Lookup(String, io::Error),
    /// TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// TLS options for a target without TLS.
    #[error("TLS options given but {0} does not use TLS (use tls:// or wss://)")]
    TlsUnused(String),
}

impl Endpoint {
    /// Resolves host names once (first address) and builds the TLS client.
    pub async fn resolve(target: &Target, tls: &TlsOptions) -> Result<Endpoint, ResolveError> {
        match target {
            Target::Unix { path } => {
                if tls.any() {
                    return Err(ResolveError::TlsUnused(target.to_string()));
                }
                Ok(Endpoint {
                    socket: SocketAddress::Unix(path.clone()),
                    tls: None,
                    ws_uri: None,
                })
            }
            Target::Net {
                host,
                port,
                tls: use_tls,
                ws_path,
            } => {
                if tls.any() && !use_tls {
                    return Err(ResolveError::TlsUnused(target.to_string()));
                }
                let addr = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .and_then(|mut a| {
                        a.next()
                            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
                    })
                    .map_err(|e| ResolveError::Lookup(target.to_string(), e))?;
                let scheme = if *use_tls { "wss" } else { "ws" };
                Ok(Endpoint {
                    socket: SocketAddress::Tcp(addr),
                    tls: if *use_tls {
                        Some(tls.client(host)?)
                    } else {
                        None
                    },
                    ws_uri: ws_path
                        .as_ref()
                        .map(|p| format!("{scheme}://{}{p}", host_port(host, *port))),
                })
            }
        }
    }

    /// Plain TCP to `addr` (tests).
    pub fn tcp(addr: SocketAddr) -> Endpoint {
        Endpoint {
            socket: SocketAddress::Tcp(addr),
            tls: None,
            ws_uri: None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.socket, &self.ws_uri) {
            (_, Some(uri)) => write!(f, "{uri}"),
            (SocketAddress::Tcp(a), None) if self.tls.is_some() => write!(f, "tls://{a}"),
            (SocketAddress::Tcp(a), None) => write!(f, "tcp://{a}"),
            (SocketAddress::Unix(p), None) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// The reading side of a connection.
#[derive(Debug)]
pub enum ReadHalf {
    /// TCP.
    Tcp(tcp::OwnedReadHalf),
    /// Unix domain socket.
    Unix(unix::OwnedReadHalf),
    /// TLS and/or WebSocket.
    Layered(LayeredReader),
}

/// The writing side of a connection.
#[derive(Debug)]
pub enum WriteHalf {
    /// TCP.
    Tcp(tcp::OwnedWriteHalf),
    /// Unix domain socket.
    Unix(unix::OwnedWriteHalf),
    /// TLS and/or WebSocket; a write completes once flushed to the socket.
    Layered(LayeredWriter),
}

/// Opens a connection to `endpoint`, binding TCP sockets to `source` first when given.
///
/// Nagle is disabled: the client batches its own writes, and a small ack must not wait for
/// the previous segment's ACK.
pub async fn connect(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
) -> io::Result<(ReadHalf, WriteHalf)> {
    let layered = endpoint.tls.is_some() || endpoint.ws_uri.is_some();
    match &endpoint.socket {
        SocketAddress::Tcp(addr) => {
            let stream = connect_tcp(*addr, source).await?;
            if !layered {
                let (r, w) = stream.into_split();
                return Ok((ReadHalf::Tcp(r), WriteHalf::Tcp(w)));
            }
            split_layered(layer(endpoint, stream).await?)
        }
        SocketAddress::Unix(path) => {
            let stream = connect_unix(path).await?;
            if !layered {
                let (r, w) = stream.into_split();
                return Ok((ReadHalf::Unix(r), WriteHalf::Unix(w)));
            }
            split_layered(layer(endpoint, stream).await?)
        }
    }
}

/// A TCP connection to `addr` with Nagle off, from `source` when given (the first step of
/// [`connect`], public for scenarios that layer TLS themselves to inspect the handshake).
pub async fn connect_tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

/// Wraps a socket in TLS and/or WebSocket as the endpoint says.
async fn layer<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    endpoint: &Endpoint,
    stream: S,
) -> io::Result<Boxed> {
    let stream: Box<dyn Layered> = match &endpoint.tls {
        Some(tls) => Box::new(
            tls.connector
                .connect(tls.server_name.clone(), stream)
                .await?,
        ),
        None => Box::new(stream),
    };
    let stream: Box<dyn Layered> = match &endpoint.ws_uri {
        Some(uri) => Box::new(crate::ws::connect(uri, Boxed(stream)).await?),
        None => stream,
    };
    Ok(Boxed(stream))
}

fn split_layered(stream: Boxed) -> io::Result<(ReadHalf, WriteHalf)> {
    let (r, w) = layered::split_layered(stream);
    Ok((ReadHalf::Layered(r), WriteHalf::Layered(w)))
}

/// A Unix socket whose listen backlog is full refuses at once with EAGAIN, where TCP would
/// queue or retransmit the SYN; retry with a short back-off so a burst of connections behaves
/// the same on both (the caller's connect timeout bounds the wait).
async fn connect_unix(path: &Path) -> io::Result<UnixStream> {
    let mut backoff = Duration::from_millis(1);
    loop {
        match UnixStream::connect(path).await {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_UNIX_BACKOFF);
            }
            other => return other,
        }
    }
}

const MAX_UNIX_BACKOFF: Duration = Duration::from_millis(50);

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Unix(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Layered(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteHalf::Unix(s) => Pin::new(s).poll_write(cx, buf),
            WriteHalf::Layered(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Unix(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Layered(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Unix(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Layered(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_round_trip_with_source_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, peer) = listener.accept().await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
            peer.ip()
        });
        let src: IpAddr = "127.0.0.7".parse().unwrap();
        let (mut r, mut w) = connect(&Endpoint::tcp(addr), Some(src)).await.unwrap();
        w.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        r.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        assert_eq!(server.await.unwrap(), src);
    }

    #[tokio::test]
    async fn unix_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqtt.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"hi").await.unwrap();
        });
        let ep = Endpoint::resolve(&Target::Unix { path: path.clone() }, &TlsOptions::default())
            .await
            .unwrap();
        let (mut r, _w) = connect(&ep, None).await.unwrap();
        let mut b = [0u8; 2];
        r.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hi");
        server.await.unwrap();
    }

    /// A TLS server with a fresh self-signed certificate for "localhost" that hands its first
    /// connection to `serve`; returns its address, the CA file to trust, and the directory
    /// holding it (removed when dropped). Accepted sockets get a 4 KiB receive buffer, so a
    /// client's writes fill the socket quickly when `serve` reads slowly.
    async fn tls_server<F, Fut>(serve: F) -> (SocketAddr, PathBuf, tempfile::TempDir)
    where
        F: FnOnce(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(8).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            serve(acceptor.accept(s).await.unwrap()).await;
        });
        (addr, ca, dir)
    }

    /// A TLS echo server (WebSocket inside TLS when `ws`); see [`tls_server`].
    async fn tls_echo(ws: bool) -> (SocketAddr, PathBuf, tempfile::TempDir) {
        tls_server(move |tls| async move {
            if ws {
                echo_ws(tls).await;
            } else {
                let (mut r, mut w) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        })
        .await
    }

    // The callback's error type is tungstenite's (a full HTTP response), not ours to shrink.
    #[allow(clippy::result_large_err)]
    async fn echo_ws<S: AsyncRead + AsyncWrite + Unpin>(s: S) {
        use futures_core::Stream;
        use futures_sink::Sink;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        use tokio_tungstenite::tungstenite::http::HeaderValue;
        // Accept the `mqtt` subprotocol, as an MQTT broker must.
        let select_mqtt = |_: &Request, mut resp: Response| {
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(s, select_mqtt)
            .await
            .unwrap();
        let mut ws = Pin::new(&mut ws);
        while let Some(Ok(Message::Binary(b))) =
            std::future::poll_fn(|cx| ws.as_mut().poll_next(cx)).await
        {
            std::future::poll_fn(|cx| ws.as_mut().poll_ready(cx))
                .await
                .unwrap();
            ws.as_mut().start_send(Message::Binary(b)).unwrap();
            std::future::poll_fn(|cx| ws.as_mut().poll_flush(cx))
                .await
                .unwrap();
        }
    }

    /// [`read_slowly_then_answer`] behind a WebSocket server handshake: binary messages in,
    /// the count back as one binary message.
    #[allow(clippy::result_large_err)] // tungstenite's callback type, as in `echo_ws`
    async fn ws_read_slowly_then_answer<S: AsyncRead + AsyncWrite + Unpin>(s: S) {
        use futures_core::Stream;
        use futures_sink::Sink;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
        use tokio_tungstenite::tungstenite::http::HeaderValue;
        let select_mqtt = |_: &Request, mut resp: Response| {
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(s, select_mqtt)
            .await
            .unwrap();
        let mut ws = Pin::new(&mut ws);
        let mut got = 0;
        while got < SLOW_TOTAL {
            match std::future::poll_fn(|cx| ws.as_mut().poll_next(cx)).await {
                Some(Ok(Message::Binary(b))) => got += b.len(),
                other => panic!("client stopped after {got} bytes: {other:?}"),
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let answer = (got as u64).to_be_bytes().to_vec();
        std::future::poll_fn(|cx| ws.as_mut().poll_ready(cx))
            .await
            .unwrap();
        ws.as_mut()
            .start_send(Message::Binary(answer.into()))
            .unwrap();
        std::future::poll_fn(|cx| ws.as_mut().poll_flush(cx))
            .await
            .unwrap();
    }

    async fn round_trip(url: &str, ca: PathBuf) {
        let tls = TlsOptions {
            ca_file: Some(ca),
            ..Default::default()
        };
        let ep = Endpoint::resolve(&Target::parse_url(url).unwrap(), &tls)
            .await
            .unwrap();
        let (mut r, mut w) = connect(&ep, None).await.unwrap();
        w.write_all(b"\x10\x00abc").await.unwrap();
        let mut b = [0u8; 5];
        r.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"\x10\x00abc");
    }

    #[tokio::test]
    async fn tls_round_trip_verifies_the_ca() {
        let (addr, ca, _dir) = tls_echo(false).await;
        round_trip(&format!("tls://localhost:{}", addr.port()), ca).await;
    }

    #[tokio::test]
    async fn wss_round_trip() {
        let (addr, ca, _dir) = tls_echo(true).await;
        round_trip(&format!("wss://localhost:{}/mqtt", addr.port()), ca).await;
    }

    /// Bytes the slow servers below expect before answering.
    const SLOW_TOTAL: usize = 4 << 20;

    /// Reads [`SLOW_TOTAL`] bytes slowly (so the client's socket stays full while it writes),
    /// then answers with the count as 8 bytes.
    async fn read_slowly_then_answer<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
        let mut got = 0;
        let mut buf = vec![0u8; 16 * 1024];
        while got < SLOW_TOTAL {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed after {got} bytes");
            got += n;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        s.write_all(&(got as u64).to_be_bytes()).await.unwrap();
        s.flush().await.unwrap();
    }

    /// Writes [`SLOW_TOTAL`] bytes to `url` over a socket with a small send buffer, then only
    /// reads: the answer comes only if every written byte left the process.
    async fn write_then_read_answer(url: &str, ca: PathBuf, addr: SocketAddr) {
        let tls = TlsOptions {
            ca_file: Some(ca),
            ..Default::default()
        };
        let ep = Endpoint::resolve(&Target::parse_url(url).unwrap(), &tls)
            .await
            .unwrap();
        // A small send buffer, so the socket refuses bytes long before the end.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (mut r, mut w) = split_layered(layer(&ep, stream).await.unwrap()).unwrap();
        let chunk = vec![0x5Au8; 100 * 1024];
        for _ in 0..SLOW_TOTAL / chunk.len() {
            w.write_all(&chunk).await.unwrap();
        }
        w.write_all(&chunk[..SLOW_TOTAL % chunk.len()])
            .await
            .unwrap();
        let mut answer = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut answer))
            .await
            .expect("every written byte reaches the server")
            .unwrap();
        assert_eq!(u64::from_be_bytes(answer), SLOW_TOTAL as u64);
    }

    /// A write that returns has left the process: TLS records that rustls encrypted but the
    /// socket did not take must not wait in rustls for a flush nobody calls (the load
    /// generator's tasks only ever `write`).
    #[tokio::test]
    async fn tls_writes_reach_the_socket_without_a_flush() {
        let (addr, ca, _dir) = tls_server(read_slowly_then_answer).await;
        let url = format!("tls://localhost:{}", addr.port());
        write_then_read_answer(&url, ca, addr).await;
    }

    /// The same over WebSocket inside TLS.
    #[tokio::test]
    async fn wss_writes_reach_the_socket_without_a_flush() {
        let (addr, ca, _dir) = tls_server(ws_read_slowly_then_answer).await;
        let url = format!("wss://localhost:{}/mqtt", addr.port());
        write_then_read_answer(&url, ca, addr).await;
    }

    #[tokio::test]
    async fn untrusted_certificate_is_refused() {
        let (addr, _ca, dir) = tls_echo(false).await;
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let wrong = dir.path().join("wrong-ca.pem");
        std::fs::write(&wrong, other.cert.pem()).unwrap();
        let tls = TlsOptions {
            ca_file: Some(wrong),
            ..Default::default()
        };
        let target = Target::parse_url(&format!("tls://localhost:{}", addr.port())).unwrap();
        let ep = Endpoint::resolve(&target, &tls).await.unwrap();
        assert!(connect(&ep, None).await.is_err());
    }

    #[tokio::test]
    async fn tls_options_on_plain_target_are_refused() {
        let tls = TlsOptions {
            insecure: true,
            ..Default::default()
        };
        let r = Endpoint::resolve(&Target::tcp("127.0.0.1", 1), &tls).await;
        assert!(matches!(r, Err(ResolveError::TlsUnused(_))));
    }

    #[test]
    fn display_names_the_layers() {
        let ep = Endpoint::tcp("127.0.0.1:1883".parse().unwrap());
        assert_eq!(ep.to_string(), "tcp://127.0.0.1:1883");
    }
}
