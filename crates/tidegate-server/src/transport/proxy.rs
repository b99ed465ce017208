//! The PROXY protocol, versions 1 (text) and 2 (binary), as sent by cloud load balancers
//! (HAProxy's specification, `proxy-protocol.txt`).
//!
//! Place in the data flow: the first transport step of a listener with `proxy_protocol = true`,
//! before TLS and WebSocket: `accept --> read_header --> [TLS] --> ...`. The header's source
//! address replaces the socket's peer address in the [`tidegate_core::ConnInfo`], so logs and
//! limits see the real client rather than the balancer.
//!
//! The header is read with `peek` and then exactly its own length is consumed, so not one byte
//! of what follows (a TLS ClientHello, an MQTT CONNECT) is taken from the socket and no
//! "leftover" buffer has to travel with the stream. A listener that requires the header
//! refuses a connection without one: accepting both would let any client forge its address.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The 12 bytes every v2 header starts with.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED: usize = 16;
/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;
/// How much is peeked at once: a whole v1 line, or a v2 header with IPv6 addresses and a
/// few TLVs. Longer v2 headers are read in one exact read once their length is known.
const PEEK: usize = 256;
/// Pause before peeking again when the header is still incomplete: `peek` returns at once
/// while any byte is waiting, so without it a slow sender would make this task spin.
const PEEK_PAUSE: Duration = Duration::from_millis(5);

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyHeader {
    /// The connection was relayed for this client.
    Proxied {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to (the balancer's front end).
        destination: SocketAddr,
    },
    /// The balancer's own connection (v2 LOCAL, a health check) or an unknown protocol (v1
    /// UNKNOWN, v2 UNSPEC or Unix): the socket's own addresses stand.
    Local,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProxyError {
    /// The connection does not start with a PROXY header.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// A v1 line that does not follow the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// A v2 header that does not follow the format.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    /// The peer closed before the header was complete.
    #[error("connection closed inside the PROXY header")]
    Truncated,
    /// Reading the socket failed.
    #[error("reading the PROXY header: {0}")]
    Io(io::ErrorKind),
}

/// The result of parsing the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A whole header of `len` bytes.
    Complete(ProxyHeader, usize),
    /// More bytes are needed; `total` is the header's full length once it is known.
    Partial {
        /// The full length of a v2 header whose fixed part was received.
        total: Option<usize>,
    },
}

/// Parses the header at the start of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let partial = Ok(Parsed::Partial { total: None });
    if buf.first() == Some(&b'P') {
        return parse_v1(buf);
    }
    let prefix = buf.len().min(V2_SIGNATURE.len());
    if buf.get(..prefix) != V2_SIGNATURE.get(..prefix) {
        return Err(ProxyError::Missing);
    }
    if buf.len() < V2_FIXED {
        return partial;
    }
    parse_v2(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    const PREFIX: &[u8] = b"PROXY ";
    let prefix = buf.len().min(PREFIX.len());
    if buf.get(..prefix) != PREFIX.get(..prefix) {
        return Err(ProxyError::Missing);
    }
    let window = buf.get(..buf.len().min(V1_MAX)).unwrap_or(buf);
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::V1("no CRLF within 107 bytes"))
        } else {
            Ok(Parsed::Partial { total: None })
        };
    };
    let line = std::str::from_utf8(window.get(..end).unwrap_or_default())
        .map_err(|_| ProxyError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", checked above
    let header = match fields.next() {
        Some("UNKNOWN") => ProxyHeader::Local,
        Some(protocol @ ("TCP4" | "TCP6")) => {
            let v4 = protocol == "TCP4";
            let mut next = || fields.next().ok_or(ProxyError::V1("missing field"));
            let source_ip = v1_ip(next()?, v4)?;
            let destination_ip = v1_ip(next()?, v4)?;
            let source_port = v1_port(next()?)?;
            let destination_port = v1_port(next()?)?;
            if fields.next().is_some() {
                return Err(ProxyError::V1("too many fields"));
            }
            ProxyHeader::Proxied {
                source: SocketAddr::new(source_ip, source_port),
                destination: SocketAddr::new(destination_ip, destination_port),
            }
        }
        _ => return Err(ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(Parsed::Complete(header, end + 2))
}

fn v1_ip(field: &str, v4: bool) -> Result<IpAddr, ProxyError> {
    let ip = if v4 {
        field.parse::<Ipv4Addr>().map(IpAddr::V4)
    } else {
        field.parse::<Ipv6Addr>().map(IpAddr::V6)
    };
    ip.map_err(|_| ProxyError::V1("bad address"))
}

fn v1_port(field: &str) -> Result<u16, ProxyError> {
    // The grammar allows digits only: `u16::from_str` would also take a leading '+'.
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::V1("bad port"));
    }
    field.parse().map_err(|_| ProxyError::V1("bad port"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let byte = |i: usize| buf.get(i).copied().unwrap_or(0);
    let version_command = byte(12);
    if version_command >> 4 != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let family = byte(13);
    let len = usize::from(u16::from_be_bytes([byte(14), byte(15)]));
    let total = V2_FIXED + len;
    let Some(block) = buf.get(V2_FIXED..total) else {
        return Ok(Parsed::Partial { total: Some(total) });
    };
    let header = match version_command & 0x0F {
        0 => ProxyHeader::Local,
        1 => v2_addresses(family, block)?,
        _ => return Err(ProxyError::V2("command is neither LOCAL nor PROXY")),
    };
    Ok(Parsed::Complete(header, total))
}

fn v2_addresses(family: u8, block: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let short = ProxyError::V2("address block shorter than its family needs");
    let port = |at: usize| slice::<2>(block, at, short.clone()).map(u16::from_be_bytes);
    // High nibble: address family; low nibble: transport (1 stream, 2 datagram).
    match family >> 4 {
        1 => {
            let a: [u8; 4] = slice(block, 0, short.clone())?;
            let b: [u8; 4] = slice(block, 4, short.clone())?;
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::from(a), port(8)?),
                destination: SocketAddr::new(IpAddr::from(b), port(10)?),
            })
        }
        2 => {
            let a: [u8; 16] = slice(block, 0, short.clone())?;
            let b: [u8; 16] = slice(block, 16, short.clone())?;
            Ok(ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::from(a), port(32)?),
                destination: SocketAddr::new(IpAddr::from(b), port(34)?),
            })
        }
        // UNSPEC and AF_UNIX carry no IP address.
        0 | 3 => Ok(ProxyHeader::Local),
        _ => Err(ProxyError::V2("unknown address family")),
    }
}

