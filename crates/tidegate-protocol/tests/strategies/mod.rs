//! proptest strategies producing arbitrary *valid* packets for one protocol version: every
//! field within the spec's ranges, properties and reason codes only in 5.0, reason codes drawn
//! from the set the packet kind allows. The allowed sets are restated here from the spec
//! rather than borrowed from the crate, so a wrong set in the codec shows up as a failure.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use tidegate_protocol::*;

/// Any MQTT string: arbitrary characters but U+0000, short.
pub(crate) fn utf8() -> impl Strategy<Value = Utf8> {
    vec(any::<char>().prop_filter("no U+0000", |c| *c != '\0'), 0..8).prop_map(|cs| {
        Utf8::try_from(cs.into_iter().collect::<String>()).expect("valid by construction")
    })
}

/// A valid, non-empty topic name (no wildcards).
pub(crate) fn topic_name() -> impl Strategy<Value = Utf8> {
    vec(
        any::<char>().prop_filter("topic char", |c| !matches!(c, '\0' | '+' | '#')),
        1..8,
    )
    .prop_map(|cs| Utf8::try_from(cs.into_iter().collect::<String>()).expect("valid"))
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..12).prop_map(Bytes::from)
}

fn users() -> impl Strategy<Value = Vec<UserProperty>> {
    vec((utf8(), utf8()), 0..3)
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|v| PacketId::new(v).expect("non-zero"))
}

fn sub_id() -> impl Strategy<Value = u32> {
    1..=268_435_455u32
}

fn codes(bytes: &[u8]) -> impl Strategy<Value = ReasonCode> + use<> {
    let v: Vec<ReasonCode> = bytes
        .iter()
        .map(|b| ReasonCode::from_u8(*b).expect("defined code"))
        .collect();
    select(v)
}

/// The strategy in 5.0, the default value in 3.1.1.
fn v5_only<T: Default + Clone + std::fmt::Debug + 'static>(
    v5: bool,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if v5 {
        s.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(1..=u16::MAX),
        option::of(1..=u32::MAX),
        option::of(any::<u16>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        users(),
        option::of((utf8(), option::of(binary()))),
    )
        .prop_map(|(se, rm, mps, tam, rri, rpi, user_properties, auth)| {
            let (authentication_method, authentication_data) = match auth {
                Some((m, d)) => (Some(m), d),
                None => (None, None),
            };
            ConnectProperties {
                session_expiry_interval: se,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties,
                authentication_method,
                authentication_data,
            }
        })
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<u32>()),
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(utf8()),
        option::of(topic_name()),
        option::of(binary()),
        users(),
    )
        .prop_map(
            |(wd, pfi, mei, ct, rt, cd, user_properties)| WillProperties {
                will_delay_interval: wd,
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
            },
        )
}

/// A valid CONNECT of `v`.
pub(crate) fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let will = option::of((
        topic_name(),
        binary(),
        qos(),
        any::<bool>(),
        v5_only(v5, will_properties()),
    ))
    .prop_map(|w| {
        w.map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
    });
    (
        any::<bool>(),
        any::<u16>(),
        utf8(),
        will,
        option::of(utf8()),
        option::of(binary()),
        v5_only(v5, connect_properties()),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1 forbids a password without a user name ([MQTT-3.1.2-22]).
                let password = if v5 || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(1..=u16::MAX),
            option::of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
            option::of(any::<bool>()),
            option::of(1..=u32::MAX),
            option::of(utf8()),
            option::of(any::<u16>()),
            option::of(utf8()),
            users(),
        ),
        (
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<u16>()),
            option::of(utf8()),
            option::of(utf8()),
            option::of(utf8()),
            option::of(binary()),
        ),
    )
        .prop_map(
            |((se, rm, mq, ra, mps, aci, tam, rs, up), (wsa, sia, ssa, ska, ri, sr, am, ad))| {
                ConnAckProperties {
                    session_expiry_interval: se,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: up,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        )
}

const CONNACK_V5: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const CONNACK_V311: &[u8] = &[0x00, 0x84, 0x85, 0x86, 0x87, 0x88];

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (
        any::<bool>(),
        codes(if v5 { CONNACK_V5 } else { CONNACK_V311 }),
        v5_only(v5, connack_properties()),
    )
        .prop_map(|(sp, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                // Session present only with success ([MQTT-3.2.2-4]/[MQTT-3.2.2-6]).
                session_present: sp && reason_code == ReasonCode::Success,
                reason_code,
                properties,
            })
        })
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(1..=u16::MAX),
        option::of(topic_name()),
        option::of(binary()),
        users(),
        vec(sub_id(), 0..3),
        option::of(utf8()),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, up, sids, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: up,
            subscription_identifiers: sids,
            content_type: ct,
        })
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        vec(any::<u8>(), 0..64),
        v5_only(v5, publish_properties()),
    )
        .prop_map(
            move |(dup, qos, retain, topic, empty_topic, id, payload, properties)| {
                let at_most_once = qos == QoS::AtMostOnce;
                // An empty topic is valid only in 5.0 with a topic alias.
                let use_empty = v5 && empty_topic && properties.topic_alias.is_some();
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic: if use_empty { Utf8::new() } else { topic },
                    packet_id: if at_most_once { None } else { Some(id) },
                    payload: Bytes::from(payload),
                    properties,
                })
            },
        )
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (option::of(utf8()), users()).prop_map(|(reason_string, user_properties)| AckProperties {
        reason_string,
        user_properties,
    })
}

