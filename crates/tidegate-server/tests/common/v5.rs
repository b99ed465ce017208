//! An MQTT 5.0 peer built on `rumqttc::v5`, shaped like [`super::v4::Client`]: the event loop
//! runs in a task forwarding every event, helpers wait for one event with a bounded timeout, and
//! the task stops at the first error so nothing reconnects behind a test's back.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, DisconnectReasonCode, Filter, LastWill, LastWillProperties, Packet,
    PubAckReason, Publish, PublishProperties, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout_at;

use super::{Broker, QUIET_PERIOD, RECV_TIMEOUT};

/// A connected 5.0 client.
pub(crate) struct Client {
    /// The request side, for anything the helpers don't cover.
    pub(crate) client: AsyncClient,
    /// The CONNACK the server answered with.
    pub(crate) connack: ConnAck,
    /// Events from the event-loop task; an `Err` is the last item.
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    /// PUBLISH packets that arrived while a helper waited for something else.
    stash: VecDeque<Publish>,
    /// The event-loop task; aborting it drops the socket without a DISCONNECT.
    task: JoinHandle<()>,
}

/// Options for `id` against `broker`: clean start, 30 s keep alive, 1 MiB packets.
pub(crate) fn options(broker: &Broker, id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(Some(1 << 20));
    opts
}

/// Options for a session that outlives the connection: clean start off, `expiry` seconds.
pub(crate) fn persistent(broker: &Broker, id: &str, expiry: u32) -> MqttOptions {
    let mut opts = options(broker, id);
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(expiry));
    opts
}

/// Options with a last will (optionally delayed).
pub(crate) fn options_with_will(
    broker: &Broker,
    id: &str,
    topic: &str,
    payload: &[u8],
    delay_secs: Option<u32>,
) -> MqttOptions {
    let mut opts = options(broker, id);
    let props = delay_secs.map(|d| LastWillProperties {
        delay_interval: Some(d),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    });
    opts.set_last_will(LastWill::new(
        topic,
        payload.to_vec(),
        QoS::AtLeastOnce,
        false,
        props,
    ));
    opts
}

/// A subscription filter with every v5 option spelled out.
pub(crate) fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

/// Subscription properties carrying a subscription identifier.
pub(crate) fn sub_id(id: usize) -> SubscribeProperties {
    SubscribeProperties {
        id: Some(id),
        user_properties: Vec::new(),
    }
}

impl Client {
    /// Connects with `opts` and asserts the server accepted.
    pub(crate) async fn connect(opts: MqttOptions) -> Client {
        match Client::try_connect(opts).await {
            Ok(client) => client,
            Err(e) => panic!("connect failed: {e:?}"),
        }
    }

    /// Connects with default options for `id`.
    pub(crate) async fn connect_id(broker: &Broker, id: &str) -> Client {
        Client::connect(options(broker, id)).await
    }

    /// Connects and returns the connection error if the server refused.
    pub(crate) async fn try_connect(opts: MqttOptions) -> Result<Client, ConnectionError> {
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let (tx, mut events) = mpsc::unbounded_channel();
        let task = tokio::spawn(pump(eventloop, tx));
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        let first = timeout_at(deadline, events.recv())
            .await
            .expect("no CONNACK within the timeout")
            .expect("event loop ended without an event");
        match first? {
            Event::Incoming(Packet::ConnAck(connack)) => {
                assert_eq!(connack.code, ConnectReturnCode::Success);
                Ok(Client {
                    client,
                    connack,
                    events,
                    stash: VecDeque::new(),
                    task,
                })
            }
            other => panic!("expected CONNACK first, got {other:?}"),
        }
    }

