"""Graceful shutdown: on SIGTERM tidegate tells 5.0 clients why (DISCONNECT 0x8B, Server
shutting down), closes 3.1.1 connections, and exits with status 0."""

from harness import V5, V311


def test_sigterm_disconnects_clients_and_exits_zero(broker, peers):
    v5 = peers(broker, V5).connect()
    v311 = peers(broker, V311).connect()

    broker.sigterm()
    reason = v5.wait_closed_by_server()
    assert reason.value == 0x8B, f"expected Server shutting down, got {reason}"
    v311.wait_closed_by_server()
    assert broker.wait_exit() == 0