const PUBACK_V5: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_V5: &[u8] = &[0x00, 0x92];

fn pub_response(v: ProtocolVersion, allowed: &'static [u8]) -> BoxedStrategy<PubResponse> {
    let v5 = v.is_v5();
    (
        packet_id(),
        codes(if v5 { allowed } else { &[0x00] }),
        v5_only(v5, ack_properties()),
    )
        .prop_map(|(packet_id, reason_code, properties)| PubResponse {
            packet_id,
            reason_code,
            properties,
        })
        .boxed()
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let options = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        select(vec![
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendIfNew,
            RetainHandling::DoNotSend,
        ]),
    )
        .prop_map(move |(qos, nl, rap, rh)| {
            if v5 {
                SubscriptionOptions {
                    qos,
                    no_local: nl,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                }
            }
        });
    let filter = (utf8(), options).prop_map(|(filter, mut options)| {
        // No Local on a shared subscription is a Protocol Error ([MQTT-3.8.3-4]).
        if filter.starts_with("$share/") {
            options.no_local = false;
        }
        SubscribeFilter { filter, options }
    });
    let props = (option::of(sub_id()), users()).prop_map(|(subscription_identifier, up)| {
        SubscribeProperties {
            subscription_identifier,
            user_properties: up,
        }
    });
    (packet_id(), vec(filter, 1..4), v5_only(v5, props)).prop_map(
        |(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        },
    )
}

const SUBACK_V5: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const SUBACK_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (
        packet_id(),
        vec(codes(if v5 { SUBACK_V5 } else { SUBACK_V311 }), 1..5),
        v5_only(v5, ack_properties()),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let props = users().prop_map(|user_properties| UnsubscribeProperties { user_properties });
    (packet_id(), vec(utf8(), 1..4), v5_only(v.is_v5(), props)).prop_map(
        |(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        },
    )
}

const UNSUBACK_V5: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let reason_codes = if v5 {
        vec(codes(UNSUBACK_V5), 1..5).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), reason_codes, v5_only(v5, ack_properties())).prop_map(
        |(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        },
    )
}

const DISCONNECT_V5: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let props = (
        option::of(any::<u32>()),
        option::of(utf8()),
        users(),
        option::of(utf8()),
    )
        .prop_map(|(se, rs, up, sr)| DisconnectProperties {
            session_expiry_interval: se,
            reason_string: rs,
            user_properties: up,
            server_reference: sr,
        });
    (
        codes(if v5 { DISCONNECT_V5 } else { &[0x00] }),
        v5_only(v5, props),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    let props = (
        option::of(utf8()),
        option::of(binary()),
        option::of(utf8()),
        users(),
    )
        .prop_map(|(am, ad, rs, up)| AuthProperties {
            authentication_method: am,
            authentication_data: ad,
            reason_string: rs,
            user_properties: up,
        });
    (codes(&[0x00, 0x18, 0x19]), props).prop_map(|(reason_code, properties)| {
        Packet::Auth(Auth {
            reason_code,
            properties,
        })
    })
}

/// Any valid packet of `v` (AUTH only in 5.0).
pub(crate) fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(v),
        connack(v),
        publish(v),
        pub_response(v, PUBACK_V5).prop_map(Packet::PubAck),
        pub_response(v, PUBACK_V5).prop_map(Packet::PubRec),
        pub_response(v, PUBREL_V5).prop_map(Packet::PubRel),
        pub_response(v, PUBREL_V5).prop_map(Packet::PubComp),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v),
    ];
    if v.is_v5() {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

/// A valid packet of either version, with its version.
pub(crate) fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    prop_oneof![
        packet(ProtocolVersion::V311).prop_map(|p| (ProtocolVersion::V311, p)),
        packet(ProtocolVersion::V5).prop_map(|p| (ProtocolVersion::V5, p)),
    ]
}

/// Any packet a 5.0 peer could hand the encoder, valid or not: reason codes from the whole
/// table, property values at their edges, empty lists.
pub(crate) fn loose_v5_packet() -> impl Strategy<Value = Packet> {
    let any_code = select(ReasonCode::ALL.to_vec());
    prop_oneof![
        packet(ProtocolVersion::V5),
        (packet_id(), any_code.clone(), ack_properties()).prop_map(
            |(packet_id, rc, properties)| {
                Packet::PubRel(PubResponse {
                    packet_id,
                    reason_code: rc,
                    properties,
                })
            }
        ),
        (any::<bool>(), any_code.clone()).prop_map(|(session_present, reason_code)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties: ConnAckProperties {
                    maximum_qos: Some(QoS::ExactlyOnce),
                    ..ConnAckProperties::default()
                },
            })
        }),
        (packet_id(), vec(any_code.clone(), 0..3)).prop_map(|(packet_id, reason_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties: AckProperties::default(),
            })
        }),
        (any_code, option::of(0..=2u32)).prop_map(|(reason_code, sid)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties: DisconnectProperties {
                    session_expiry_interval: sid,
                    ..DisconnectProperties::default()
                },
            })
        }),
        (
            qos(),
            any::<bool>(),
            option::of(packet_id()),
            option::of(0..=2u16)
        )
            .prop_map(
                |(qos, dup, packet_id, topic_alias)| Packet::Publish(Publish {
                    dup,
                    qos,
                    retain: false,
                    topic: Utf8::new(),
                    packet_id,
                    payload: Bytes::new(),
                    properties: PublishProperties {
                        topic_alias,
                        ..PublishProperties::default()
                    },
                })
            ),
    ]
}
