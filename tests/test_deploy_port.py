"""The deploy stage's server ports: free, and never where the kernel hands ports to
outgoing connections (a server binds only after loading its model)."""

from __future__ import annotations

import socket
from pathlib import Path

from hpcft.jobs import deploy


def test_a_server_port_is_free_and_below_the_ephemeral_range():
    ephemeral = deploy.ephemeral_ports()
    ports = {deploy.free_port() for _ in range(20)}
    assert all(p < ephemeral.start for p in ports) and len(ports) > 1, (ports, ephemeral)
    for port in ports:
        with socket.socket() as s:
            s.bind(("", port))  # free: binds


def test_a_taken_port_is_not_offered(monkeypatch):
    with socket.socket() as held:
        held.bind(("", 0))
        taken = held.getsockname()[1]
        monkeypatch.setattr(deploy.random, "sample", lambda _r, _k: [taken, taken + 1])
        monkeypatch.setattr(deploy, "ephemeral_ports", lambda: range(taken + 1000, 65000))
        assert deploy.free_port() != taken


def test_without_a_range_below_it_the_kernel_picks(monkeypatch, tmp_path: Path):
    narrow = tmp_path / "range"
    narrow.write_text("1024\t65535\n")
    monkeypatch.setattr(deploy, "EPHEMERAL_RANGE", narrow)
    assert deploy.ephemeral_ports() == range(1024, 65536)
    assert 0 < deploy.free_port() < 65536
