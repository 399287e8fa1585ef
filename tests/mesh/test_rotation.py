"""Certificate rotation under steady traffic: 1-minute certificates, nothing dropped."""

from __future__ import annotations

import asyncio
import time

from cryptography import x509

from mesh.identity import SpiffeId
from tests.mesh.conftest import ClusterFactory, roundtrip

SLEEP = SpiffeId("cluster.local", "default", "sleep")
ECHO = SpiffeId("cluster.local", "default", "echo")
DURATION = 14.0


async def test_rotation_under_traffic_drops_nothing(cluster_factory: ClusterFactory) -> None:
    # 60 s certificates (the CA minimum) rotated at 10 % of their remaining life (~6 s) instead of
    # the default 50 %, so several rotations happen while traffic runs for 14 s.
    cluster = await cluster_factory(cert_ttl=60, rotate_fraction=0.1)
    za, zb = cluster.ztunnels["node-a"], cluster.ztunnels["node-b"]
    first = za.certs.current(SLEEP)
    assert first is not None
    lifetime = first.not_after - first.received_at
    assert 55 <= lifetime.total_seconds() <= 61

    long_reader, long_writer = await cluster.open()
    deadline = time.monotonic() + DURATION
    ok = failures = 0
    server_serials: set[int] = set()

    async def short_connections() -> None:
        nonlocal ok, failures
        while time.monotonic() < deadline:
            try:
                reader, writer = await cluster.open()
                payload = f"short-{ok}".encode() * 64
                assert await roundtrip(reader, writer, payload, timeout=5) == payload
                writer.close()
                ok += 1
            except (AssertionError, OSError, asyncio.IncompleteReadError, TimeoutError):
                failures += 1
            await asyncio.sleep(0.05)

    async def long_connection() -> None:
        nonlocal ok, failures
        i = 0
        while time.monotonic() < deadline:
            payload = f"long-{i}".encode() * 128
            try:
                assert await roundtrip(long_reader, long_writer, payload, timeout=5) == payload
                ok += 1
            except (AssertionError, OSError, asyncio.IncompleteReadError, TimeoutError):
                failures += 1
            i += 1
            await asyncio.sleep(0.02)

    async def churn_pool() -> None:
        # New HBONE connections every 2 s so fresh handshakes use the rotated certificates;
        # existing tunnels on the draining connection must keep flowing.
        while time.monotonic() < deadline:
            for conn in za.outbound.pool.connections():
                der = conn.get_extra_info("ssl_object").getpeercert(binary_form=True)  # type: ignore[union-attr]
                server_serials.add(x509.load_der_x509_certificate(der).serial_number)
                conn.goaway()
            await asyncio.sleep(2.0)

    await asyncio.gather(short_connections(), long_connection(), churn_pool())
    long_writer.close()
    assert failures == 0
    assert ok > 100
    assert za.certs.rotations >= 1 and zb.certs.rotations >= 1
    assert len(server_serials) >= 2, "new handshakes presented the rotated server certificate"
    latest = za.certs.current(SLEEP)
    assert (
        latest is not None and latest.issued.leaf.serial_number != first.issued.leaf.serial_number
    )
