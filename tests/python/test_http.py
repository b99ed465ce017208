"""The HTTP API (issue 6) from the outside, against the real binary: curl publishes to paho
subscribers and reads a Server-Sent Events stream with `curl -N`; an admin kick reaches a paho
client as DISCONNECT 0x98; and `/metrics` is parsed with the reference Prometheus parser and
its counters checked against traffic the test made itself."""

from __future__ import annotations

import json
import queue
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import RECV_TIMEOUT, V5, V311, Broker, free_port, publish_props

PUBLISH_TOKEN = "py-publish-token"
ADMIN_TOKEN = "py-admin-token"
# A curl call's own limit: a debug build on a busy 2-core machine.
CURL_TIMEOUT = 15


@dataclass
class Answer:
    status: int
    headers: str
    body: bytes

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for line in self.headers.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                return value.strip()
        return None


def curl(*args: str) -> Answer:
    """Runs curl with `args`; the status, the response head and the body."""
    with tempfile.TemporaryDirectory(prefix="tidegate-curl-") as tmp:
        head_path = Path(tmp) / "head"
        out = subprocess.run(
            ["curl", "-sS", "--max-time", str(CURL_TIMEOUT), "-D", str(head_path), *args],
            capture_output=True,
            timeout=CURL_TIMEOUT + 5,
            check=False,
        )
        assert out.returncode == 0, f"curl failed ({out.returncode}): {out.stderr.decode()}"
        head = head_path.read_text(errors="replace")
    status = int(head.split(" ", 2)[1])
    return Answer(status, head, out.stdout)


class Gateway:
    """A `tidegate serve` with its MQTT listener and an HTTP listener with known tokens."""

    def __init__(self, broker: Broker, http_port: int) -> None:
        self.broker = broker
        self.base = f"http://127.0.0.1:{http_port}"
        self.mqtt_listener = f"tcp:127.0.0.1:{broker.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def publish(self, message: dict) -> Answer:
        return curl(
            *("-X", "POST"),
            *("-H", f"Authorization: Bearer {PUBLISH_TOKEN}"),
            *("-H", "Content-Type: application/json"),
            *("--data", json.dumps(message)),
            self.url("/v1/publish"),
        )

    def admin(self, method: str, path: str) -> Answer:
        return curl("-X", method, "-H", f"Authorization: Bearer {ADMIN_TOKEN}", self.url(path))

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """Every sample of `/metrics`, parsed by prometheus_client, by (name, labels)."""
        answer = curl(self.url("/metrics"))
        assert answer.status == 200
        samples = {}
        for family in text_string_to_metric_families(answer.body.decode()):
            for s in family.samples:
                key = (s.name, frozenset(s.labels.items()))
                assert key not in samples, f"sample {key} given twice"
                samples[key] = s.value
        return samples

    def wait_subscriptions(self, n: int) -> None:
        """Waits until the engine holds `n` subscriptions (an SSE filter is subscribed through
        the engine after the stream opened)."""
        deadline = time.monotonic() + 2 * RECV_TIMEOUT
        while True:
            held = self.admin("GET", "/v1/admin/stats").json()["subscriptions"]
            if held == n:
                return
            assert time.monotonic() < deadline, f"{held} subscriptions, never {n}"
            time.sleep(0.02)


@pytest.fixture
def gateway(start_broker) -> Gateway:
    config = f'[http]\npublish_tokens = ["{PUBLISH_TOKEN}"]\nadmin_tokens = ["{ADMIN_TOKEN}"]\n'
    # The HTTP port was free when probed; if another process took it first, the start fails
    # and is tried again on another one.
    for attempt in range(3):
        http_port = free_port()
        listeners = f'[[listeners]]\nkind = "http"\nbind = "127.0.0.1:{http_port}"\n'
        try:
            broker = start_broker(config=config, listeners=listeners)
            break
        except RuntimeError:
            if attempt == 2:
                raise
    gw = Gateway(broker, http_port)
    # Both listeners are bound before the server accepts on either; this is only a check.
    assert curl(gw.url("/healthz")).body == b"ok"
    return gw