fn slice<const N: usize>(block: &[u8], at: usize, err: ProxyError) -> Result<[u8; N], ProxyError> {
    block
        .get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(err)
}

/// Reads the PROXY header at the start of `stream`, consuming exactly its bytes.
pub(crate) async fn read_header(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyError> {
    let io = |e: io::Error| ProxyError::Io(e.kind());
    let mut buf = [0u8; PEEK];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Err(ProxyError::Truncated);
        }
        let received = buf.get(..n).unwrap_or_default();
        match parse(received)? {
            Parsed::Complete(header, len) => {
                let consumed = buf.get_mut(..len).unwrap_or_default();
                stream.read_exact(consumed).await.map_err(io)?;
                return Ok(header);
            }
            Parsed::Partial { total: Some(total) } if total > PEEK => {
                // A v2 header with a long TLV tail: its length is known, read it whole.
                let mut whole = vec![0u8; total];
                stream.read_exact(&mut whole).await.map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        ProxyError::Truncated
                    } else {
                        io(e)
                    }
                })?;
                return match parse(&whole)? {
                    Parsed::Complete(header, _) => Ok(header),
                    Parsed::Partial { .. } => Err(ProxyError::Truncated),
                };
            }
            Parsed::Partial { .. } => {
                if n == seen {
                    tokio::time::sleep(PEEK_PAUSE).await;
                }
                seen = n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (ProxyHeader, usize) {
        match parse(buf).unwrap() {
            Parsed::Complete(header, len) => (header, len),
            other => panic!("incomplete: {other:?}"),
        }
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nMQTT...";
        let (header, len) = complete(line);
        assert_eq!(len, line.len() - 7);
        assert_eq!(
            header,
            ProxyHeader::Proxied {
                source: "192.0.2.7:56324".parse().unwrap(),
                destination: "198.51.100.1:443".parse().unwrap(),
            }
        );
        let (header, _) = complete(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n");
        assert!(matches!(header, ProxyHeader::Proxied { source, .. } if source.port() == 1));
        assert_eq!(
            complete(b"PROXY UNKNOWN ffff 1 2 3\r\n").0,
            ProxyHeader::Local
        );
    }

    #[test]
    fn v1_errors() {
        for (bad, what) in [
            (&b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..], "missing field"),
            (b"PROXY TCP4 ::1 ::1 1 2\r\n", "bad address"),
            (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", "bad address"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "bad port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n", "bad port"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "too many fields"),
            (
                b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ),
        ] {
            assert_eq!(parse(bad), Err(ProxyError::V1(what)), "{bad:?}");
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 120]].concat();
        assert_eq!(
            parse(&long),
            Err(ProxyError::V1("no CRLF within 107 bytes"))
        );
    }

    #[test]
    fn anything_else_is_missing_not_partial() {
        assert_eq!(parse(b"\x10\x0e\x00\x04MQTT"), Err(ProxyError::Missing));
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyError::Missing));
        assert_eq!(parse(b"PRoXY"), Err(ProxyError::Missing));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
    }

    #[test]
    fn prefixes_are_partial() {
        let full = v2(
            1,
            0x11,
            &[127, 0, 0, 2, 127, 0, 0, 1, 0x30, 0x39, 0x07, 0x5B],
        );
        for cut in 1..full.len() {
            match parse(&full[..cut]).unwrap() {
                Parsed::Partial { total } => {
                    assert_eq!(total, (cut >= V2_FIXED).then_some(full.len()), "{cut}");
                }
                other => panic!("{cut}: {other:?}"),
            }
        }
        let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        for cut in 1..line.len() {
            assert_eq!(
                parse(&line[..cut]),
                Ok(Parsed::Partial { total: None }),
                "{cut}"
            );
        }
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_tlvs() {
        let ipv4 = v2(
            1,
            0x11,
            &[127, 0, 0, 2, 127, 0, 0, 1, 0x30, 0x39, 0x07, 0x5B],
        );
        let (header, len) = complete(&[ipv4.as_slice(), b"\x10rest"].concat());
        assert_eq!(len, 28);
        assert_eq!(
            header,
            ProxyHeader::Proxied {
                source: "127.0.0.2:12345".parse().unwrap(),
                destination: "127.0.0.1:1883".parse().unwrap(),
            }
        );
        let mut block = [0u8; 36];
        block[15] = 1; // ::1
        block[31] = 2; // ::2
        block[32..34].copy_from_slice(&8883u16.to_be_bytes());
        block[34..36].copy_from_slice(&443u16.to_be_bytes());
        let (header, _) = complete(&v2(1, 0x21, &block));
        assert_eq!(
            header,
            ProxyHeader::Proxied {
                source: "[::1]:8883".parse().unwrap(),
                destination: "[::2]:443".parse().unwrap(),
            }
        );
        // LOCAL ignores the family; TLVs after the addresses are skipped.
        assert_eq!(complete(&v2(0, 0x11, &[0; 12])).0, ProxyHeader::Local);
        let with_tlv = [
            &[127, 0, 0, 2, 127, 0, 0, 1, 0, 1, 0, 2][..],
            &[0x04, 0, 3, b'a', b'b', b'c'],
        ]
        .concat();
        assert_eq!(complete(&v2(1, 0x11, &with_tlv)).1, 16 + 18);
        assert_eq!(complete(&v2(1, 0x00, &[])).0, ProxyHeader::Local);
    }

    #[test]
    fn v2_errors() {
        let mut bad_version = v2(1, 0x11, &[0; 12]);
        bad_version[12] = 0x11;
        assert_eq!(parse(&bad_version), Err(ProxyError::V2("version is not 2")));
        assert!(matches!(
            parse(&v2(2, 0x11, &[0; 12])),
            Err(ProxyError::V2(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x11, &[0; 8])),
            Err(ProxyError::V2(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x21, &[0; 12])),
            Err(ProxyError::V2(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x41, &[0; 12])),
            Err(ProxyError::V2(_))
        ));
    }

    #[tokio::test]
    async fn read_header_consumes_exactly_the_header() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        // Sent in two pieces, so the reader has to wait for the rest.
        client.write_all(b"PROXY TCP4 10.1.2.3 ").await.unwrap();
        let reader = tokio::spawn(async move {
            let header = read_header(&mut server).await;
            let mut rest = [0u8; 4];
            server.read_exact(&mut rest).await.unwrap();
            (header, rest)
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        client
            .write_all(b"10.0.0.1 4000 1883\r\nMQTT")
            .await
            .unwrap();
        let (header, rest) = reader.await.unwrap();
        assert_eq!(
            header.unwrap(),
            ProxyHeader::Proxied {
                source: "10.1.2.3:4000".parse().unwrap(),
                destination: "10.0.0.1:1883".parse().unwrap(),
            }
        );
        assert_eq!(&rest, b"MQTT");
    }

    #[tokio::test]
    async fn read_header_takes_long_v2_headers_whole() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut block = vec![192, 0, 2, 1, 192, 0, 2, 2, 0, 7, 0, 8];
        block.extend_from_slice(&[0x20, 0x01, 0xF4]);
        block.extend_from_slice(&[b'z'; 500]);
        let header = [v2(1, 0x11, &block), b"tail".to_vec()].concat();
        client.write_all(&header).await.unwrap();
        let parsed = read_header(&mut server).await.unwrap();
        assert!(matches!(parsed, ProxyHeader::Proxied { source, .. } if source.port() == 7));
        let mut rest = [0u8; 4];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"tail");
    }
}
