"""Publish/subscribe through tidegate with paho-mqtt, for MQTT 3.1.1 and 5.0: every QoS,
retained messages, wildcards and unsubscribe."""

import pytest


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_round_trip_at_each_qos(broker, peers, version, qos):
    sub = peers(broker, version).connect()
    pub = peers(broker, version).connect()
    sub.subscribe_ok("py/rt/+", 2)

    pub.publish(f"py/rt/{qos}", f"payload {qos}".encode(), qos=qos)
    msg = sub.recv()
    assert msg.topic == f"py/rt/{qos}"
    assert msg.payload == f"payload {qos}".encode()
    assert msg.qos == qos
    assert not msg.retain
    sub.expect_nothing()


def test_qos2_stream_arrives_exactly_once_in_order(broker, peers, version):
    sub = peers(broker, version).connect()
    pub = peers(broker, version).connect()
    sub.subscribe_ok("py/seq", 2)
    for i in range(25):
        pub.publish("py/seq", str(i).encode(), qos=2)
    assert [sub.recv().payload for _ in range(25)] == [str(i).encode() for i in range(25)]
    sub.expect_nothing()


def test_delivery_qos_is_downgraded_to_the_subscription(broker, peers, version):
    sub = peers(broker, version).connect()
    pub = peers(broker, version).connect()
    sub.subscribe_ok("py/down", 1)
    pub.publish("py/down", b"x", qos=2)
    assert sub.recv().qos == 1


def test_retained_set_replay_and_clear(broker, peers, version):
    pub = peers(broker, version).connect()
    pub.publish("py/ret/t", b"v1", qos=1, retain=True)
    pub.publish("py/ret/t", b"v2", qos=1, retain=True)

    late = peers(broker, version).connect()
    late.subscribe_ok("py/ret/#", 1)
    msg = late.recv()
    assert (msg.topic, msg.payload, msg.retain, msg.qos) == ("py/ret/t", b"v2", True, 1)
    late.expect_nothing()

    pub.publish("py/ret/t", b"", qos=1, retain=True)
    cleared = late.recv()
    assert cleared.payload == b""
    later = peers(broker, version).connect()
    later.subscribe_ok("py/ret/#", 1)
    later.expect_nothing()


def test_wildcards(broker, peers, version):
    plus = peers(broker, version).connect()
    hash_ = peers(broker, version).connect()
    pub = peers(broker, version).connect()
    plus.subscribe_ok("py/w/+/c", 1)
    hash_.subscribe_ok("py/w/#", 1)
    for topic in ["py/w/b/c", "py/w/b/c/d", "py/w"]:
        pub.publish(topic, topic.encode(), qos=1)
    assert plus.recv().topic == "py/w/b/c"
    plus.expect_nothing()
    assert [hash_.recv().topic for _ in range(3)] == ["py/w/b/c", "py/w/b/c/d", "py/w"]


def test_unsubscribe_stops_delivery(broker, peers, version):
    sub = peers(broker, version).connect()
    pub = peers(broker, version).connect()
    sub.subscribe_ok("py/unsub", 1)
    pub.publish("py/unsub", b"before")
    assert sub.recv().payload == b"before"
    sub.unsubscribe("py/unsub")
    pub.publish("py/unsub", b"after")
    sub.expect_nothing()
