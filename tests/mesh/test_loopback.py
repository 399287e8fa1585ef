"""Loopback integration: CA + two ztunnels + echo, real sockets and real mTLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import ssl

import pytest

from mesh.errors import HboneError, IdentityError, TunnelRefused
from mesh.hbone import protocol as p
from mesh.hbone.client import dial
from mesh.hbone.tls import client_context
from mesh.identity import SpiffeId, certs
from mesh.ztunnel.metrics import sample
from tests.mesh.conftest import (
    OTHER_IP,
    SERVER_IP,
    Cluster,
    base_docs,
    creds_for,
    free_port,
    policy,
    roundtrip,
)

SLEEP = SpiffeId("cluster.local", "default", "sleep")
ECHO = SpiffeId("cluster.local", "default", "echo")


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_bytes_flow_both_ways(cluster: Cluster) -> None:
    reader, writer = await cluster.open()
    for size in (1, 1024, 100_000):
        payload = os.urandom(size)
        assert await roundtrip(reader, writer, payload) == payload
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # half-close propagated both ways
    writer.close()


async def test_backpressure_bounds_buffering_and_loses_nothing(cluster: Cluster) -> None:
    """Nobody reads the echoes: every buffer on the path fills until the client's writes block."""
    reader, writer = await cluster.open()
    chunk = os.urandom(1 << 20)
    cap, sent = 512 << 20, 0
    with contextlib.suppress(TimeoutError):
        while sent < cap:
            writer.write(chunk)
            sent += len(chunk)
            await asyncio.wait_for(writer.drain(), 2)
    # Bounded by two 4 MiB stream windows plus socket buffers, far below the cap.
    assert sent < cap // 4
    received = await asyncio.wait_for(reader.readexactly(sent), 60)
    assert received == chunk * (sent // len(chunk))
    writer.close()


async def test_concurrent_connections_share_one_pooled_connection(cluster: Cluster) -> None:
    async def one(i: int) -> bytes:
        reader, writer = await cluster.open()
        data = await roundtrip(reader, writer, f"conn-{i}".encode() * 100)
        writer.close()
        return data

    results = await asyncio.gather(*(one(i) for i in range(20)))
    assert all(r == f"conn-{i}".encode() * 100 for i, r in enumerate(results))
    assert len(cluster.ztunnels["node-a"].outbound.pool.connections()) == 1


async def test_big_transfer_does_not_stall(cluster: Cluster) -> None:
    payload = os.urandom(24 * 1024 * 1024)
    reader, writer = await cluster.open()

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await asyncio.wait_for(reader.read(), 60)
    await sender
    assert received == payload
    writer.close()


async def test_metrics_and_admin(cluster: Cluster) -> None:
    reader, writer = await cluster.open()
    await roundtrip(reader, writer, b"x" * 1000)
    writer.write_eof()
    await reader.read()
    writer.close()
    await asyncio.sleep(0.2)
    za, zb = cluster.ztunnels["node-a"], cluster.ztunnels["node-b"]
    src = {
        "reporter": "source",
        "source_workload": "sleep",
        "destination_workload": "echo",
        "connection_security_policy": "mutual_tls",
        "destination_principal": ECHO.uri,
        "source_principal": SLEEP.uri,
    }
    assert sample(za.metrics, "istio_tcp_connections_opened_total", src) == 1
    assert sample(za.metrics, "istio_tcp_connections_closed_total", src) == 1
    assert sample(za.metrics, "istio_tcp_received_bytes_total", src) == 1000
    assert sample(za.metrics, "istio_tcp_sent_bytes_total", src) == 1000
    dst = {
        "reporter": "destination",
        "destination_workload": "echo",
        "source_principal": SLEEP.uri,
        "destination_service": "echo.default.svc.cluster.local",
    }
    assert sample(zb.metrics, "istio_tcp_connections_closed_total", dst) == 1
    assert sample(zb.metrics, "istio_tcp_received_bytes_total", dst) == 1000
    status, body = await http_get(za.ports.metrics, "/metrics")
    assert status == 200 and b"istio_tcp_connections_opened_total{" in body
    status, body = await http_get(za.ports.ready, "/healthz/ready")
    assert (status, body) == (200, b"ready\n")
    status, body = await http_get(za.ports.admin, "/config_dump")
    dump = json.loads(body)
    assert status == 200
    assert {w["name"] for w in dump["workloads"]} == {"sleep", "echo"}
    (cert,) = dump["certificates"]
    assert cert["identity"] == SLEEP.uri and cert["certChain"][0]["expirationTime"]
    assert (await http_get(za.ports.admin, "/nope"))[0] == 404


async def test_direct_hbone_statuses(cluster: Cluster) -> None:
    conn = await dial(SERVER_IP, cluster.hbone_port, client_context(creds_for(cluster)), [ECHO])
    try:
        stream = await conn.open_tunnel(
            f"{SERVER_IP}:{cluster.echo_port}", p.ConnectHeaders("127.0.0.1:1")
        )
        await stream.write(b"hi")
        assert await stream.read() == b"hi"
        stream.end()
        assert await stream.read() == b""
        closed = free_port(SERVER_IP)
        with pytest.raises(TunnelRefused) as refused:
            await conn.open_tunnel(f"{SERVER_IP}:{closed}", p.ConnectHeaders("127.0.0.1:1"))
        assert refused.value.status == 503
        with pytest.raises(TunnelRefused) as mismatch:
            await conn.open_tunnel(f"{OTHER_IP}:80", p.ConnectHeaders("127.0.0.1:1"))
        assert mismatch.value.status == 400
        with pytest.raises(TunnelRefused) as selfcall:
            await conn.open_tunnel(
                f"{SERVER_IP}:{cluster.hbone_port}", p.ConnectHeaders("127.0.0.1:1")
            )
        assert selfcall.value.status == 503
    finally:
        conn.close()


async def test_deny_gives_401_and_closes(cluster: Cluster) -> None:
    deny = policy(
        "deny-sleep",
        "DENY",
        [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}],
    )
    await cluster.reload([*base_docs(cluster.echo_port), deny])
    conn = await dial(SERVER_IP, cluster.hbone_port, client_context(creds_for(cluster)), [ECHO])
    try:
        with pytest.raises(TunnelRefused) as refused:
            await conn.open_tunnel(
                f"{SERVER_IP}:{cluster.echo_port}", p.ConnectHeaders("127.0.0.1:1")
            )
        assert refused.value.status == 401
    finally:
        conn.close()
    reader, writer = await cluster.open()
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.read(), 5) == b""  # accepted, then closed
    writer.close()
    zb = cluster.ztunnels["node-b"]
    assert sample(zb.metrics, "istio_tcp_connections_closed_total", {"response_flags": "DENY"}) == 2
    assert cluster.echo.connections == 0