def sample(samples: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(k for k, _ in samples)}"
    return samples[key]


def test_curl_publish_reaches_an_mqtt_5_subscriber(gateway, peers):
    sub = peers(gateway.broker, V5).connect()
    sub.subscribe_ok("curl/#", 1)
    answer = gateway.publish(
        {
            "topic": "curl/a",
            "payload": "from curl",
            "qos": 1,
            "properties": {
                "content_type": "text/plain",
                "user_properties": [["source", "curl"]],
            },
        }
    )
    assert answer.status == 200, answer.body
    assert answer.json() == {"matched": 1}
    msg = sub.recv()
    assert (msg.topic, msg.payload, msg.qos) == ("curl/a", b"from curl", 1)
    assert msg.properties.ContentType == "text/plain"
    assert msg.properties.UserProperty == [("source", "curl")]

    # Without a token: 401, a bearer challenge, a JSON error, and nothing published.
    answer = curl(
        *("-X", "POST"),
        *("-H", "Content-Type: application/json"),
        *("--data", '{"topic": "curl/a", "payload": "x"}'),
        gateway.url("/v1/publish"),
    )
    assert answer.status == 401
    assert answer.header("WWW-Authenticate") == 'Bearer realm="tidegate"', answer.headers
    assert answer.json()["error"]["code"] == "unauthorized"
    sub.expect_nothing()


