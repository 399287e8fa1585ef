"""The CA: key storage, CreateCertificate over gRPC, node-scoped authorization."""

from __future__ import annotations

import asyncio
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh.ca import wire
from mesh.ca.client import CAClient
from mesh.ca.grpc_server import UnaryServer
from mesh.ca.server import CAOptions, CertificateAuthority
from mesh.errors import CAError
from mesh.hbone.tls import load_chain
from mesh.identity import NodeId, SpiffeId, certs
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


async def start_ca(tmp_path: Path, **kwargs: object) -> tuple[CertificateAuthority, UnaryServer]:
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


async def test_ca_client_issues_through_the_child(
    tmp_path: Path,
    running: CertificateAuthority,
) -> None:
    """The ztunnel's way: key, CSR and chain check in a short-lived child process."""
    c = client(tmp_path, running)
    c.keys_in_child = True
    issued = await c.issue(SLEEP, ttl_seconds=3600)
    leaf = issued.leaf
    assert certs.svid_identity(leaf) == SLEEP
    assert issued.serial == leaf.serial_number
    assert issued.not_after == leaf.not_valid_after_utc
    assert issued.not_before == leaf.not_valid_before_utc
    # The key handed back is the one the leaf certifies: OpenSSL refuses a mismatched pair.
    load_chain(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), issued.key_pem, issued.chain_pem)
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


NODE_A = NodeId("cluster.local", "node-a")


async def grpc_create(
    tmp_path: Path,
    ca: CertificateAuthority,
    identity: SpiffeId | NodeId,
    token: str | None = None,
    client_cert: tuple[bytes, bytes] | None = None,
) -> tuple[grpc.StatusCode, str]:
    """CreateCertificate through a real grpcio channel, with a token and/or a client cert."""
    root = (tmp_path / "ca" / "root-cert.pem").read_bytes()
    key, chain = client_cert or (None, None)
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{ca.port}",
        grpc.ssl_channel_credentials(root, key, chain),
        options=(("grpc.ssl_target_name_override", "istiod.istio-system.svc"),),
    )
    call = channel.unary_unary(
        wire.CREATE_CERTIFICATE,
        request_serializer=wire.CertificateRequest.encode,
        response_deserializer=wire.CertificateResponse.decode,
    )
    request = wire.CertificateRequest(certs.build_csr(certs.generate_key(), identity))
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    try:
        await call(request, metadata=metadata, timeout=5)
        return grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    finally:
        await channel.close()


def pem_pair(key: certs.PrivateKey, *chain: x509.Certificate) -> tuple[bytes, bytes]:
    """(key PEM, chain PEM) as grpcio takes a client certificate."""
    return certs.key_to_pem(key), "".join(certs.cert_to_pem(c) for c in chain).encode()


async def test_token_bootstraps_node_certificate_then_mtls_authenticates(
    tmp_path: Path, running: CertificateAuthority
) -> None:
    token = (tmp_path / "ca" / "tokens" / "node-a.token").read_text().strip()
    root = (tmp_path / "ca" / "root-cert.pem").read_bytes()
    c = CAClient(f"127.0.0.1:{running.port}", root, token, NODE_A)
    issued = await c.issue(SLEEP)
    assert certs.svid_identity(issued.leaf) == SLEEP
    node_cert = c.node_certificate
    assert node_cert is not None and certs.leaf_identity(node_cert.leaf) == NODE_A
    eku = node_cert.leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH], "a node cert can never serve HBONE"
    # the token fetched the node certificate; the workload certificate came over mTLS
    assert running.authentications == {"token": 1, "certificate": 1}
    c.token = None  # later calls need no token at all
    assert certs.svid_identity((await c.issue(SLEEP)).leaf) == SLEEP
    assert await c.trust_bundle() == (certs.cert_to_pem(running.material.root),)
    assert running.authentications == {"token": 1, "certificate": 3}