async def test_policy_change_closes_established(cluster: Cluster) -> None:
    reader, writer = await cluster.open()
    assert await roundtrip(reader, writer, b"before") == b"before"
    allow_other = policy("only-other", "ALLOW", [{"from": [{"source": {"namespaces": ["other"]}}]}])
    await cluster.reload([*base_docs(cluster.echo_port), allow_other])
    data = await asyncio.wait_for(reader.read(), 5)
    assert data == b""
    writer.close()


async def test_wrong_trust_domain_refused(cluster: Cluster) -> None:
    other_key = certs.generate_key()
    other_root = certs.create_root("evil.local", other_key)
    foreign = creds_for(
        cluster, SpiffeId("evil.local", "default", "sleep"), certs.Signer(other_root, other_key)
    )
    with pytest.raises((HboneError, TimeoutError, ConnectionError)):
        conn = await dial(SERVER_IP, cluster.hbone_port, client_context(foreign), [ECHO])
        await conn.open_tunnel(f"{SERVER_IP}:{cluster.echo_port}", p.ConnectHeaders("1.1.1.1:1"), 3)
    # signed by our own root but naming another trust domain: refused after the handshake
    forged = creds_for(cluster, SpiffeId("evil.local", "default", "sleep"))
    with pytest.raises((HboneError, TimeoutError, ConnectionError)):
        conn = await dial(SERVER_IP, cluster.hbone_port, client_context(forged), [ECHO])
        await conn.open_tunnel(f"{SERVER_IP}:{cluster.echo_port}", p.ConnectHeaders("1.1.1.1:1"), 3)
    assert cluster.echo.connections == 0


