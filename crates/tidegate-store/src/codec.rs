//! The byte encoding of records for backends that store bytes (the disk backend; a Redis
//! backend would use it too): a small hand-written format, versioned by a leading byte.
//!
//! Place in the data flow: `record -> encode -> backend value` on write, `backend value ->
//! decode -> record` at start-up and on queue loads. Decoding never panics on bad input: a
//! damaged value is a [`DecodeError`] that the backend turns into
//! [`StoreError::Corrupt`](crate::StoreError::Corrupt) naming the record.
//!
//! Why not serde: the protocol types carry no serde derives, the records are few and small,
//! and an explicit layout keeps the on-disk format a deliberate, reviewed contract. Integers
//! are big-endian; strings and byte strings are a `u32` length then the bytes; an `Option` is a
//! 0/1 byte then the value.

use crate::record::{
    InflightRecord, InflightStage, MessageRecord, PendingWillRecord, Presence, QueuedRecord,
    SessionRecord, SubscriptionRecord, TenantRecord, UnixMillis,
};
use bytes::Bytes;
use std::sync::Arc;
use tidegate_protocol::{
    PacketId, PublishProperties, QoS, RetainHandling, SubscriptionOptions, Utf8, Will,
    WillProperties,
};

/// The format this build writes and reads (the first byte of every value).
pub const FORMAT: u8 = 1;

/// Why a value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The value ends before a field it announces.
    #[error("truncated value")]
    Truncated,
    /// A field holds a value no encoder writes.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The value was written by another format.
    #[error("format {0}, expected {FORMAT}")]
    Format(u8),
    /// Bytes are left after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Appends fields to a value.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new() -> Writer {
        Writer { buf: vec![FORMAT] }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    fn bytes(&mut self, v: &[u8]) {
        // Values come from MQTT packets, whose fields are far below 4 GiB.
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
    }
    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Writer, T)) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
        }
    }
    fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields from a value.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Result<Reader<'a>, DecodeError> {
        let (&format, rest) = buf.split_first().ok_or(DecodeError::Truncated)?;
        if format != FORMAT {
            return Err(DecodeError::Format(format));
        }
        Ok(Reader { buf: rest })
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid("boolean")),
        }
    }
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::try_from(self.u32()?).map_err(|_| DecodeError::Invalid("length"))?;
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
    fn utf8(&mut self) -> Result<Utf8, DecodeError> {
        Utf8::try_from_bytes(self.bytes()?).map_err(|_| DecodeError::Invalid("string"))
    }
    fn string(&mut self) -> Result<Arc<str>, DecodeError> {
        Ok(Arc::from(self.utf8()?.as_str()))
    }
    fn opt<T>(
        &mut self,
        f: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(DecodeError::Invalid("option tag")),
        }
    }
    fn qos(&mut self) -> Result<QoS, DecodeError> {
        QoS::from_u8(self.u8()?).ok_or(DecodeError::Invalid("QoS"))
    }
    fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16()?).ok_or(DecodeError::Invalid("packet id 0"))
    }
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.u32()?).map_err(|_| DecodeError::Invalid("count"))?;
        // Each element takes at least one byte: a larger count is damage, and must not make us
        // reserve memory for it.
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }
    fn end(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

fn put_user_properties(w: &mut Writer, props: &[(Utf8, Utf8)]) {
    w.u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
    for (k, v) in props {
        w.bytes(k.as_bytes());
        w.bytes(v.as_bytes());
    }
}

fn get_user_properties(r: &mut Reader<'_>) -> Result<Vec<(Utf8, Utf8)>, DecodeError> {
    let n = r.count()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((r.utf8()?, r.utf8()?));
    }
    Ok(out)
}

fn put_publish_properties(w: &mut Writer, p: &PublishProperties) {
    w.opt(p.payload_format_indicator, Writer::bool);
    w.opt(p.message_expiry_interval, Writer::u32);
    w.opt(p.topic_alias, Writer::u16);
    w.opt(p.response_topic.as_ref(), |w, v| w.bytes(v.as_bytes()));
    w.opt(p.correlation_data.as_ref(), |w, v| w.bytes(v));
    put_user_properties(w, &p.user_properties);
    w.u32(u32::try_from(p.subscription_identifiers.len()).unwrap_or(u32::MAX));
    for id in &p.subscription_identifiers {
        w.u32(*id);
    }
    w.opt(p.content_type.as_ref(), |w, v| w.bytes(v.as_bytes()));
}

