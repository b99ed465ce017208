//! Property tests of the whole codec through its public API: round trips of arbitrary valid
//! packets of both versions, `encoded_len` agreeing with `encode`, incremental decoding at every
//! split point, and decoding of arbitrary or corrupted bytes never panicking (and whatever it
//! accepts re-encoding to the same packet).

mod strategies;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use strategies::{connect, loose_v5_packet, packet, versioned_packet};
use tidegate_protocol::*;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Decodes until the buffer is exhausted (`Ok(None)`) or an error.
fn drain(d: &mut Decoder, buf: &mut BytesMut, out: &mut Vec<Packet>) -> Result<(), DecodeError> {
    while let Some(p) = d.decode(buf)? {
        out.push(p);
    }
    Ok(())
}

fn encode_all(packets: &[Packet], v: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    for p in packets {
        encode(p, v, &mut buf).expect("valid packet encodes");
    }
    buf
}

/// Feeds `bytes` to `d` in chunks cut at `cuts`, checking every accepted packet re-encodes to
/// itself in the decoder's version. Stops at the first error. Must never panic.
fn feed(d: &mut Decoder, bytes: &[u8], cuts: &[usize]) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut at = 0;
    for p in points {
        buf.extend_from_slice(&bytes[at..p]);
        at = p;
        loop {
            match d.decode(&mut buf) {
                Ok(Some(packet)) => {
                    let v = d.version().expect("version known after a packet");
                    let mut again = BytesMut::new();
                    encode(&packet, v, &mut again)
                        .unwrap_or_else(|e| panic!("decoded {packet:?} does not encode: {e}"));
                    let mut d2 = Decoder::with_version(v, u32::MAX);
                    assert_eq!(d2.decode(&mut again), Ok(Some(packet)));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fn decoders() -> [Decoder; 3] {
    [
        Decoder::new(1 << 20),
        Decoder::with_version(V5, 1 << 20),
        Decoder::with_version(V311, 1 << 20),
    ]
}

proptest! {
    #[test]
    fn valid_packets_round_trip((v, p) in versioned_packet()) {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        prop_assert_eq!(buf.len(), encoded_len(&p, v));
        prop_assert_eq!(try_encoded_len(&p, v), Ok(buf.len()));
        let mut d = Decoder::with_version(v, u32::MAX);
        prop_assert_eq!(d.decode(&mut buf), Ok(Some(p)));
        prop_assert!(buf.is_empty());
    }

    /// Whatever the encoder accepts, the decoder accepts and returns unchanged; whatever it
    /// refuses, it refuses without writing, and `try_encoded_len` agrees.
    #[test]
    fn encoder_never_emits_what_the_decoder_refuses(p in loose_v5_packet()) {
        let mut buf = BytesMut::new();
        match encode(&p, V5, &mut buf) {
            Ok(()) => {
                prop_assert_eq!(buf.len(), encoded_len(&p, V5));
                let mut d = Decoder::with_version(V5, u32::MAX);
                prop_assert_eq!(d.decode(&mut buf), Ok(Some(p)));
            }
            Err(e) => {
                prop_assert!(buf.is_empty());
                prop_assert_eq!(try_encoded_len(&p, V5), Err(e));
            }
        }
    }

    #[test]
    fn v5_packets_encoded_for_3_1_1_still_decode(p in packet(V5)) {
        let mut buf = BytesMut::new();
        if let Packet::Connect(_) | Packet::Auth(_) = p {
            // CONNECT carries its own version; AUTH does not exist in 3.1.1.
            prop_assert!(encode(&p, V311, &mut buf).is_err());
        } else if encode(&p, V311, &mut buf).is_ok() {
            prop_assert_eq!(buf.len(), encoded_len(&p, V311));
            let mut d = Decoder::with_version(V311, u32::MAX);
            let q = d.decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(q.packet_type(), p.packet_type());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_split_point_yields_the_same_packets(
        (v, packets) in prop_oneof![
            vec(packet(V311), 1..5).prop_map(|p| (V311, p)),
            vec(packet(V5), 1..5).prop_map(|p| (V5, p)),
        ]
    ) {
        let stream = encode_all(&packets, v);
        for split in 0..=stream.len() {
            let mut d = Decoder::with_version(v, u32::MAX);
            let mut buf = BytesMut::from(&stream[..split]);
            let mut out = Vec::new();
            drain(&mut d, &mut buf, &mut out).unwrap();
            buf.extend_from_slice(&stream[split..]);
            drain(&mut d, &mut buf, &mut out).unwrap();
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&out, &packets);
        }
    }

    #[test]
    fn server_decoder_reads_a_session_byte_by_byte(
        (v, first, rest) in prop_oneof![
            (connect(V311), vec(packet(V311), 0..4)).prop_map(|(c, r)| (V311, c, r)),
            (connect(V5), vec(packet(V5), 0..4)).prop_map(|(c, r)| (V5, c, r)),
        ]
    ) {
        let rest: Vec<Packet> = rest
            .into_iter()
            .filter(|p| !matches!(p, Packet::Connect(_)))
            .collect();
        let mut packets = vec![first];
        packets.extend(rest);
        let stream = encode_all(&packets, v);
        let mut d = Decoder::new(u32::MAX);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in stream.iter() {
            buf.extend_from_slice(&[*b]);
            drain(&mut d, &mut buf, &mut out).unwrap();
        }
        prop_assert_eq!(d.version(), Some(v));
        prop_assert_eq!(out, packets);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in vec(any::<u8>(), 0..256),
        cuts in vec(any::<usize>(), 0..4),
    ) {
        for mut d in decoders() {
            feed(&mut d, &bytes, &cuts);
        }
        // Also behind a valid CONNECT, so the server decoder reaches every packet type.
        for connect in [
            &b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"[..],
            &b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01c"[..],
        ] {
            let mut stream = connect.to_vec();
            stream.extend_from_slice(&bytes);
            feed(&mut Decoder::new(1 << 20), &stream, &cuts);
        }
    }

    #[test]
    fn corrupted_valid_streams_never_panic(
        (v, packets) in prop_oneof![
            vec(packet(V311), 1..4).prop_map(|p| (V311, p)),
            vec(packet(V5), 1..4).prop_map(|p| (V5, p)),
        ],
        flips in vec((any::<usize>(), 1..=255u8), 0..4),
        truncate in any::<usize>(),
        cuts in vec(any::<usize>(), 0..4),
    ) {
        let mut stream = encode_all(&packets, v).to_vec();
        for (at, x) in flips {
            let i = at % stream.len();
            stream[i] ^= x;
        }
        stream.truncate(truncate % (stream.len() + 1));
        for mut d in decoders() {
            feed(&mut d, &stream, &cuts);
        }
    }
}