async def test_expired_client_certificate_refused(cluster: Cluster) -> None:
    now = certs.utcnow()
    expired = creds_for(
        cluster, not_before=now - dt.timedelta(hours=2), not_after=now - dt.timedelta(minutes=1)
    )
    with pytest.raises((HboneError, TimeoutError, ConnectionError)):
        conn = await dial(SERVER_IP, cluster.hbone_port, client_context(expired), [ECHO])
        await conn.open_tunnel(f"{SERVER_IP}:{cluster.echo_port}", p.ConnectHeaders("1.1.1.1:1"), 3)
    assert cluster.echo.connections == 0


async def test_tls12_client_gets_protocol_version_alert_and_is_counted(cluster: Cluster) -> None:
    ctx = client_context(creds_for(cluster))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError) as refused:
        await asyncio.wait_for(
            asyncio.open_connection(SERVER_IP, cluster.hbone_port, ssl=ctx, server_hostname=""), 5
        )
    # The server's alert arrived (not a bare EOF or reset): OpenSSL names it.
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    assert "protocol version" in str(refused.value)
    zb = cluster.ztunnels["node-b"]
    failed = {"reporter": "destination", "destination_workload": "echo"}
    assert (
        sample(
            zb.metrics,
            "istio_tcp_connections_failed_total",
            failed | {"response_flags": "TLS_FAILURE"},
        )
        == 1
    )
    assert cluster.echo.connections == 0


async def test_wrong_server_identity_refused(cluster: Cluster) -> None:
    with pytest.raises(IdentityError, match="not the expected"):
        await dial(
            SERVER_IP,
            cluster.hbone_port,
            client_context(creds_for(cluster)),
            [SpiffeId("cluster.local", "default", "someone-else")],
        )


async def test_client_without_certificate_refused(cluster: Cluster) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=certs.cert_to_pem(cluster.ca.material.root))
    ctx.set_alpn_protocols(["h2"])
    with pytest.raises((HboneError, TimeoutError, ConnectionError)):
        conn = await dial(SERVER_IP, cluster.hbone_port, ctx, [ECHO])
        await conn.open_tunnel(f"{SERVER_IP}:{cluster.echo_port}", p.ConnectHeaders("1.1.1.1:1"), 3)


async def test_pod_outside_mesh_passes_through(cluster: Cluster) -> None:
    docs = base_docs(cluster.echo_port)
    docs[0] = {**docs[0], "metadata": {"name": "default", "labels": {}}}
    await cluster.reload(docs)
    reader, writer = await cluster.open()
    assert await roundtrip(reader, writer, b"plain") == b"plain"
    writer.close()
    za = cluster.ztunnels["node-a"]
    await asyncio.sleep(0.1)
    assert (
        sample(
            za.metrics,
            "istio_tcp_connections_opened_total",
            {"connection_security_policy": "unknown"},
        )
        == 1
    )


async def test_http2_violation_gets_goaway_and_spares_other_connections(cluster: Cluster) -> None:
    """A peer breaking HTTP/2 framing (DATA on stream 0) gets GOAWAY(PROTOCOL_ERROR), is closed,
    and a tunnel on another HBONE connection to the same ztunnel carries on."""
    good = await dial(SERVER_IP, cluster.hbone_port, client_context(creds_for(cluster)), [ECHO])
    try:
        stream = await good.open_tunnel(
            f"{SERVER_IP}:{cluster.echo_port}", p.ConnectHeaders("127.0.0.1:1")
        )
        await stream.write(b"before")
        assert await stream.read() == b"before"
        reader, writer = await asyncio.open_connection(
            SERVER_IP,
            cluster.hbone_port,
            ssl=client_context(creds_for(cluster)),
            server_hostname="",
        )
        empty_settings = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        data_on_stream_0 = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + empty_settings + data_on_stream_0)
        received = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        writer.close()
        goaways = []
        while len(received) >= 9:
            length = int.from_bytes(received[:3], "big")
            if received[3] == 0x7:  # GOAWAY: last stream id, then the error code
                goaways.append(int.from_bytes(received[13:17], "big"))
            received = received[9 + length :]
        assert goaways == [p.ErrorCode.PROTOCOL_ERROR]
        await stream.write(b"after")
        assert await stream.read() == b"after"
    finally:
        good.close()
