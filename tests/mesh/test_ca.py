"""The CA: key storage, CreateCertificate over gRPC, node-scoped authorization."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml

from mesh.ca import wire
from mesh.ca.client import CAClient
from mesh.ca.server import CAOptions, CertificateAuthority
from mesh.errors import CAError
from mesh.identity import SpiffeId, certs
from tests.mesh.conftest import namespace, pod

SLEEP = SpiffeId("cluster.local", "default", "sleep")
ECHO = SpiffeId("cluster.local", "default", "echo")


def write_mesh(path: Path) -> None:
    path.write_text(
        yaml.safe_dump_all(
            [
                namespace("default"),
                pod("sleep", "10.0.0.1", "node-a", "sleep"),
                pod("echo", "10.0.0.2", "node-b", "echo"),
            ]
        )
    )


async def start_ca(
    tmp_path: Path, **kwargs: object
) -> tuple[CertificateAuthority, grpc.aio.Server]:
    mesh = tmp_path / "mesh.yaml"
    if not mesh.exists():
        write_mesh(mesh)
    ca = CertificateAuthority(
        CAOptions(state_dir=tmp_path / "ca", listen="127.0.0.1:0", mesh_file=mesh, **kwargs)  # type: ignore[arg-type]
    )
    return ca, await ca.start()


def client(
    tmp_path: Path, ca: CertificateAuthority, node: str = "node-a", token: str | None = None
) -> CAClient:
    root = (tmp_path / "ca" / "root-cert.pem").read_bytes()
    if token is None:
        token = (tmp_path / "ca" / "tokens" / f"{node}.token").read_text().strip()
    return CAClient(f"127.0.0.1:{ca.port}", root, token)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[CertificateAuthority]:
    ca, server = await start_ca(tmp_path)
    yield ca
    await ca.stop(server)


def test_state_dir_created_with_private_keys(tmp_path: Path) -> None:
    write_mesh(tmp_path / "mesh.yaml")
    ca = CertificateAuthority(
        CAOptions(state_dir=tmp_path / "ca", mesh_file=tmp_path / "mesh.yaml", intermediate=True)
    )
    for name in (
        "root-key.pem",
        "intermediate-key.pem",
        "tokens/node-a.token",
        "tokens/node-b.token",
    ):
        mode = stat.S_IMODE((tmp_path / "ca" / name).stat().st_mode)
        assert mode == 0o600, name
    again = CertificateAuthority(
        CAOptions(state_dir=tmp_path / "ca", mesh_file=tmp_path / "mesh.yaml", intermediate=True)
    )
    assert again.material.root == ca.material.root, "root is reused on restart"


async def test_issue_for_own_node(tmp_path: Path, running: CertificateAuthority) -> None:
    c = client(tmp_path, running)
    issued = await c.issue(SLEEP, ttl_seconds=3600)
    assert issued.leaf.not_valid_after_utc - certs.utcnow() < certs.dt.timedelta(hours=1, seconds=5)
    assert certs.svid_identity(issued.leaf) == SLEEP
    assert issued.roots_pem[0] == certs.cert_to_pem(running.material.root)
    assert await c.trust_bundle() == (certs.cert_to_pem(running.material.root),)
    await c.close()


async def test_intermediate_chain_order(tmp_path: Path) -> None:
    ca, server = await start_ca(tmp_path, intermediate=True)
    try:
        c = client(tmp_path, ca)
        issued = await c.issue(SLEEP)
        chain = [certs.certs_from_pem(pem)[0] for pem in (*issued.chain_pem, *issued.roots_pem)]
        assert len(chain) == 3
        assert chain[1] == ca.material.intermediates[0] and chain[2] == ca.material.root
        assert certs.verify_chain(chain[:2], [chain[2]]) == SLEEP
        await c.close()
    finally:
        await ca.stop(server)


async def test_other_nodes_workload_denied(tmp_path: Path, running: CertificateAuthority) -> None:
    c = client(tmp_path, running, "node-a")
    with pytest.raises(CAError, match=r"PERMISSION_DENIED.*node-a runs no Pod"):
        await c.issue(ECHO)
    await c.close()


async def test_bad_token_unauthenticated(tmp_path: Path, running: CertificateAuthority) -> None:
    c = client(tmp_path, running, token="not-a-token")
    with pytest.raises(CAError, match="UNAUTHENTICATED"):
        await c.issue(SLEEP)
    with pytest.raises(CAError, match="UNAUTHENTICATED"):
        await c.trust_bundle()
    await c.close()


async def raw_call(
    tmp_path: Path, ca: CertificateAuthority, request: wire.CertificateRequest
) -> grpc.StatusCode:
    root = (tmp_path / "ca" / "root-cert.pem").read_bytes()
    token = (tmp_path / "ca" / "tokens" / "node-a.token").read_text().strip()
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{ca.port}",
        grpc.ssl_channel_credentials(root),
        options=(("grpc.ssl_target_name_override", "istiod.istio-system.svc"),),
    )
    call = channel.unary_unary(
        wire.CREATE_CERTIFICATE,
        request_serializer=wire.CertificateRequest.encode,
        response_deserializer=wire.CertificateResponse.decode,
    )
    try:
        await call(request, metadata=(("authorization", f"Bearer {token}"),))
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await channel.close()


async def test_impersonation_must_match_csr(tmp_path: Path, running: CertificateAuthority) -> None:
    csr = certs.build_csr(certs.generate_key(), SLEEP)
    ok = wire.CertificateRequest(csr, 0, {wire.IMPERSONATED_IDENTITY: SLEEP.uri})
    assert await raw_call(tmp_path, running, ok) == grpc.StatusCode.OK
    bad = wire.CertificateRequest(csr, 0, {wire.IMPERSONATED_IDENTITY: ECHO.uri})
    assert await raw_call(tmp_path, running, bad) == grpc.StatusCode.PERMISSION_DENIED
    short = wire.CertificateRequest(csr, 5)
    assert await raw_call(tmp_path, running, short) == grpc.StatusCode.INVALID_ARGUMENT
    garbage = wire.CertificateRequest("not a csr")
    assert await raw_call(tmp_path, running, garbage) == grpc.StatusCode.INVALID_ARGUMENT
    foreign = wire.CertificateRequest(
        certs.build_csr(certs.generate_key(), SpiffeId("other.td", "default", "sleep"))
    )
    assert await raw_call(tmp_path, running, foreign) == grpc.StatusCode.PERMISSION_DENIED


async def test_mesh_reload_grants_new_node(tmp_path: Path, running: CertificateAuthority) -> None:
    mesh = tmp_path / "mesh.yaml"
    docs = list(yaml.safe_load_all(mesh.read_text()))
    docs.append(pod("new", "10.0.0.3", "node-c", "newsa"))
    mesh.write_text(yaml.safe_dump_all(docs))
    assert running.watcher is not None and running.watcher.reload()
    c = client(tmp_path, running, "node-c")
    issued = await c.issue(SpiffeId("cluster.local", "default", "newsa"))
    assert certs.svid_identity(issued.leaf).service_account == "newsa"
    await c.close()
