//! An MQTT 3.1.1 peer built on `rumqttc`: its event loop runs in a task that forwards every
//! event to the test, and each helper waits for one event with a bounded timeout. The task stops
//! at the first connection error, so the client never silently reconnects behind a test's back.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill,
    MqttOptions, Outgoing, Packet, Publish, QoS, SubAck, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout_at;

use super::{Broker, QUIET_PERIOD, RECV_TIMEOUT};

/// A connected 3.1.1 client.
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

/// Options for `id` against `broker`: clean session, 30 s keep alive, 1 MiB packets.
pub(crate) fn options(broker: &Broker, id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts
}

/// Options with a last will.
pub(crate) fn options_with_will(
    broker: &Broker,
    id: &str,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
) -> MqttOptions {
    let mut opts = options(broker, id);
    opts.set_last_will(LastWill::new(topic, payload.to_vec(), qos, retain));
    opts
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

    /// Subscribes and returns the SUBACK return codes.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe(filter, qos)
            .await
            .expect("queue SUBSCRIBE");
        let ack: SubAck = self
            .wait_for("SUBACK", |e| match e {
                Event::Incoming(Packet::SubAck(ack)) => Some(ack.clone()),
                _ => None,
            })
            .await;
        ack.return_codes
    }

    /// Subscribes and asserts the granted QoS equals the requested one.
    pub(crate) async fn subscribe_ok(&mut self, filter: &str, qos: QoS) {
        let codes = self.subscribe(filter, qos).await;
        assert_eq!(codes, vec![SubscribeReasonCode::Success(qos)]);
    }

    /// Unsubscribes and waits for UNSUBACK.
    pub(crate) async fn unsubscribe(&mut self, filter: &str) {
        self.client
            .unsubscribe(filter)
            .await
            .expect("queue UNSUBSCRIBE");
        self.wait_for("UNSUBACK", |e| match e {
            Event::Incoming(Packet::UnsubAck(_)) => Some(()),
            _ => None,
        })
        .await;
    }

    /// Publishes and waits until the flow for `qos` is complete (sent, PUBACK, or PUBCOMP).
    pub(crate) async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
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

    /// Waits until the server closes the connection and returns the error the client saw.
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

    /// Sends DISCONNECT and waits for the connection to end.
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
    p.topic.clone()
}
