"""Transports with third-party clients: paho-mqtt over TLS with a client certificate and over
WSS, `openssl s_client` for ALPN, session resumption and the handshake failures, and
`tidegate serve --dev` serving TLS out of the box. Certificates are made at test time."""

from __future__ import annotations

import re
import ssl
import subprocess
import time

import pytest

from harness import RECV_TIMEOUT, V5, V311, Peer, free_port

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def wait_log(broker, needle: str) -> str:
    deadline = time.monotonic() + RECV_TIMEOUT
    while True:
        log = ANSI.sub("", broker.log())
        if needle in log:
            return log
        assert time.monotonic() < deadline, f"the log never said {needle!r}:\n{log}"
        time.sleep(0.02)


def s_client(port: int, *args: str, stdin: bytes = b"") -> str:
    """Runs `openssl s_client` against 127.0.0.1:`port`; returns stdout and stderr."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         *args],
        input=stdin,
        capture_output=True,
        timeout=RECV_TIMEOUT * 2,
    )
    return done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


@pytest.fixture
def mtls(pki, start_broker):
    """A server with a TLS listener that requires a client certificate and names clients by
    their CN."""
    port = free_port()
    extra = f'client_ca = "{pki.ca}"\nclient_auth = "required"\nidentity_from = "cn"'
    broker = start_broker(listeners=pki.tls_listener("tls", port, extra))
    return broker, port


def test_paho_over_tls_with_a_client_certificate(pki, mtls, peers):
    broker, port = mtls
    cert, key = pki.client("phone-7")
    tls = {"ca_certs": str(pki.ca), "certfile": str(cert), "keyfile": str(key)}
    phone = peers(broker, V5, client_id="phone-7-session", port=port, tls=tls).connect()
    phone.subscribe_ok("tls/#", qos=1)
    plain = peers(broker, V311).connect()
    plain.publish("tls/a", b"over tcp", qos=1)
    message = phone.recv()
    assert (message.topic, message.payload) == ("tls/a", b"over tcp")
    phone.publish("tls/b", b"over tls", qos=1)
    assert phone.recv().payload == b"over tls"
    # The verified certificate's CN reached the connect line.
    log = wait_log(broker, "client_id=phone-7-session")
    line = next(l for l in log.splitlines() if "client_id=phone-7-session" in l)
    assert "cert_identity=phone-7" in line, line


@pytest.mark.parametrize("which", ["none", "stranger"])
def test_paho_without_a_trusted_certificate_is_refused(pki, mtls, which):
    broker, port = mtls
    tls = {"ca_certs": str(pki.ca)}
    if which == "stranger":
        cert, key = pki.stranger()
        tls.update(certfile=str(cert), keyfile=str(key))
    peer = Peer(broker, V311, port=port, tls=tls)
    try:
        with pytest.raises((ssl.SSLError, OSError, AssertionError)):
            peer.connect()
    finally:
        peer.stop()
    wait_log(broker, "TLS handshake failed")


def test_openssl_sees_alpn_mqtt_and_resumes_tls12_sessions(pki, start_broker, tmp_path):
    port = free_port()
    start_broker(listeners=pki.tls_listener("tls", port))
    out = s_client(port, "-alpn", "mqtt", "-CAfile", str(pki.ca))
    assert "ALPN protocol: mqtt" in out, out
    assert "Verify return code: 0 (ok)" in out, out
    session = tmp_path / "session.pem"
    first = s_client(port, "-tls1_2", "-CAfile", str(pki.ca), "-sess_out", str(session))
    assert "New, TLSv1.2" in first, first
    second = s_client(port, "-tls1_2", "-CAfile", str(pki.ca), "-sess_in", str(session))
    assert "Reused, TLSv1.2" in second, second


def test_openssl_handshake_failures_are_logged_with_their_reason(pki, mtls):
    broker, port = mtls
    # No client certificate: the server refuses (TLS 1.3 "certificate required").
    # -ign_eof: with TLS 1.3 the client's side of the handshake ends first; keep reading
    # until the server's alert arrives.
    out = s_client(port, "-CAfile", str(pki.ca), "-ign_eof", stdin=b"\x10\x00")
    assert "certificate required" in out, out
    wait_log(broker, "peer sent no certificates")
    # A client offering only another application protocol.
    cert, key = pki.client("alpn-h2")
    out = s_client(port, "-CAfile", str(pki.ca), "-cert", str(cert), "-key", str(key),
                   "-alpn", "h2", "-ign_eof")
    assert "no application protocol" in out, out
    wait_log(broker, "peer doesn't support any known protocol")


def test_plaintext_mqtt_on_the_tls_port_is_refused(pki, start_broker):
    port = free_port()
    broker = start_broker(listeners=pki.tls_listener("tls", port))
    peer = Peer(broker, V311, port=port)
    try:
        with pytest.raises((OSError, AssertionError)):
            peer.connect()
    finally:
        peer.stop()
    wait_log(broker, "TLS handshake failed")


def test_paho_over_wss_and_goodbye_on_sigterm(pki, start_broker, peers):
    wss, ws = free_port(), free_port()
    broker = start_broker(
        config="[shutdown]\nserver_reference = \"next.example:8884\"\n",
        listeners=pki.tls_listener("wss", wss)
        + f'[[listeners]]\nkind = "ws"\nbind = "127.0.0.1:{ws}"\n',
    )
    browser = peers(broker, V5, port=wss, transport="websockets",
                    tls={"ca_certs": str(pki.ca)}).connect()
    browser.subscribe_ok("web/#", qos=2)
    insecure = peers(broker, V311, port=ws, transport="websockets").connect()
    insecure.publish("web/x", b"from ws", qos=2)
    assert browser.recv().payload == b"from ws"
    big = bytes(range(256)) * 300
    browser.publish("web/big", big, qos=1)
    assert browser.recv().payload == big
    broker.sigterm()
    reason = browser.wait_closed_by_server()
    assert reason.value == 0x8B, reason
    insecure.wait_closed_by_server()
    assert broker.wait_exit() == 0


def test_dev_mode_serves_tls_out_of_the_box(start_broker, peers, tmp_path):
    port = free_port()
    data = tmp_path / "data"
    broker = start_broker(
        listeners=f'[[listeners]]\nkind = "tls"\nbind = "127.0.0.1:{port}"\n',
        args=["--dev", "--data-dir", str(data)],
    )
    ca = data / "dev-tls" / "ca.pem"
    assert ca.is_file()
    wait_log(broker, str(ca))
    client = peers(broker, V5, port=port, tls={"ca_certs": str(ca)}).connect()
    client.subscribe_ok("dev/t", qos=1)
    client.publish("dev/t", b"trusted", qos=1)
    assert client.recv().payload == b"trusted"