fn get_publish_properties(r: &mut Reader<'_>) -> Result<PublishProperties, DecodeError> {
    let payload_format_indicator = r.opt(Reader::bool)?;
    let message_expiry_interval = r.opt(Reader::u32)?;
    let topic_alias = r.opt(Reader::u16)?;
    let response_topic = r.opt(Reader::utf8)?;
    let correlation_data = r.opt(Reader::bytes)?;
    let user_properties = get_user_properties(r)?;
    let n = r.count()?;
    let mut subscription_identifiers = Vec::with_capacity(n);
    for _ in 0..n {
        subscription_identifiers.push(r.u32()?);
    }
    let content_type = r.opt(Reader::utf8)?;
    Ok(PublishProperties {
        payload_format_indicator,
        message_expiry_interval,
        topic_alias,
        response_topic,
        correlation_data,
        user_properties,
        subscription_identifiers,
        content_type,
    })
}

fn put_message(w: &mut Writer, m: &MessageRecord) {
    w.bytes(m.topic.as_bytes());
    w.bytes(&m.payload);
    w.u8(m.qos.as_u8());
    w.bool(m.retain);
    put_publish_properties(w, &m.properties);
    w.opt(m.expires_at, |w, t| w.u64(t.0));
    w.opt(m.publisher.as_deref(), |w, p| w.bytes(p.as_bytes()));
}

fn get_message(r: &mut Reader<'_>) -> Result<MessageRecord, DecodeError> {
    Ok(MessageRecord {
        topic: r.utf8()?,
        payload: r.bytes()?,
        qos: r.qos()?,
        retain: r.bool()?,
        properties: get_publish_properties(r)?,
        expires_at: r.opt(Reader::u64)?.map(UnixMillis),
        publisher: r.opt(Reader::string)?,
    })
}

fn put_queued(w: &mut Writer, q: &QueuedRecord) {
    w.u8(q.qos.as_u8());
    w.bool(q.retain);
    w.u32(u32::try_from(q.subscription_identifiers.len()).unwrap_or(u32::MAX));
    for id in &q.subscription_identifiers {
        w.u32(*id);
    }
    put_message(w, &q.message);
}

fn get_queued(r: &mut Reader<'_>) -> Result<QueuedRecord, DecodeError> {
    let qos = r.qos()?;
    let retain = r.bool()?;
    let n = r.count()?;
    let mut subscription_identifiers = Vec::with_capacity(n);
    for _ in 0..n {
        subscription_identifiers.push(r.u32()?);
    }
    Ok(QueuedRecord {
        qos,
        retain,
        subscription_identifiers,
        message: Arc::new(get_message(r)?),
    })
}

fn put_will(w: &mut Writer, will: &Will) {
    w.bytes(will.topic.as_bytes());
    w.bytes(&will.payload);
    w.u8(will.qos.as_u8());
    w.bool(will.retain);
    let p = &will.properties;
    w.opt(p.will_delay_interval, Writer::u32);
    w.opt(p.payload_format_indicator, Writer::bool);
    w.opt(p.message_expiry_interval, Writer::u32);
    w.opt(p.content_type.as_ref(), |w, v| w.bytes(v.as_bytes()));
    w.opt(p.response_topic.as_ref(), |w, v| w.bytes(v.as_bytes()));
    w.opt(p.correlation_data.as_ref(), |w, v| w.bytes(v));
    put_user_properties(w, &p.user_properties);
}

fn get_will(r: &mut Reader<'_>) -> Result<Will, DecodeError> {
    Ok(Will {
        topic: r.utf8()?,
        payload: r.bytes()?,
        qos: r.qos()?,
        retain: r.bool()?,
        properties: WillProperties {
            will_delay_interval: r.opt(Reader::u32)?,
            payload_format_indicator: r.opt(Reader::bool)?,
            message_expiry_interval: r.opt(Reader::u32)?,
            content_type: r.opt(Reader::utf8)?,
            response_topic: r.opt(Reader::utf8)?,
            correlation_data: r.opt(Reader::bytes)?,
            user_properties: get_user_properties(r)?,
        },
    })
}

/// Encodes a message (the retained store's values).
pub fn encode_message(m: &MessageRecord) -> Vec<u8> {
    let mut w = Writer::new();
    put_message(&mut w, m);
    w.finish()
}

/// Decodes what [`encode_message`] wrote.
pub fn decode_message(b: &[u8]) -> Result<MessageRecord, DecodeError> {
    let mut r = Reader::new(b)?;
    let m = get_message(&mut r)?;
    r.end()?;
    Ok(m)
}

/// Encodes a queued delivery. Its delivery QoS is the first byte after the format, so the queue
/// index can be read without decoding the message ([`queued_qos`]).
pub fn encode_queued(q: &QueuedRecord) -> Vec<u8> {
    let mut w = Writer::new();
    put_queued(&mut w, q);
    w.finish()
}