async def test_node_certificate_over_grpcio_is_scoped_to_its_node(
    tmp_path: Path, running: CertificateAuthority
) -> None:
    key = certs.generate_key()
    leaf = certs.issue_svid(NODE_A, key.public_key(), running.material.signer)
    node_a = pem_pair(key, leaf)
    assert await grpc_create(tmp_path, running, SLEEP, client_cert=node_a) == (
        grpc.StatusCode.OK,
        "",
    )
    code, details = await grpc_create(tmp_path, running, ECHO, client_cert=node_a)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "node node-a runs no Pod with service account default/echo" in details
    code, details = await grpc_create(
        tmp_path, running, NodeId("cluster.local", "node-b"), client_cert=node_a
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "may not obtain the identity of spiffe://cluster.local/ztunnel/node/node-b" in details
    assert running.authentications == {"certificate": 3}


async def test_token_cannot_obtain_another_nodes_certificate(
    tmp_path: Path, running: CertificateAuthority
) -> None:
    token = (tmp_path / "ca" / "tokens" / "node-a.token").read_text().strip()
    assert (await grpc_create(tmp_path, running, NODE_A, token=token))[0] == grpc.StatusCode.OK
    code, details = await grpc_create(
        tmp_path, running, NodeId("cluster.local", "node-b"), token=token
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "node node-a may not obtain" in details


async def test_unknown_client_certificates_are_denied(
    tmp_path: Path, running: CertificateAuthority
) -> None:
    signer = running.material.signer
    # a workload SVID from our CA is not a node identity
    key = certs.generate_key()
    workload = pem_pair(key, certs.issue_svid(SLEEP, key.public_key(), signer))
    code, details = await grpc_create(tmp_path, running, SLEEP, client_cert=workload)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert f"{SLEEP.uri} is not a node identity" in details
    # a node the mesh does not know (no Pods) gets nothing, not even its own renewal
    key = certs.generate_key()
    ghost_id = NodeId("cluster.local", "node-z")
    ghost = pem_pair(key, certs.issue_svid(ghost_id, key.public_key(), signer))
    code, details = await grpc_create(tmp_path, running, SLEEP, client_cert=ghost)
    assert (code, "node node-z runs no Pod" in details) == (grpc.StatusCode.PERMISSION_DENIED, True)
    code, details = await grpc_create(tmp_path, running, ghost_id, client_cert=ghost)
    assert (code, "node node-z runs no Pod" in details) == (grpc.StatusCode.PERMISSION_DENIED, True)
    # a certificate from another CA fails the TLS handshake (grpcio reports UNAVAILABLE) ...
    other_key = certs.generate_key()
    other = certs.Signer(certs.create_root("cluster.local", other_key), other_key)
    key = certs.generate_key()
    foreign = pem_pair(key, certs.issue_svid(NODE_A, key.public_key(), other))
    code, _ = await grpc_create(tmp_path, running, SLEEP, client_cert=foreign)
    assert code == grpc.StatusCode.UNAVAILABLE
    # ... and the CA's alert names the reason, as a plain ssl client shows
    ctx = ssl.create_default_context(cafile=tmp_path / "ca" / "root-cert.pem")
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2"])
    load_chain(ctx, foreign[0], [foreign[1].decode()])
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port, ssl=ctx)
    with pytest.raises(ssl.SSLError) as refused:
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert refused.value.reason == "TLSV1_ALERT_UNKNOWN_CA"
    # only node-z's two calls authenticated (and were then refused)
    assert running.authentications == {"certificate": 2}


async def test_grpc_server_answers_bad_calls_with_clear_statuses(
    tmp_path: Path, running: CertificateAuthority
) -> None:
    root = (tmp_path / "ca" / "root-cert.pem").read_bytes()
    token = (tmp_path / "ca" / "tokens" / "node-a.token").read_text().strip()
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{running.port}",
        grpc.ssl_channel_credentials(root),
        options=(("grpc.ssl_target_name_override", "istiod.istio-system.svc"),),
    )
    auth = (("authorization", f"Bearer {token}"),)
    try:
        unknown = channel.unary_unary("/istio.v1.auth.IstioCertificateService/Nope")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await unknown(b"", metadata=auth, timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "unknown method" in (exc.value.details() or "")
        garbage = channel.unary_unary(wire.CREATE_CERTIFICATE)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await garbage(b"\xff\xff\xff", metadata=auth, timeout=5)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await channel.unary_unary(wire.GET_TRUST_BUNDLE)(b"", timeout=5)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing or invalid node token" in (exc.value.details() or "")
    finally:
        await channel.close()
