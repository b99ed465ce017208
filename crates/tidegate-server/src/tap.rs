//! The HTTP stream hub's tap: one internal MQTT 5 session whose deliveries become
//! [`TapMessage`]s. Each tenant's hub has its own.
//!
//! Place in the data flow: `engine --Outbox--> tap task --TapMessage--> HTTP stream hub`, and
//! `hub --TapCommand--> tap task --SUBSCRIBE/UNSUBSCRIBE--> engine`. The task plays an MQTT
//! client on an in-process "connection" (an [`Outbox`] with no socket): it connects with a clean
//! session inside its tenant ([`EngineEvent::Connect`] with an [`Authorized`] the caller built,
//! as a connection task does after authentication, so no credentials are involved), subscribes at QoS 2 with the hub's id as Subscription Identifier, Retain Handling 2
//! (live messages only; retained ones are read through `/v1/retained`), and acknowledges every
//! delivery after handing it to the hub. So the hub gets each message once with the ids of all
//! its filters that matched, at the QoS it was published with, and flow control is the
//! broker's: when the hub lags, deliveries wait in the session queue (bounded by
//! `limits.max_queued_messages`, counted when dropped) instead of being lost silently. When
//! the tenant is deleted the broker disconnects the tap like any client of it, and the hub's
//! readers are told the stream ended.

use crate::engine::EngineEvent;
use crate::outbox::Outbox;
use std::sync::Arc;
use tidegate_core::{Authorized, ConnId, ConnInfo};
use tidegate_http::{GatewayError, Tap, TapCommand, TapMessage};
use tidegate_protocol::{
    Connect, ConnectProperties, Disconnect, Packet, PacketId, ProtocolVersion, PubResponse,
    Publish, QoS, ReasonCode, RetainHandling, Subscribe, SubscribeFilter, SubscribeProperties,
    SubscriptionOptions, Unsubscribe, UnsubscribeProperties, Utf8,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Commands and messages buffered between the tap task and the hub.
const CHANNEL: usize = 1024;

/// Opens a tap: connects its session in `auth.tenant` and starts its task.
pub(crate) async fn open(
    events: mpsc::Sender<EngineEvent>,
    conn: ConnId,
    outbox: Arc<Outbox>,
    client_id: String,
    window: u16,
    auth: Authorized,
) -> Result<Tap, GatewayError> {
    let info = ConnInfo {
        listener: Arc::from(format!("{}http-hub", crate::api::INTERNAL_LISTENER)),
        // Not a client of the tenant: outside its connection and session quotas and counts.
        internal: true,
        ..ConnInfo::default()
    };
    let client_id = Utf8::try_from(client_id.as_str()).map_err(|_| GatewayError::Unavailable)?;
    let connect = Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        client_id,
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            receive_maximum: Some(window),
            ..ConnectProperties::default()
        },
    };
    let unavailable = |_| GatewayError::Unavailable;
    events
        .send(EngineEvent::Open {
            conn,
            info,
            outbox: outbox.clone(),
        })
        .await
        .map_err(unavailable)?;
    events
        .send(EngineEvent::Connect {
            conn,
            connect: Box::new(connect),
            auth,
        })
        .await
        .map_err(unavailable)?;
    let (commands, commands_rx) = mpsc::channel(CHANNEL);
    let (messages_tx, messages) = mpsc::channel(CHANNEL);
    tokio::spawn(run(events, conn, outbox, commands_rx, messages_tx));
    Ok(Tap { commands, messages })
}

/// The tap's loop: until the hub drops its command sender or the engine closes the session.
async fn run(
    events: mpsc::Sender<EngineEvent>,
    conn: ConnId,
    outbox: Arc<Outbox>,
    mut commands: mpsc::Receiver<TapCommand>,
    messages: mpsc::Sender<TapMessage>,
) {
    let mut next_id: u16 = 0;
    let mut packet_id = || {
        next_id = next_id.checked_add(1).unwrap_or(1);
        PacketId::new(next_id)
    };
    let send = |packet: Packet| EngineEvent::Packet { conn, packet };
    loop {
        tokio::select! {
            command = commands.recv() => {
                let packet = match command {
                    None => {
                        // The hub is gone: a normal disconnection ends the session.
                        let _ = events
                            .send(send(Packet::Disconnect(Disconnect::with_reason(
                                ReasonCode::Success,
                            ))))
                            .await;
                        break;
                    }
                    Some(TapCommand::Subscribe { id, filter }) => {
                        let (Some(pid), Ok(filter)) = (packet_id(), Utf8::try_from(filter.as_str()))
                        else {
                            continue;
                        };
                        Packet::Subscribe(Subscribe {
                            packet_id: pid,
                            filters: vec![SubscribeFilter {
                                filter,
                                options: SubscriptionOptions {
                                    qos: QoS::ExactlyOnce,
                                    no_local: false,
                                    retain_as_published: true,
                                    retain_handling: RetainHandling::DoNotSend,
                                },
                            }],
                            properties: SubscribeProperties {
                                subscription_identifier: Some(id),
                                ..SubscribeProperties::default()
                            },
                        })
                    }
                    Some(TapCommand::Unsubscribe { filter }) => {
                        let (Some(pid), Ok(filter)) = (packet_id(), Utf8::try_from(filter.as_str()))
                        else {
                            continue;
                        };
                        Packet::Unsubscribe(Unsubscribe {
                            packet_id: pid,
                            filters: vec![filter],
                            properties: UnsubscribeProperties::default(),
                        })
                    }
                };
                if events.send(send(packet)).await.is_err() {
                    break;
                }
            }
            _ = outbox.notified() => {
                let batch = outbox.take();
                for packet in batch.packets {
                    let reply = match packet {
                        Packet::Publish(p) => {
                            let (qos, id) = (p.qos, p.packet_id);
                            if messages.send(tap_message(p)).await.is_err() {
                                // The hub went away; the command side ends the session.
                                continue;
                            }
                            match (qos, id) {
                                (QoS::AtLeastOnce, Some(id)) => {
                                    Some(Packet::PubAck(PubResponse::success(id)))
                                }
                                (QoS::ExactlyOnce, Some(id)) => {
                                    Some(Packet::PubRec(PubResponse::success(id)))
                                }
                                _ => None,
                            }
                        }
                        Packet::PubRel(r) => Some(Packet::PubComp(PubResponse::success(r.packet_id))),
                        Packet::ConnAck(ack) if !ack.reason_code.is_success() => {
                            warn!(reason = ?ack.reason_code, "the HTTP stream tap was refused");
                            None
                        }
                        Packet::SubAck(ack) => {
                            if let Some(code) = ack.reason_codes.iter().find(|c| !c.is_success()) {
                                warn!(reason = ?code, "a filter of the HTTP stream tap was refused");
                            }
                            None
                        }
                        _ => None,
                    };
                    if let Some(reply) = reply
                        && events.send(send(reply)).await.is_err()
                    {
                        return;
                    }
                }
                if batch.close.is_some() {
                    debug!(conn = conn.0, "the engine closed the HTTP stream tap");
                    outbox.detach();
                    return;
                }
            }
        }
    }
    outbox.detach();
}

/// The hub's form of a delivery.
fn tap_message(p: Publish) -> TapMessage {
    let expiry = p.properties.message_expiry_interval;
    TapMessage {
        ids: p.properties.subscription_identifiers.clone(),
        topic: p.topic.as_str().to_owned(),
        qos: p.qos as u8,
        retain: p.retain,
        properties: crate::api::message_properties(&p.properties, expiry),
        payload: p.payload,
    }
}
