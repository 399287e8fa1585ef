"""Interop with nghttpx (Debian nghttp2-proxy) in both directions."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mesh.hbone import protocol as p
from mesh.hbone.client import dial
from mesh.hbone.tls import Credentials, client_context
from mesh.identity import SpiffeId, certs
from tests.mesh.conftest import SERVER_IP, Cluster, base_docs, free_port, policy
from tests.mesh.connect_proxy import start_connect_proxy
from tests.mesh.echo import Echo

NGHTTPX = shutil.which("nghttpx")
pytestmark = pytest.mark.skipif(
    NGHTTPX is None, reason="nghttpx not installed (apt-get install nghttp2-proxy)"
)
SLEEP = SpiffeId("cluster.local", "default", "sleep")
PROXY_ID = SpiffeId("cluster.local", "default", "nghttpx")


def write_identity(
    directory: Path, signer: certs.Signer, ident: SpiffeId, name: str
) -> Credentials:
    key = certs.generate_key()
    leaf = certs.issue_svid(ident, key.public_key(), signer)
    (directory / f"{name}-key.pem").write_bytes(certs.key_to_pem(key))
    (directory / f"{name}.pem").write_text(certs.cert_to_pem(leaf))
    (directory / "root.pem").write_text(certs.cert_to_pem(signer.cert))
    return Credentials(
        certs.key_to_pem(key), (certs.cert_to_pem(leaf),), (certs.cert_to_pem(signer.cert),)
    )


async def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


def start_nghttpx(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    assert NGHTTPX is not None
    cmd = [NGHTTPX, "--conf=/dev/null", "--workers=1", "--no-ocsp", f"--errorlog-file={log}", *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def stop_later() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, int]]:
    server = Echo()
    port = await server.start("127.0.0.1")
    yield server, port
    await server.close()


async def test_our_client_through_nghttpx_server(
    tmp_path: Path, stop_later: list[subprocess.Popen[bytes]], echo: tuple[Echo, int]
) -> None:
    key = certs.generate_key()
    signer = certs.Signer(certs.create_root("cluster.local", key), key)
    write_identity(tmp_path, signer, PROXY_ID, "server")
    client_creds = write_identity(tmp_path, signer, SLEEP, "client")
    proxy, proxy_port = await start_connect_proxy()
    port = free_port()
    stop_later.append(
        start_nghttpx(
            [
                "-s",
                f"-f127.0.0.1,{port}",
                f"-b127.0.0.1,{proxy_port}",
                "--verify-client",
                f"--verify-client-cacert={tmp_path / 'root.pem'}",
                "--tls-min-proto-version=TLSv1.3",
                "--frontend-http2-window-size=4194304",
                "--frontend-http2-connection-window-size=16777216",
                str(tmp_path / "server-key.pem"),
                str(tmp_path / "server.pem"),
            ],
            tmp_path / "nghttpx.log",
        )
    )
    await wait_port(port)
    conn = await dial("127.0.0.1", port, client_context(client_creds), [PROXY_ID])
    try:
        streams = await asyncio.gather(
            *(
                conn.open_tunnel(f"127.0.0.1:{echo[1]}", p.ConnectHeaders("127.0.0.1:1"))
                for _ in range(5)
            )
        )
        for i, stream in enumerate(streams):
            payload = os.urandom(1000 + i * 50_000)
            await stream.write(payload)
            got = bytearray()
            while len(got) < len(payload):  # length-delimited: nghttpx does not forward half-close
                got += await asyncio.wait_for(stream.read(), 10)
            assert bytes(got) == payload
            stream.abort()
        assert conn.conn.peer_max_streams == 100
    finally:
        conn.close()
        proxy.close()


async def test_nghttpx_client_against_our_server(
    cluster: Cluster, tmp_path: Path, stop_later: list[subprocess.Popen[bytes]]
) -> None:
    write_identity(tmp_path, cluster.ca.material.signer, SLEEP, "client")
    port = free_port()
    stop_later.append(
        start_nghttpx(
            [
                "-s",
                f"-f127.0.0.1,{port};no-tls",
                f"-b{SERVER_IP},{cluster.hbone_port};;proto=h2;tls",
                f"--client-cert-file={tmp_path / 'client.pem'}",
                f"--client-private-key-file={tmp_path / 'client-key.pem'}",
                "--insecure",
                "--backend-http2-window-size=4194304",
                "--backend-http2-connection-window-size=16777216",
            ],
            tmp_path / "nghttpx.log",
        )
    )
    await wait_port(port)

    async def connect(target: str) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return head.split(b"\r\n", 1)[0], reader, writer

    status, reader, writer = await connect(f"{SERVER_IP}:{cluster.echo_port}")
    assert b" 200" in status
    payload = os.urandom(300_000)
    writer.write(payload)
    assert await asyncio.wait_for(reader.readexactly(len(payload)), 10) == payload
    writer.close()

    status, _, writer = await connect(f"{SERVER_IP}:{free_port(SERVER_IP)}")
    assert b" 503" in status
    writer.close()

    deny = policy("deny-all", "DENY", [{}])
    await cluster.reload([*base_docs(cluster.echo_port), deny])
    status, _, writer = await connect(f"{SERVER_IP}:{cluster.echo_port}")
    assert b" 401" in status
    writer.close()
