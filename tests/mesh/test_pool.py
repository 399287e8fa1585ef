"""The HBONE client pool and transport over real loopback TLS: limits, GOAWAY, idle, keep-alive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from mesh.hbone import protocol as p
from mesh.hbone.client import dial
from mesh.hbone.pool import HbonePool, PoolKey
from mesh.hbone.tls import Credentials, client_context, server_context
from mesh.hbone.transport import H2Transport, TunnelStream
from mesh.identity import SpiffeId, certs

SERVER = SpiffeId("cluster.local", "default", "server")


def make_creds(signer: certs.Signer, ident: SpiffeId) -> Credentials:
    key = certs.generate_key()
    leaf = certs.issue_svid(ident, key.public_key(), signer)
    return Credentials(
        certs.key_to_pem(key), (certs.cert_to_pem(leaf),), (certs.cert_to_pem(signer.cert),)
    )


@dataclass
class EchoHbone:
    """An HBONE server that accepts every CONNECT and echoes the tunnel."""

    port: int
    signer: certs.Signer
    transports: list[H2Transport]
    server: asyncio.AbstractServer

    def client(self, name: str = "client", ping_interval: float = 10.0) -> HbonePool:
        ctx = client_context(make_creds(self.signer, SpiffeId("cluster.local", "default", name)))

        async def dialer(key: PoolKey) -> H2Transport:
            return await dial("127.0.0.1", self.port, ctx, key.destinations, ping_interval)

        return HbonePool(dialer, max_streams=100)

    def key(self, name: str = "client") -> PoolKey:
        return PoolKey(
            SpiffeId("cluster.local", "default", name),
            frozenset({SERVER}),
            ("127.0.0.1", self.port),
        )


async def echo_tunnel(stream: TunnelStream, request: p.TunnelRequest) -> None:
    stream.transport.conn.accept(stream.stream_id)
    stream.transport.flush()
    while data := await stream.read():
        await stream.write(data)
    stream.end()


@pytest.fixture
async def hbone_server() -> AsyncIterator[EchoHbone]:
    key = certs.generate_key()
    signer = certs.Signer(certs.create_root("cluster.local", key), key)
    ctx = server_context(make_creds(signer, SERVER))
    transports: list[H2Transport] = []
    loop = asyncio.get_running_loop()

    def factory() -> H2Transport:
        t = H2Transport(client_side=False, on_request=echo_tunnel, ping_interval=0)
        transports.append(t)
        return t

    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    yield EchoHbone(port, signer, transports, server)
    for t in transports:
        t.close()
    server.close()


async def tunnel(pool: HbonePool, key: PoolKey) -> TunnelStream:
    return await pool.open(key, "10.0.0.1:80", p.ConnectHeaders("127.0.0.1:1"))


async def test_streams_share_one_connection_until_the_limit(hbone_server: EchoHbone) -> None:
    pool = hbone_server.client()
    key = hbone_server.key()
    streams = await asyncio.gather(*(tunnel(pool, key) for _ in range(100)))
    assert len(pool.connections(key)) == 1
    extra = await tunnel(pool, key)
    assert len(pool.connections(key)) == 2, "stream limit reached: another connection"
    for s in [*streams, extra]:
        await s.write(b"x")
        assert await s.read() == b"x"
        s.end()
    await pool.close()


async def test_one_connection_per_source_identity(hbone_server: EchoHbone) -> None:
    pools = [hbone_server.client(f"c{i}") for i in range(3)]
    for i, pool in enumerate(pools):
        await asyncio.gather(*(tunnel(pool, hbone_server.key(f"c{i}")) for _ in range(10)))
    assert len(hbone_server.transports) == 3
    for pool in pools:
        await pool.close()


async def test_concurrent_first_requests_dial_once(hbone_server: EchoHbone) -> None:
    pool = hbone_server.client()
    await asyncio.gather(*(tunnel(pool, hbone_server.key()) for _ in range(50)))
    assert len(hbone_server.transports) == 1
    await pool.close()


async def test_server_goaway_drains_and_next_request_reconnects(hbone_server: EchoHbone) -> None:
    pool = hbone_server.client()
    key = hbone_server.key()
    first = await tunnel(pool, key)
    await asyncio.sleep(0.05)
    hbone_server.transports[0].goaway()
    await asyncio.sleep(0.05)
    second = await tunnel(pool, key)
    assert len(hbone_server.transports) == 2
    for s in (first, second):  # the draining connection still carries its open tunnel
        await s.write(b"still here")
        assert await s.read() == b"still here"
        s.end()
        assert await s.read() == b""
    await pool.close()


async def test_idle_connections_are_closed(hbone_server: EchoHbone) -> None:
    pool = hbone_server.client()
    pool.idle_timeout = 0.2
    key = hbone_server.key()
    s = await tunnel(pool, key)
    await s.write(b"a")
    await s.read()
    s.end()
    assert await s.read() == b""
    s.transport.release(s)
    await asyncio.sleep(0.6)
    assert pool.connections(key) == []
    await pool.close()


async def test_ping_keepalive(hbone_server: EchoHbone) -> None:
    pool = hbone_server.client(ping_interval=0.1)
    key = hbone_server.key()
    await tunnel(pool, key)
    conn = pool.connections(key)[0]
    await asyncio.sleep(0.5)
    assert not conn.closed
    assert conn.pings_acked >= 2
    await pool.close()


async def test_bidirectional_bulk_with_backpressure(hbone_server: EchoHbone) -> None:
    pool = hbone_server.client()
    s = await tunnel(pool, hbone_server.key())
    payload = bytes(range(256)) * 40_000  # ~10 MB, more than every window combined
    received = bytearray()

    async def reader() -> None:
        while data := await s.read():
            received.extend(data)

    task = asyncio.create_task(reader())
    await s.write(payload)
    s.end()
    await asyncio.wait_for(task, 30)
    assert bytes(received) == payload
    await pool.close()
