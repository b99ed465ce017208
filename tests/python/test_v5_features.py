"""MQTT 5.0 features through tidegate with paho-mqtt: properties passed through, message expiry,
subscription identifiers, no local, retain handling, retain as published and topic aliases."""

import time

from paho.mqtt.subscribeoptions import SubscribeOptions

from harness import V5, publish_props


def test_properties_pass_through(broker, peers):
    sub = peers(broker, V5).connect()
    pub = peers(broker, V5).connect()
    sub.subscribe_ok("py5/props", 2)
    props = publish_props(
        PayloadFormatIndicator=1,
        ContentType="application/json",
        ResponseTopic="py5/reply",
        CorrelationData=b"\x00corr-7",
        UserProperty=[("k", "1"), ("k", "2"), ("trace", "abc")],
    )
    for qos in (0, 1, 2):
        pub.publish("py5/props", b'{"a":1}', qos=qos, properties=props)
        msg = sub.recv()
        got = msg.properties
        assert msg.payload == b'{"a":1}'
        assert got.PayloadFormatIndicator == 1
        assert got.ContentType == "application/json"
        assert got.ResponseTopic == "py5/reply"
        assert got.CorrelationData == b"\x00corr-7"
        # Order and repeated keys preserved [MQTT-3.3.2-17, MQTT-3.3.2-18].
        assert got.UserProperty == [("k", "1"), ("k", "2"), ("trace", "abc")]
        assert not hasattr(got, "MessageExpiryInterval")


def test_request_response_with_correlation_data(broker, peers):
    service = peers(broker, V5).connect()
    service.subscribe_ok("py5/svc", 1)
    requester = peers(broker, V5).connect()
    requester.subscribe_ok("py5/reply/me", 1)

    requester.publish(
        "py5/svc",
        b"ping",
        properties=publish_props(ResponseTopic="py5/reply/me", CorrelationData=b"42"),
    )
    request = service.recv()
    service.publish(
        request.properties.ResponseTopic,
        b"pong",
        properties=publish_props(CorrelationData=request.properties.CorrelationData),
    )
    answer = requester.recv()
    assert (answer.topic, answer.payload) == ("py5/reply/me", b"pong")
    assert answer.properties.CorrelationData == b"42"


def test_message_expiry(broker, peers):
    sub = peers(broker, V5, client_id="py5-exp", clean=False, session_expiry=60).connect()
    sub.subscribe_ok("py5/exp", 1)
    sub.disconnect()

    pub = peers(broker, V5).connect()
    pub.publish("py5/exp", b"short", properties=publish_props(MessageExpiryInterval=1))
    pub.publish("py5/exp", b"long", properties=publish_props(MessageExpiryInterval=100))
    # Expiry has no event to await: wait past the 1 s lifetime.
    time.sleep(2.1)

    back = peers(broker, V5, client_id="py5-exp", clean=False, session_expiry=60).connect()
    assert back.session_present
    msg = back.recv()
    assert msg.payload == b"long"
    # Forwarded with the time spent waiting subtracted [MQTT-3.3.2-6].
    assert 90 <= msg.properties.MessageExpiryInterval <= 98
    back.expect_nothing()


def test_subscription_identifiers(broker, peers):
    sub = peers(broker, V5).connect()
    pub = peers(broker, V5).connect()
    sub.subscribe_ok("py5/sid/+", 1, subscription_id=11)
    sub.subscribe_ok("py5/other", 1)

    pub.publish("py5/sid/x", b"with id")
    assert sub.recv().properties.SubscriptionIdentifier == [11]
    pub.publish("py5/other", b"without")
    assert not hasattr(sub.recv().properties, "SubscriptionIdentifier")


def test_no_local(broker, peers):
    me = peers(broker, V5).connect()
    other = peers(broker, V5).connect()
    me.subscribe_ok("py5/nl", options=SubscribeOptions(qos=1, noLocal=True))
    other.subscribe_ok("py5/nl", 1)

    me.publish("py5/nl", b"mine")
    assert other.recv().payload == b"mine"
    me.expect_nothing()
    other.publish("py5/nl", b"theirs")
    assert me.recv().payload == b"theirs"


def test_retain_handling(broker, peers):
    pub = peers(broker, V5).connect()
    pub.publish("py5/rh", b"stored", retain=True)
    sub = peers(broker, V5).connect()

    never = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
    sub.subscribe_ok("py5/rh", options=never)
    sub.expect_nothing()

    # The filter already exists now, so "send if new" sends nothing.
    if_new = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    sub.subscribe_ok("py5/rh", options=if_new)
    sub.expect_nothing()

    always = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
    sub.subscribe_ok("py5/rh", options=always)
    msg = sub.recv()
    assert (msg.payload, msg.retain) == (b"stored", True)


def test_retain_as_published(broker, peers):
    keep = peers(broker, V5).connect()
    clear = peers(broker, V5).connect()
    keep.subscribe_ok("py5/rap", options=SubscribeOptions(qos=1, retainAsPublished=True))
    clear.subscribe_ok("py5/rap", 1)
    pub = peers(broker, V5).connect()
    pub.publish("py5/rap", b"r", retain=True)
    assert keep.recv().retain
    assert not clear.recv().retain


def test_topic_alias_from_client(broker, peers):
    sub = peers(broker, V5).connect()
    sub.subscribe_ok("py5/alias/#", 1)
    pub = peers(broker, V5).connect()
    assert pub.connack_properties.TopicAliasMaximum >= 1

    pub.publish("py5/alias/long/topic", b"first", properties=publish_props(TopicAlias=1))
    pub.publish("", b"second", properties=publish_props(TopicAlias=1))
    got = [sub.recv() for _ in range(2)]
    assert [(m.topic, m.payload) for m in got] == [
        ("py5/alias/long/topic", b"first"),
        ("py5/alias/long/topic", b"second"),
    ]
