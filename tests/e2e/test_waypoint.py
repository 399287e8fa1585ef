"""Waypoint mode end to end: client -> ztunnel node-a -> the gateway as waypoint -> ztunnel node-b
-> server, every hop a real process on loopback, the client a real HTTP client."""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from mesh.errors import TunnelRefused
from mesh.hbone import protocol as p
from mesh.hbone.client import dial
from mesh.hbone.tls import Credentials, client_context
from mesh.identity import SpiffeId, certs
from tests.fixtures.waypoint_mesh import (
    ECHO_VIP,
    SLEEP,
    V1_IP,
    V2_IP,
    WAYPOINT,
    WAYPOINT_IP,
    WaypointMesh,
    route_docs,
)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WaypointMesh]:
    started = WaypointMesh(tmp_path_factory.mktemp("waypoint"))
    try:
        started.start()
        yield started
    finally:
        started.stop()


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of ``name`` whose labels include ``labels``."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                out.append((sample.labels, sample.value))
    return out


def mesh_credentials(directory: Path, identity: str) -> Credentials:
    """An SVID signed by the mesh CA (its root key from the CA's state directory)."""
    root_pem = (directory / "ca" / "root-cert.pem").read_bytes()
    root = certs.certs_from_pem(root_pem)[0]
    signer = certs.Signer(
        root, certs.key_from_pem((directory / "ca" / "root-key.pem").read_bytes())
    )
    key = certs.generate_key()
    leaf = certs.issue_svid(SpiffeId.parse(identity), key.public_key(), signer)  # type: ignore[arg-type]
    return Credentials(certs.key_to_pem(key), (certs.cert_to_pem(leaf),), (root_pem.decode(),))


