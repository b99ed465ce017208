"""Fixtures for the paho-mqtt black-box suite: the `tidegate` binary under test (path from
`TIDEGATE_BIN`, default `target/debug/tidegate` from the repository root), a fresh server per
test, and clients that are always torn down."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import VERSIONS, Broker, Peer, version_id
from pki import Pki

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tidegate_bin() -> Path:
    path = Path(os.environ.get("TIDEGATE_BIN", ROOT / "target" / "debug" / "tidegate"))
    if not path.is_absolute():
        path = ROOT / path
    if not path.is_file():
        pytest.fail(f"tidegate binary not found at {path}: run `cargo build` or set TIDEGATE_BIN")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def start_broker(tidegate_bin, request):
    """Starts servers (optionally with a TOML config); all are killed after the test, and their
    output is printed when the test failed."""
    brokers: list[Broker] = []

    def start(
        config: str | None = None, listeners: str | None = None, args: list[str] | None = None
    ) -> Broker:
        broker = Broker(tidegate_bin, config, listeners, args)
        brokers.append(broker)
        return broker

    yield start
    failed = getattr(request.node, "report_call", None)
    for broker in brokers:
        broker.kill()
        if failed is not None and failed.failed:
            print(f"---- tidegate output (port {broker.port}) ----\n{broker.log()}")
        broker.close()


@pytest.fixture
def broker(start_broker) -> Broker:
    return start_broker()


@pytest.fixture
def peers():
    """Creates clients and stops them all at teardown, so no network thread outlives a test."""
    made: list[Peer] = []

    def make(broker: Broker, version: int, **kwargs) -> Peer:
        peer = Peer(broker, version, **kwargs)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.stop()


@pytest.fixture(params=VERSIONS, ids=version_id)
def version(request) -> int:
    return request.param


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A test CA, a server certificate for localhost and client certificates, made with the
    `openssl` command line at test time."""
    return Pki(tmp_path_factory.mktemp("pki"))
