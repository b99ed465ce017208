//! Fuzz target: arbitrary bytes into the decoder, fed in two chunks, to a fresh server-side
//! decoder (CONNECT first) and to MQTT 5.0 and 3.1.1 decoders. Decoding must never panic, and
//! every packet it accepts must encode again in the decoder's version and decode to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidegate_protocol::{Decoder, ProtocolVersion, encode, encoded_len};

fn run(mut decoder: Decoder, data: &[u8], split: usize) {
    let mut buf = BytesMut::new();
    for chunk in [&data[..split], &data[split..]] {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    let version = decoder.version().expect("known after a packet");
                    let mut out = BytesMut::new();
                    encode(&packet, version, &mut out).expect("accepted packet re-encodes");
                    assert_eq!(out.len(), encoded_len(&packet, version));
                    let mut check = Decoder::with_version(version, u32::MAX);
                    assert_eq!(check.decode(&mut out), Ok(Some(packet)));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the split point so chunk boundaries are explored too.
    let Some((&s, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(s) % (rest.len() + 1);
    run(Decoder::new(1 << 20), rest, split);
    run(
        Decoder::with_version(ProtocolVersion::V5, 1 << 20),
        rest,
        split,
    );
    run(
        Decoder::with_version(ProtocolVersion::V311, 1 << 20),
        rest,
        split,
    );
});