def test_header_match_picks_v2_and_the_request_arrives_from_the_waypoint(
    mesh: WaypointMesh,
) -> None:
    response = httpx.get(f"{mesh.url}/hello", headers={"x-version": "v2"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["x-echo-backend"] == "v2"
    assert response.json()["path"] == "/hello"
    opened = samples(
        mesh.metrics("node-b"),
        "istio_tcp_connections_opened_total",
        reporter="destination",
        destination_workload="echo-v2",
    )
    assert opened, mesh.metrics("node-b")
    assert {labels["source_principal"] for labels, _ in opened} == {WAYPOINT}


def test_traceparent_passes_through_both_tunnels(mesh: WaypointMesh) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    sent = f"00-{trace_id}-00f067aa0ba902b7-01"
    response = httpx.get(
        f"{mesh.url}/traced", headers={"traceparent": sent, "x-version": "v2"}, timeout=10
    )
    received = response.json()["headers"]["traceparent"]
    assert received.split("-")[1] == trace_id  # the same trace, the waypoint's span as parent


def test_weighted_split_sends_80_20_without_a_header(mesh: WaypointMesh) -> None:
    counts: collections.Counter[str] = collections.Counter()
    with httpx.Client(timeout=10) as client:
        for _ in range(50):
            response = client.get(f"{mesh.url}/")
            assert response.status_code == 200
            counts[response.headers["x-echo-backend"]] += 1
    # Smooth weighted round robin: every 5 consecutive picks hold 4 v1 and 1 v2.
    assert counts == {"v1": 40, "v2": 10}


def test_l7_deny_on_admin_paths_for_the_client_principal(mesh: WaypointMesh) -> None:
    with httpx.Client(timeout=10) as client:
        denied = client.get(f"{mesh.url}/admin/users")
        allowed = client.get(f"{mesh.url}/")
        also_denied = client.get(f"{mesh.url}/administrator")
    assert denied.status_code == 403
    assert denied.text == "RBAC: access denied"
    assert also_denied.status_code == 403
    assert allowed.status_code == 200


def test_sse_stream_crosses_both_tunnels_without_buffering(mesh: WaypointMesh) -> None:
    arrivals: list[float] = []
    start = time.monotonic()
    with httpx.stream(
        "GET", f"{mesh.url}/sse?events=4&interval_ms=300", headers={"x-version": "v2"}, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 4
    # Each event arrives when it is sent (~300 ms apart), not all together at the end.
    assert arrivals[0] < 0.6, arrivals
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals


def test_waypoint_metrics_name_the_client_principal(mesh: WaypointMesh) -> None:
    httpx.get(f"{mesh.url}/metrics-probe", headers={"x-version": "v2"}, timeout=10)
    found = samples(
        mesh.metrics("admin"),
        "istio_requests_total",
        reporter="waypoint",
        source_principal=SLEEP,
        destination_workload="echo-v2",
        response_code="200",
    )
    assert found
    labels, value = found[0]
    assert value >= 1
    assert labels["source_workload"] == "sleep"
    assert labels["source_workload_namespace"] == "default"
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/default/sa/echo"
    assert labels["destination_service"] == "echo-v2.default.svc.cluster.local"
    assert labels["connection_security_policy"] == "mutual_tls"
    denied = samples(
        mesh.metrics("admin"), "istio_requests_total", reporter="waypoint", response_code="403"
    )
    assert all(d[0]["destination_service"] == "echo.default.svc.cluster.local" for d in denied)


def _requests_total(mesh: WaypointMesh) -> float:
    return sum(v for _, v in samples(mesh.metrics("admin"), "istio_requests_total"))


def test_a_client_without_a_mesh_identity_never_reaches_the_waypoint(mesh: WaypointMesh) -> None:
    before = _requests_total(mesh)

    async def attempt() -> bytes:
        context = ssl.create_default_context(cafile=str(mesh.directory / "ca" / "root-cert.pem"))
        context.check_hostname = False
        context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection(
            WAYPOINT_IP, mesh.hbone_port, ssl=context, server_hostname=None
        )
        try:
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            return await asyncio.wait_for(reader.read(100), 5)
        except (ssl.SSLError, ConnectionError):
            return b""
        finally:
            writer.close()

    assert asyncio.run(attempt()) == b""  # refused: no client certificate
    assert _requests_total(mesh) == before


def test_a_destination_the_waypoint_does_not_serve_is_answered_400(mesh: WaypointMesh) -> None:
    creds = mesh_credentials(mesh.directory, SLEEP)

    async def connect(authority: str) -> int:
        conn = await dial(
            WAYPOINT_IP, mesh.hbone_port, client_context(creds), [SpiffeId.parse(WAYPOINT)]
        )
        try:
            await conn.open_tunnel(authority, p.ConnectHeaders("127.0.20.11:1234"))
        except TunnelRefused as refused:
            return refused.status
        finally:
            conn.close()
        return 200

    assert asyncio.run(connect("10.96.20.11:80")) == 400  # Service echo-v1: uses no waypoint
    assert asyncio.run(connect(f"{ECHO_VIP}:81")) == 400  # no such Service port
    assert asyncio.run(connect(f"{V2_IP}:{mesh.echo_port}")) == 400  # a Pod without a waypoint
    assert asyncio.run(connect(f"{ECHO_VIP}:80")) == 200


def complete(response: bytes) -> bool:
    """Whether an HTTP/1.1 response with a Content-Length has fully arrived."""
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def test_a_pod_addressed_by_ip_through_its_waypoint_is_served_there(mesh: WaypointMesh) -> None:
    creds = mesh_credentials(mesh.directory, SLEEP)

    async def get(path: str) -> bytes:
        conn = await dial(
            WAYPOINT_IP, mesh.hbone_port, client_context(creds), [SpiffeId.parse(WAYPOINT)]
        )
        try:
            stream = await conn.open_tunnel(
                f"{V1_IP}:{mesh.echo_port}", p.ConnectHeaders("127.0.20.11:1234")
            )
            await stream.write(f"GET {path} HTTP/1.1\r\nHost: echo-v1\r\n\r\n".encode())
            answer = b""
            while not complete(answer):
                chunk = await asyncio.wait_for(stream.read(), 10)
                assert chunk, answer
                answer += chunk
            return answer
        finally:
            conn.close()

    answer = asyncio.run(get("/pod"))
    assert answer.startswith(b"HTTP/1.1 200")
    assert b'"backend": "v1"' in answer
    denied = asyncio.run(get("/admin"))  # the waypoint's policies apply to Pods it serves too
    assert denied.startswith(b"HTTP/1.1 403")


def test_grpc_route_attached_to_a_service_carries_grpc_over_both_tunnels(
    mesh: WaypointMesh,
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.grpc_forward_port}") as channel:
        embed = channel.unary_unary("/inference.v1.Embeddings/Embed")
        assert embed(b"hi", timeout=10) == b"grpc /inference.v1.Embeddings/Embed hi"
        other = channel.unary_unary("/other.v1.Svc/Call")
        with pytest.raises(grpc.RpcError) as raised:
            other(b"x", timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # no rule of the route matches
    found = samples(
        mesh.metrics("admin"),
        "istio_requests_total",
        reporter="waypoint",
        request_protocol="grpc",
        grpc_response_status="0",
        source_principal=SLEEP,
    )
    assert found and found[0][0]["destination_workload"] == "grpc"


def test_a_route_change_applies_to_the_next_requests(mesh: WaypointMesh) -> None:
    admin = f"http://127.0.0.1:{mesh.ports['admin']}"
    version = httpx.get(f"{admin}/config_dump", timeout=5).json()["version"]
    docs = route_docs()
    docs[0]["spec"]["rules"][0]["matches"][0]["headers"][0]["value"] = "blue"
    mesh.routes_file.write_text(yaml.safe_dump_all(docs))
    try:
        deadline = time.monotonic() + 20
        while httpx.get(f"{admin}/config_dump", timeout=5).json()["version"] <= version:
            assert time.monotonic() < deadline, "the route change was not loaded"
            time.sleep(0.1)
        with httpx.Client(timeout=10) as client:
            blue = [client.get(f"{mesh.url}/", headers={"x-version": "blue"}) for _ in range(5)]
        assert {r.headers["x-echo-backend"] for r in blue} == {"v2"}
    finally:
        mesh.routes_file.write_text(yaml.safe_dump_all(route_docs()))


def test_a_large_body_crosses_both_tunnels_each_way(mesh: WaypointMesh) -> None:
    body = bytes(range(256)) * (24 * 1024)  # 6 MiB: more than a tunnel's 4 MiB window
    response = httpx.post(f"{mesh.url}/body", content=body, headers={"x-version": "v2"}, timeout=30)
    assert response.status_code == 200
    assert response.content == body
