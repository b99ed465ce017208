//! # tidegate-protocol
//!
//! The MQTT 3.1.1 and 5.0 codec of Tidegate: every packet, property and reason code of both
//! versions, as plain Rust values, with an incremental decoder and an encoder. It holds no IO
//! and reads no clock: the connection driver in `tidegate-server` feeds it bytes, the session
//! engine in `tidegate-core` consumes and produces its [`Packet`] values.
//!
//! Place in the data flow: `socket bytes -> Decoder -> Packet -> core` and
//! `core -> Packet -> encode -> socket bytes`.
//!
//! Decoding is check-then-parse: the fixed header is peeked first and the remaining length is
//! compared with the configured maximum packet size *before* any byte of the body is buffered
//! or parsed, so a peer cannot make the gateway allocate for an oversized packet. An incomplete
//! frame is a normal result (`Ok(None)`), never an error.

mod codec;
mod error;
pub mod packet;
mod properties;
mod property_codec;
mod reason;
mod string;
pub mod topic;
mod types;
mod wire;

pub use codec::{Decoder, encode, encoded_len, try_encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::*;
pub use reason::ReasonCode;
pub use string::{Utf8, Utf8Error};
pub use types::{PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
