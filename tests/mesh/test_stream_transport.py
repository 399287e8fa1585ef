"""TunnelTransport: asyncio protocols on both ends of a real HBONE tunnel over loopback TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from mesh.hbone import protocol as p
from mesh.hbone.stream_transport import HIGH_WATER, TunnelTransport
from mesh.hbone.tls import server_context
from mesh.hbone.transport import H2Transport, TunnelStream
from mesh.identity import certs
from tests.mesh.test_pool import SERVER, EchoHbone, make_creds


class Recorder(asyncio.Protocol):
    """Records what a protocol is told; echoes when asked; may hold reading paused."""

    def __init__(self, echo: bool = False, hold: bool = False) -> None:
        self.echo = echo
        self.hold = hold
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()
        self.eof = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost_with: Exception | None = None
        self.paused = 0
        self.resumed = 0
        self.received = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.hold:
            transport.pause_reading()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.received.set()
        if self.echo and self.transport is not None:
            self.transport.write(data)

    def eof_received(self) -> bool:
        self.eof.set()
        if self.echo and self.transport is not None:
            self.transport.write_eof()
        return True

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_with = exc
        self.lost.set()


@dataclass
class Peers:
    """An HBONE server whose tunnels each get a :class:`Recorder` as their protocol."""

    hbone: EchoHbone
    servers: list[Recorder] = field(default_factory=list)
    echo: bool = True
    hold: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def open(self, protocol: asyncio.Protocol) -> TunnelTransport:
        pool = self.hbone.client()
        stream = await pool.open(self.hbone.key(), "127.0.0.1:80", p.ConnectHeaders("1.2.3.4:5"))
        transport = TunnelTransport(stream, protocol, {"peername": ("127.0.0.1", 80)})
        transport.start()
        return transport


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    key = certs.generate_key()
    signer = certs.Signer(certs.create_root("cluster.local", key), key)
    ctx = server_context(make_creds(signer, SERVER))
    transports: list[H2Transport] = []
    made: list[Peers] = []

    async def on_request(stream: TunnelStream, request: p.TunnelRequest) -> None:
        stream.transport.conn.accept(stream.stream_id)
        stream.transport.flush()
        server = Recorder(echo=made[0].echo, hold=made[0].hold)
        made[0].servers.append(server)
        TunnelTransport(stream, server).start()
        made[0].arrived.set()

    def factory() -> H2Transport:
        t = H2Transport(client_side=False, on_request=on_request, ping_interval=0)
        transports.append(t)
        return t

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    made.append(Peers(EchoHbone(port, signer, transports, server)))
    yield made[0]
    for t in transports:
        t.close()
    server.close()


async def test_bytes_flow_both_ways_and_half_close_is_carried(peers: Peers) -> None:
    client = Recorder()
    transport = await peers.open(client)
    assert transport.get_extra_info("peername") == ("127.0.0.1", 80)
    transport.write(b"hello ")
    transport.write(b"tunnel")
    transport.write_eof()
    await asyncio.wait_for(client.eof.wait(), 5)
    assert bytes(client.data) == b"hello tunnel"
    assert bytes(peers.servers[0].data) == b"hello tunnel"
    await asyncio.wait_for(client.lost.wait(), 5)  # both directions ended: the tunnel is done
    assert client.lost_with is None


async def test_a_full_window_pauses_the_writer_until_the_reader_resumes(peers: Peers) -> None:
    peers.echo, peers.hold = False, True
    client = Recorder()
    transport = await peers.open(client)
    payload = b"x" * (p.STREAM_WINDOW + 2 * HIGH_WATER)
    transport.write(payload)
    assert client.paused == 1  # beyond the stream window, more than HIGH_WATER waits here
    assert transport.get_write_buffer_size() > HIGH_WATER
    server = peers.servers[0]
    for _ in range(200):
        if len(server.data) >= p.STREAM_WINDOW:
            break
        await asyncio.wait_for(server.received.wait(), 5)
        server.received.clear()
    assert len(server.data) == p.STREAM_WINDOW  # the held reader returned no window credit
    assert server.transport is not None
    server.transport.resume_reading()
    for _ in range(200):
        if len(server.data) == len(payload):
            break
        await asyncio.wait_for(server.received.wait(), 5)
        server.received.clear()
    assert len(server.data) == len(payload)
    assert client.resumed == 1
    assert transport.get_write_buffer_size() == 0


async def test_abort_resets_the_tunnel_and_the_peer_hears_of_it(peers: Peers) -> None:
    client = Recorder()
    transport = await peers.open(client)
    transport.write(b"ping")
    await asyncio.wait_for(peers.arrived.wait(), 5)
    server = peers.servers[0]
    await asyncio.wait_for(server.received.wait(), 5)
    transport.abort()
    assert transport.is_closing()
    await asyncio.wait_for(server.lost.wait(), 5)
    assert isinstance(server.lost_with, ConnectionResetError)
    assert client.lost.is_set()