/// Decodes what [`encode_queued`] wrote.
pub fn decode_queued(b: &[u8]) -> Result<QueuedRecord, DecodeError> {
    let mut r = Reader::new(b)?;
    let q = get_queued(&mut r)?;
    r.end()?;
    Ok(q)
}

/// The delivery QoS of an encoded queued delivery, without decoding the rest.
pub fn queued_qos(b: &[u8]) -> Result<QoS, DecodeError> {
    Reader::new(b)?.qos()
}

/// Encodes an inflight entry (its packet id is part of the key, but is repeated here so the
/// value is whole).
pub fn encode_inflight(i: &InflightRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(i.packet_id.get());
    w.u64(i.seq);
    match &i.stage {
        InflightStage::AwaitingAck(q) => {
            w.u8(1);
            put_queued(&mut w, q);
        }
        InflightStage::AwaitingRec(q) => {
            w.u8(2);
            put_queued(&mut w, q);
        }
        InflightStage::AwaitingComp => w.u8(3),
    }
    w.finish()
}

/// Decodes what [`encode_inflight`] wrote.
pub fn decode_inflight(b: &[u8]) -> Result<InflightRecord, DecodeError> {
    let mut r = Reader::new(b)?;
    let packet_id = r.packet_id()?;
    let seq = r.u64()?;
    let stage = match r.u8()? {
        1 => InflightStage::AwaitingAck(get_queued(&mut r)?),
        2 => InflightStage::AwaitingRec(get_queued(&mut r)?),
        3 => InflightStage::AwaitingComp,
        _ => return Err(DecodeError::Invalid("inflight stage")),
    };
    r.end()?;
    Ok(InflightRecord {
        packet_id,
        seq,
        stage,
    })
}

/// Encodes a subscription.
pub fn encode_subscription(s: &SubscriptionRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(s.filter.as_bytes());
    w.u8(s.options.qos.as_u8());
    w.bool(s.options.no_local);
    w.bool(s.options.retain_as_published);
    w.u8(s.options.retain_handling as u8);
    w.opt(s.identifier, Writer::u32);
    w.finish()
}

/// Decodes what [`encode_subscription`] wrote.
pub fn decode_subscription(b: &[u8]) -> Result<SubscriptionRecord, DecodeError> {
    let mut r = Reader::new(b)?;
    let filter = r.string()?;
    let qos = r.qos()?;
    let no_local = r.bool()?;
    let retain_as_published = r.bool()?;
    let retain_handling = match r.u8()? {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::Invalid("retain handling")),
    };
    let identifier = r.opt(Reader::u32)?;
    r.end()?;
    Ok(SubscriptionRecord {
        filter,
        options: SubscriptionOptions {
            qos,
            no_local,
            retain_as_published,
            retain_handling,
        },
        identifier,
    })
}

/// Encodes a session record.
pub fn encode_session(s: &SessionRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(s.client_id.as_bytes());
    w.u32(s.expiry_interval);
    match &s.presence {
        Presence::Connected { will } => {
            w.u8(1);
            w.opt(will.as_ref(), put_will);
        }
        Presence::Offline { expires_at, will } => {
            w.u8(2);
            w.opt(*expires_at, |w, t| w.u64(t.0));
            w.opt(will.as_ref(), |w, p| {
                put_will(w, &p.will);
                w.opt(p.publish_at, |w, t| w.u64(t.0));
            });
        }
    }
    w.finish()
}

/// Decodes what [`encode_session`] wrote.
pub fn decode_session(b: &[u8]) -> Result<SessionRecord, DecodeError> {
    let mut r = Reader::new(b)?;
    let client_id = r.string()?;
    let expiry_interval = r.u32()?;
    let presence = match r.u8()? {
        1 => Presence::Connected {
            will: r.opt(get_will)?,
        },
        2 => Presence::Offline {
            expires_at: r.opt(Reader::u64)?.map(UnixMillis),
            will: r.opt(|r| {
                Ok(PendingWillRecord {
                    will: get_will(r)?,
                    publish_at: r.opt(Reader::u64)?.map(UnixMillis),
                })
            })?,
        },
        _ => return Err(DecodeError::Invalid("presence")),
    };
    r.end()?;
    Ok(SessionRecord {
        client_id,
        expiry_interval,
        presence,
    })
}

/// Encodes a tenant record (the `tenants` table's values).
pub fn encode_tenant(t: &TenantRecord) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(t.id.as_bytes());
    w.opt(t.config.as_ref(), |w, v| w.bytes(v));
    w.finish()
}

