"""Black-box harness for the paho-mqtt suite.

`Broker` runs the real `tidegate` binary the way a user would
(`tidegate serve [--config FILE] --listen tcp://127.0.0.1:PORT`) on a free loopback port.
`Peer` wraps a paho-mqtt 2.x client (callback API version 2) so that every wait is bounded:
each helper blocks for one event with a timeout and fails the test if it does not come.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

# How long one expected event may take (debug build, loaded 2-core CI machine).
RECV_TIMEOUT = 5.0
# How long to wait before concluding that something does not arrive: the spec gives no event
# for absence, so this is the one fixed wait.
QUIET_PERIOD = 0.3

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
VERSIONS = (V311, V5)


def version_id(version: int) -> str:
    return "v311" if version == V311 else "v5"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A `tidegate serve` process owned by one test."""

    def __init__(
        self,
        binary: Path,
        config: str | None = None,
        listeners: str | None = None,
        args: list[str] | None = None,
    ) -> None:
        """`listeners` (TOML `[[listeners]]` entries) are served beside a tcp listener on
        `self.port`, from the config file instead of `--listen` (which would replace them);
        `args` are extra `tidegate serve` flags."""
        self.dir = tempfile.TemporaryDirectory(prefix="tidegate-py-")
        self.log_path = Path(self.dir.name) / "tidegate.log"
        last_error = ""
        # The port was free when probed; if another process takes it before the server binds,
        # the start fails and is retried on a new port.
        for _ in range(3):
            self.port = free_port()
            argv = [str(binary), "serve", *(args or [])]
            text = config
            if listeners is not None:
                own = f'[[listeners]]\nkind = "tcp"\nbind = "127.0.0.1:{self.port}"\n'
                text = (config or "") + "\n" + own + listeners
            if text is not None:
                config_path = Path(self.dir.name) / "tidegate.toml"
                config_path.write_text(text)
                argv += ["--config", str(config_path)]
            if listeners is None:
                argv += ["--listen", f"tcp://127.0.0.1:{self.port}"]
            env = dict(os.environ)
            env.setdefault("RUST_LOG", "info")
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=self.dir.name,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            if self._wait_listening():
                return
            last_error = self.log()
            self.kill()
        raise RuntimeError(f"tidegate did not start listening:\n{last_error}")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = RECV_TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=RECV_TIMEOUT)

    def close(self) -> None:
        self.kill()
        self.dir.cleanup()