    /// Waits for the first event `pick` accepts; publishes seen meanwhile are kept for
    /// [`Client::recv`]. Panics on timeout or on a connection error.
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            let event = match timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("timed out waiting for {what}"),
                Ok(None) => panic!("connection ended while waiting for {what}"),
                Ok(Some(Err(e))) => panic!("connection error while waiting for {what}: {e:?}"),
                Ok(Some(Ok(event))) => event,
            };
            if let Some(found) = pick(&event) {
                return found;
            }
            if let Event::Incoming(Packet::Publish(p)) = event {
                self.stash.push_back(p);
            }
        }
    }

    /// Subscribes to `filters` (with optional properties) and returns the SUBACK reason codes.
    pub(crate) async fn subscribe_filters(
        &mut self,
        filters: Vec<Filter>,
        props: Option<SubscribeProperties>,
    ) -> Vec<SubscribeReasonCode> {
        match props {
            Some(props) => {
                self.client
                    .subscribe_many_with_properties(filters, props)
                    .await
            }
            None => self.client.subscribe_many(filters).await,
        }
        .expect("queue SUBSCRIBE");
        self.wait_for("SUBACK", |e| match e {
            Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Subscribes to one filter and asserts the requested QoS was granted.
    pub(crate) async fn subscribe_ok(&mut self, path: &str, qos: QoS) {
        let codes = self.subscribe_filters(vec![filter(path, qos)], None).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(qos)]);
    }

    /// Unsubscribes and waits for UNSUBACK.
    pub(crate) async fn unsubscribe(&mut self, path: &str) {
        self.client
            .unsubscribe(path)
            .await
            .expect("queue UNSUBSCRIBE");
        self.wait_for("UNSUBACK", |e| match e {
            Event::Incoming(Packet::UnsubAck(_)) => Some(()),
            _ => None,
        })
        .await;
    }

    /// Publishes without properties and waits until its flow is complete.
    pub(crate) async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.publish_props(topic, qos, retain, payload, None).await;
    }

    /// Publishes with `props` and waits until the flow for `qos` is complete.
    pub(crate) async fn publish_props(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &[u8],
        props: Option<PublishProperties>,
    ) {
        let payload = Bytes::copy_from_slice(payload);
        match props {
            Some(props) => {
                self.client
                    .publish_with_properties(topic, qos, retain, payload, props)
                    .await
            }
            None => self.client.publish(topic, qos, retain, payload).await,
        }
        .expect("queue PUBLISH");
        let pkid = self
            .wait_for("the PUBLISH to be written", |e| match e {
                Event::Outgoing(Outgoing::Publish(pkid)) => Some(*pkid),
                _ => None,
            })
            .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |e| match e {
                    Event::Incoming(Packet::PubAck(ack)) if ack.pkid == pkid => Some(()),
                    _ => None,
                })
                .await
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |e| match e {
                    Event::Incoming(Packet::PubComp(ack)) if ack.pkid == pkid => Some(()),
                    _ => None,
                })
                .await
            }
        }
    }

    /// Publishes at QoS 1 and returns the reason code of its PUBACK (rumqttc reports a refusal
    /// as an ordinary PUBACK event, so a refused publication does not end the connection).
    pub(crate) async fn publish_acked(
        &mut self,
        topic: &str,
        retain: bool,
        payload: &[u8],
    ) -> PubAckReason {
        self.client
            .publish(
                topic,
                QoS::AtLeastOnce,
                retain,
                Bytes::copy_from_slice(payload),
            )
            .await
            .expect("queue PUBLISH");
        let pkid = self
            .wait_for("the PUBLISH to be written", |e| match e {
                Event::Outgoing(Outgoing::Publish(pkid)) => Some(*pkid),
                _ => None,
            })
            .await;
        self.wait_for("PUBACK", |e| match e {
            Event::Incoming(Packet::PubAck(ack)) if ack.pkid == pkid => Some(ack.reason),
            _ => None,
        })
        .await
    }

    /// The next PUBLISH from the server.
    pub(crate) async fn recv(&mut self) -> Publish {
        if let Some(p) = self.stash.pop_front() {
            return p;
        }
        self.wait_for("PUBLISH", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Asserts that no PUBLISH arrives for [`QUIET_PERIOD`].
    pub(crate) async fn expect_no_publish(&mut self) {
        if let Some(p) = self.stash.pop_front() {
            panic!("unexpected PUBLISH {p:?}");
        }
        let deadline = tokio::time::Instant::now() + QUIET_PERIOD;
        while let Ok(Some(event)) = timeout_at(deadline, self.events.recv()).await {
            if let Ok(Event::Incoming(Packet::Publish(p))) = event {
                panic!("unexpected PUBLISH {p:?}");
            }
        }
    }

    /// Waits until the connection ends and returns the error the client saw.
    pub(crate) async fn closed(&mut self) -> ConnectionError {
        let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
        loop {
            match timeout_at(deadline, self.events.recv()).await {
                Err(_) => panic!("the server did not close the connection"),
                Ok(None) => panic!("event loop ended without an error"),
                Ok(Some(Err(e))) => return e,
                Ok(Some(Ok(Event::Incoming(Packet::Publish(p))))) => self.stash.push_back(p),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Waits for the server's DISCONNECT and returns its reason code.
    pub(crate) async fn server_disconnect(&mut self) -> DisconnectReasonCode {
        match self.closed().await {
            ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
                reason_code
            }
            // rumqttc 0.25 cannot parse a DISCONNECT that omits the property length
            // (`E0 01 <reason>`, allowed by section 3.14.2.2.1): it waits for more bytes and
            // reports the close as ConnectionAborted. `E0 02 <reason> 00` reads fine.
            other => panic!(
                "expected a DISCONNECT from the server, got {other:?} (a DISCONNECT encoded \
                 without its property length looks like this to rumqttc)"
            ),
        }
    }

    /// Sends DISCONNECT (normal, reason 0) and waits for the connection to end.
    pub(crate) async fn disconnect(mut self) {
        self.client.disconnect().await.expect("queue DISCONNECT");
        self.wait_for("DISCONNECT to be written", |e| match e {
            Event::Outgoing(Outgoing::Disconnect) => Some(()),
            _ => None,
        })
        .await;
        let _ = self.closed().await;
    }

    /// Drops the TCP connection without DISCONNECT, as a crashed device would.
    pub(crate) async fn kill(mut self) {
        self.task.abort();
        // Awaiting the aborted task guarantees the event loop, and so the socket, is dropped.
        let _ = (&mut self.task).await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the event loop, forwarding events until the first error.
async fn pump(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Event, ConnectionError>>) {
    loop {
        let event = eventloop.poll().await;
        let stop = event.is_err();
        if tx.send(event).is_err() || stop {
            return;
        }
    }
}

/// The payload of `p` as text, for readable assertions.
pub(crate) fn text(p: &Publish) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

/// The topic of `p` as text.
pub(crate) fn topic(p: &Publish) -> String {
    String::from_utf8_lossy(&p.topic).into_owned()
}

/// The properties of `p`, or empty ones when it carried none.
pub(crate) fn props(p: &Publish) -> PublishProperties {
    p.properties.clone().unwrap_or_default()
}