/// Decodes what [`encode_tenant`] wrote.
pub fn decode_tenant(b: &[u8]) -> Result<TenantRecord, DecodeError> {
    let mut r = Reader::new(b)?;
    let id = r.bytes()?;
    let id = std::str::from_utf8(&id).map_err(|_| DecodeError::Invalid("tenant id"))?;
    let config = r.opt(Reader::bytes)?;
    r.end()?;
    Ok(TenantRecord {
        id: Arc::from(id),
        config,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_message(topic: &str, payload: &'static [u8]) -> MessageRecord {
        MessageRecord {
            topic: Utf8::try_from(topic).unwrap(),
            payload: Bytes::from_static(payload),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: PublishProperties {
                payload_format_indicator: Some(true),
                response_topic: Some(Utf8::from_static("reply/to")),
                correlation_data: Some(Bytes::from_static(b"\x00\x01")),
                user_properties: vec![(Utf8::from_static("k"), Utf8::from_static("v"))],
                content_type: Some(Utf8::from_static("text/plain")),
                ..PublishProperties::default()
            },
            expires_at: Some(UnixMillis(1_700_000_000_123)),
            publisher: Some(Arc::from("pub-1")),
        }
    }

    fn queued() -> QueuedRecord {
        QueuedRecord {
            message: Arc::new(sample_message("a/b", b"payload")),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_identifiers: vec![3, 268_435_455],
        }
    }

    #[test]
    fn every_record_round_trips() {
        let m = sample_message("a/b", b"x");
        assert_eq!(decode_message(&encode_message(&m)).unwrap(), m);
        let q = queued();
        let bytes = encode_queued(&q);
        assert_eq!(decode_queued(&bytes).unwrap(), q);
        assert_eq!(queued_qos(&bytes).unwrap(), QoS::AtLeastOnce);
        for stage in [
            InflightStage::AwaitingAck(q.clone()),
            InflightStage::AwaitingRec(q.clone()),
            InflightStage::AwaitingComp,
        ] {
            let i = InflightRecord {
                packet_id: PacketId::new(65535).unwrap(),
                seq: 9,
                stage,
            };
            assert_eq!(decode_inflight(&encode_inflight(&i)).unwrap(), i);
        }
        let s = SubscriptionRecord {
            filter: Arc::from("$share/g/a/+"),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
            identifier: Some(42),
        };
        assert_eq!(decode_subscription(&encode_subscription(&s)).unwrap(), s);
        let will = Will {
            topic: Utf8::from_static("will/t"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(30),
                message_expiry_interval: Some(5),
                ..WillProperties::default()
            },
        };
        for presence in [
            Presence::Connected {
                will: Some(will.clone()),
            },
            Presence::Connected { will: None },
            Presence::Offline {
                expires_at: Some(UnixMillis(5)),
                will: Some(PendingWillRecord {
                    will,
                    publish_at: None,
                }),
            },
            Presence::Offline {
                expires_at: None,
                will: None,
            },
        ] {
            let s = SessionRecord {
                client_id: Arc::from("phone-1"),
                expiry_interval: u32::MAX,
                presence,
            };
            assert_eq!(decode_session(&encode_session(&s)).unwrap(), s);
        }
    }

    #[test]
    fn tenant_records_round_trip_and_refuse_damage() {
        for config in [Some(Bytes::from_static(br#"{"id":"acme"}"#)), None] {
            let t = TenantRecord {
                id: Arc::from("acme"),
                config,
            };
            let bytes = encode_tenant(&t);
            assert_eq!(decode_tenant(&bytes).unwrap(), t);
            for cut in 0..bytes.len() {
                assert!(decode_tenant(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
        let mut w = Writer::new();
        w.bytes(&[0xff, 0xfe]);
        w.u8(0);
        assert_eq!(
            decode_tenant(&w.finish()),
            Err(DecodeError::Invalid("tenant id"))
        );
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let good = encode_queued(&queued());
        // Every truncation, and every single-byte corruption, decodes to an error or to some
        // record, never a panic.
        for cut in 0..good.len() {
            assert!(decode_queued(&good[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0xff;
            let _ = decode_queued(&bad);
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode_queued(&trailing), Err(DecodeError::Trailing(1)));
        let mut other_format = good;
        other_format[0] = 9;
        assert_eq!(decode_queued(&other_format), Err(DecodeError::Format(9)));
        // A huge announced count is refused before anything is reserved for it.
        let mut w = Writer::new();
        w.u32(u32::MAX);
        assert_eq!(
            get_user_properties(&mut Reader::new(&w.finish()).unwrap()),
            Err(DecodeError::Truncated)
        );
    }
}