class Peer:
    """A paho-mqtt client with bounded, event-driven waits.

    Automatic reconnection is off: a connection the server closes stays closed, so takeover and
    shutdown can be observed, and a test never talks to the server behind its own back.
    """

    _next = 0

    def __init__(
        self,
        broker: Broker,
        version: int,
        client_id: str | None = None,
        clean: bool = True,
        session_expiry: int | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        will_properties: Properties | None = None,
        port: int | None = None,
        transport: str = "tcp",
        tls: dict | None = None,
    ) -> None:
        """`port`, `transport` ("tcp" or "websockets", path /mqtt) and `tls` (keyword arguments
        of paho's `tls_set`: ca_certs, certfile, keyfile) select another listener than the
        broker's plain TCP one; with TLS the host is `localhost`, the name in its certificate."""
        if client_id is None:
            Peer._next += 1
            client_id = f"py-{os.getpid()}-{Peer._next}"
        self.broker = broker
        self.version = version
        self.clean = clean
        self.session_expiry = session_expiry
        kwargs = {}
        if version == V311:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=version,
            reconnect_on_failure=False,
            transport=transport,
            **kwargs,
        )
        self.port = port if port is not None else broker.port
        self.host = "localhost" if tls is not None else "127.0.0.1"
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        if tls is not None:
            self.client.tls_set(**tls)
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain, properties=will_properties)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.subacks: queue.Queue[list] = queue.Queue()
        self.unsubacks: queue.Queue[int] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_flags = None
        self.connack_reason = None
        self.connack_properties = None
        self.disconnect_reason = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put(codes)
        self.client.on_unsubscribe = lambda _c, _u, mid, _codes, _p: self.unsubacks.put(mid)

    def _on_connect(self, _client, _userdata, flags, reason_code, properties) -> None:
        self.connack_flags = flags
        self.connack_reason = reason_code
        self.connack_properties = properties
        self.connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.disconnect_reason = reason_code
        self.disconnected.set()

    # -- connection ---------------------------------------------------------------------------

    def connect(self, user_properties: list[tuple[str, str]] | None = None) -> "Peer":
        props = None
        clean_start = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if self.version == V5:
            clean_start = self.clean
            props = Properties(PacketTypes.CONNECT)
            if self.session_expiry is not None:
                props.SessionExpiryInterval = self.session_expiry
            if user_properties:
                props.UserProperty = user_properties
        self.client.connect(
            self.host, self.port, keepalive=30, clean_start=clean_start, properties=props
        )
        self.client.loop_start()
        assert self.connected.wait(RECV_TIMEOUT), "no CONNACK"
        assert not self.connack_reason.is_failure, f"refused: {self.connack_reason}"
        return self

    @property
    def session_present(self) -> bool:
        return bool(self.connack_flags.session_present)

    def disconnect(self) -> None:
        """Normal DISCONNECT."""
        self.client.disconnect()
        assert self.disconnected.wait(RECV_TIMEOUT), "disconnect did not complete"
        self.client.loop_stop()

    def kill(self) -> None:
        """Drops the TCP connection without DISCONNECT, like a device losing power."""
        sock = self.client.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)
        assert self.disconnected.wait(RECV_TIMEOUT), "paho did not notice the dropped socket"
        self.client.loop_stop()

    def wait_closed_by_server(self) -> mqtt.ReasonCode:
        assert self.disconnected.wait(RECV_TIMEOUT), "the server did not close the connection"
        self.client.loop_stop()
        return self.disconnect_reason

    def stop(self) -> None:
        """Test teardown: end the network thread whatever state the client is in."""
        if not self.disconnected.is_set() and self.connected.is_set():
            try:
                self.client.disconnect()
                self.disconnected.wait(1.0)
            except Exception:  # noqa: BLE001 - teardown must not mask the test's own failure
                pass
        self.client.loop_stop()

    # -- operations ---------------------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        qos: int = 1,
        options: SubscribeOptions | None = None,
        subscription_id: int | None = None,
    ) -> list:
        props = None
        if subscription_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = subscription_id
        if options is not None:
            result, _mid = self.client.subscribe(topic, options=options, properties=props)
        else:
            result, _mid = self.client.subscribe(topic, qos, properties=props)
        assert result == mqtt.MQTT_ERR_SUCCESS
        try:
            return self.subacks.get(timeout=RECV_TIMEOUT)
        except queue.Empty:
            raise AssertionError("no SUBACK") from None

    def subscribe_ok(self, topic: str, qos: int = 1, **kwargs) -> None:
        codes = self.subscribe(topic, qos, **kwargs)
        granted = kwargs["options"].QoS if "options" in kwargs else qos
        assert [c.value for c in codes] == [granted], codes

    def unsubscribe(self, topic: str) -> None:
        result, mid = self.client.unsubscribe(topic)
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert self.unsubacks.get(timeout=RECV_TIMEOUT) == mid

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publishes and waits until the QoS flow is complete (PUBACK / PUBCOMP)."""
        info = self.client.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(RECV_TIMEOUT)
        assert info.is_published(), f"publish to {topic!r} not acknowledged"

    def recv(self) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=RECV_TIMEOUT)
        except queue.Empty:
            raise AssertionError("no message within the timeout") from None

    def expect_nothing(self) -> None:
        try:
            msg = self.messages.get(timeout=QUIET_PERIOD)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {msg.topic}: {msg.payload!r}")


def publish_props(**fields) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    for name, value in fields.items():
        setattr(props, name, value)
    return props