def test_curl_reads_mqtt_publications_as_server_sent_events(gateway, peers):
    proc = subprocess.Popen(
        [
            *("curl", "-sS", "-N", "--max-time", "60"),
            *("-H", f"Authorization: Bearer {PUBLISH_TOKEN}"),
            gateway.url("/v1/subscribe?filter=sse%2F%23"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for raw in proc.stdout:
            lines.put(raw.decode().rstrip("\r\n"))

    threading.Thread(target=pump, daemon=True).start()

    def next_line() -> str:
        try:
            return lines.get(timeout=2 * RECV_TIMEOUT)
        except queue.Empty:
            raise AssertionError("no line from curl -N") from None

    def next_block() -> dict[str, str]:
        """The fields of the next block that is not only comments (heartbeats)."""
        while True:
            block = []
            while (line := next_line()) != "":
                block.append(line)
            fields = dict(line.split(": ", 1) for line in block if not line.startswith(":"))
            if fields:
                return fields

    try:
        # A fresh stream starts with its position alone, then the filter is subscribed.
        first = next_block()
        assert list(first) == ["id"], first
        gateway.wait_subscriptions(1)
        pub = peers(gateway.broker, V311).connect()
        pub.publish("sse/kitchen", b"21.5", qos=1)
        fields = next_block()
        assert fields["event"] == "sse/kitchen", fields
        assert fields["id"] != first["id"]
        data = json.loads(fields["data"])
        assert data["topic"] == "sse/kitchen"
        assert data["payload"] == "21.5"
        assert data["qos"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=RECV_TIMEOUT)


def test_an_admin_kick_reaches_a_paho_client_as_disconnect_0x98(gateway, peers):
    victim = peers(gateway.broker, V5, client_id="py-kicked").connect()
    answer = gateway.admin("DELETE", "/v1/admin/clients/py-kicked")
    assert answer.status == 200, answer.body
    assert answer.json() == {"disconnected": True, "session_discarded": False}
    reason = victim.wait_closed_by_server()
    assert reason.value == 0x98, reason


def wait_for(check, what: str):
    """Polls `check()` until it returns something truthy, within the receive timeout."""
    deadline = time.monotonic() + 2 * RECV_TIMEOUT
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_prometheus_counters_match_known_traffic(gateway, peers):
    sub = peers(gateway.broker, V5, client_id="py-metrics-sub").connect()
    sub.subscribe_ok("m/#", 1)
    mqtt_pub = peers(gateway.broker, V311, client_id="py-metrics-pub").connect()
    victim = peers(gateway.broker, V5, client_id="py-metrics-victim").connect()

    mqtt_qos1 = 4
    http_qos1 = 3
    for i in range(mqtt_qos1):
        mqtt_pub.publish("m/mqtt", f"mqtt {i}".encode(), qos=1)
    mqtt_pub.publish("m/mqtt", b"at most once", qos=0)
    for i in range(http_qos1):
        answer = gateway.publish(
            {"topic": "m/http", "payload": f"http {i}", "qos": 1, "retain": i == 0}
        )
        assert answer.json() == {"matched": 1}
    # An MQTT 5 publish to a topic nobody reads.
    victim.publish("nobody/here", b"x", qos=1, properties=publish_props(ContentType="a/b"))
    received = [sub.recv() for _ in range(mqtt_qos1 + 1 + http_qos1)]
    assert sorted(m.qos for m in received) == [0] + [1] * (mqtt_qos1 + http_qos1)

    answer = gateway.admin("DELETE", "/v1/admin/clients/py-metrics-victim")
    assert answer.status == 200
    assert victim.wait_closed_by_server().value == 0x98

    def settled():
        # The kicked connection leaves the gauges once its task has ended.
        samples = gateway.metrics()
        labels = {"listener": gateway.mqtt_listener, "protocol": "5.0"}
        v5 = samples.get(("tidegate_connections", frozenset(labels.items())))
        return samples if v5 == 1 else None

    samples = wait_for(settled, "the kicked client to leave tidegate_connections")
    listener = gateway.mqtt_listener
    assert sample(samples, "tidegate_connections", listener=listener, protocol="5.0") == 1
    assert sample(samples, "tidegate_connections", listener=listener, protocol="3.1.1") == 1
    assert sample(samples, "tidegate_connects_total", reason="0x00_success") == 3
    assert (
        sample(
            samples,
            "tidegate_disconnects_total",
            side="server",
            reason="0x98_administrative_action",
        )
        == 1
    )
    # N MQTT and M HTTP publications at QoS 1, one MQTT 5 one too, one at QoS 0.
    assert sample(samples, "tidegate_messages_received_total", qos="1") == (
        mqtt_qos1 + http_qos1 + 1
    )
    assert sample(samples, "tidegate_messages_received_total", qos="0") == 1
    assert sample(samples, "tidegate_messages_received_total", qos="2") == 0
    assert sample(samples, "tidegate_messages_sent_total", qos="1") == mqtt_qos1 + http_qos1
    assert sample(samples, "tidegate_messages_sent_total", qos="0") == 1
    assert sample(samples, "tidegate_messages_dropped_total", reason="no_subscribers") == 1
    assert sample(samples, "tidegate_messages_dropped_total", reason="queue_full") == 0
    assert sample(samples, "tidegate_retained_messages") == 1
    assert sample(samples, "tidegate_subscriptions") == 1
    assert sample(samples, "tidegate_sessions") == 2
    assert sample(samples, "tidegate_bytes_received_total") > 0
    assert sample(samples, "tidegate_bytes_sent_total") > 0
    # One latency observation per delivery, in cumulative buckets.
    deliveries = mqtt_qos1 + http_qos1 + 1
    assert sample(samples, "tidegate_publish_to_deliver_seconds_count") == deliveries
    assert sample(samples, "tidegate_publish_to_deliver_seconds_bucket", le="+Inf") == deliveries
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "tidegate_publish_to_deliver_seconds_bucket"
    )
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), buckets

    # The admin stats say the same as the metrics.
    stats = gateway.admin("GET", "/v1/admin/stats").json()
    assert stats["messages_in"] == mqtt_qos1 + http_qos1 + 2
    assert stats["messages_out"] == deliveries
    assert stats["connections"] == 2
