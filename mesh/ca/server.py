"""The CA gRPC service: Istio's CreateCertificate plus a trust-bundle call, node-scoped issuing."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.ca import wire
from mesh.ca.store import CAMaterial, TokenStore, load_or_create
from mesh.errors import IdentityError
from mesh.identity import certs
from mesh.identity.spiffe import SpiffeId
from mesh.state.registry import MeshState
from mesh.state.watch import MeshWatcher

log = logging.getLogger(__name__)

CA_HOSTNAME = wire.CA_HOSTNAME
_ALLOWED_METADATA = frozenset({wire.IMPERSONATED_IDENTITY, "CertSigner"})


@dataclass(frozen=True, slots=True)
class CAOptions:
    """Settings of ``ambient ca``."""

    trust_domain: str = "cluster.local"
    state_dir: Path = Path("ca")
    listen: str = "127.0.0.1:15012"
    mesh_file: Path | None = None
    intermediate: bool = False
    max_lifetime: dt.timedelta = certs.MAX_LIFETIME


class CertificateAuthority:
    """Signs CSRs for workloads on the calling node's own Pods."""

    def __init__(self, options: CAOptions, state: MeshState | None = None) -> None:
        self.options = options
        self.material: CAMaterial = load_or_create(
            options.state_dir, options.trust_domain, options.intermediate
        )
        self.tokens = TokenStore(options.state_dir)
        self.watcher: MeshWatcher | None = None
        if state is None and options.mesh_file is not None:
            self.watcher = MeshWatcher(options.mesh_file, options.trust_domain)
            self.watcher.subscribe(self._on_state)
            state = self.watcher.state
        self.state = state or MeshState(options.trust_domain)
        self._on_state(self.state)

    def _on_state(self, state: MeshState) -> None:
        self.state = state
        for node in sorted(state.nodes()):
            self.tokens.ensure(node)

    def roots(self) -> list[str]:
        """The trust bundle as PEM strings."""
        return [certs.cert_to_pem(self.material.root)]

    def authenticate(self, context: grpc.aio.ServicerContext) -> str | None:
        """The node named by the caller's bootstrap token, if valid."""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                return self.tokens.node_for(value[len("Bearer ") :].strip())
        return None

    def issue(self, node: str, request: wire.CertificateRequest) -> list[str]:
        """Check the request against the node's Pods and sign it; raises PermissionError."""
        identity, public_key = certs.csr_identity(request.csr)
        wanted = request.metadata.get(wire.IMPERSONATED_IDENTITY)
        if wanted is not None and SpiffeId.parse(wanted) != identity:
            raise PermissionError(
                f"ImpersonatedIdentity {wanted} does not match the CSR identity {identity}"
            )
        if identity.trust_domain != self.options.trust_domain:
            raise PermissionError(
                f"trust domain {identity.trust_domain} is not {self.options.trust_domain}"
            )
        if not any(
            w.node == node
            and w.namespace == identity.namespace
            and w.service_account == identity.service_account
            for w in self.state.workloads
        ):
            raise PermissionError(
                f"node {node} runs no Pod with service account "
                f"{identity.namespace}/{identity.service_account}"
            )
        ttl = dt.timedelta(seconds=request.validity_duration) if request.validity_duration else None
        lifetime = certs.clamp_lifetime(ttl)
        if lifetime > self.options.max_lifetime:
            raise IdentityError(f"validity {lifetime} exceeds the CA maximum")
        leaf = certs.issue_svid(identity, public_key, self.material.signer, lifetime)
        log.info(
            "issued %s to node %s, serial %x, expires %s",
            identity,
            node,
            leaf.serial_number,
            leaf.not_valid_after_utc.isoformat(),
        )
        return [certs.cert_to_pem(leaf), *self.material.chain_pems()]

    async def create_certificate(
        self, request: wire.CertificateRequest, context: grpc.aio.ServicerContext
    ) -> wire.CertificateResponse:
        """RPC: IstioCertificateService/CreateCertificate."""
        node = self.authenticate(context)
        if node is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid node token")
            raise AssertionError("unreachable")
        try:
            chain = self.issue(node, request)
        except PermissionError as exc:
            log.warning("refused certificate for node %s: %s", node, exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
            raise AssertionError("unreachable") from exc
        except IdentityError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from exc
        return wire.CertificateResponse(tuple(chain))

    async def trust_bundle(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> wire.TrustBundleResponse:
        """RPC: TrustBundleService/GetTrustBundle."""
        if self.authenticate(context) is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid node token")
        return wire.TrustBundleResponse(tuple(self.roots()))

    def _server_credentials(self, host: str) -> grpc.ServerCredentials:
        """A serving certificate for the gRPC endpoint, signed by the CA."""
        key = certs.generate_key()
        names: list[x509.GeneralName] = [x509.DNSName(CA_HOSTNAME), x509.DNSName("localhost")]
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
        cert = _serving_cert(key, names, self.material.signer)
        chain = certs.cert_to_pem(cert) + "".join(self.material.chain_pems()[:-1])
        return grpc.ssl_server_credentials([(certs.key_to_pem(key), chain.encode())])

    async def start(self) -> grpc.aio.Server:
        """Serve on ``options.listen`` over TLS; returns the started server."""
        server = grpc.aio.server()
        handlers = {
            "CreateCertificate": grpc.unary_unary_rpc_method_handler(
                self.create_certificate,
                request_deserializer=wire.CertificateRequest.decode,
                response_serializer=wire.CertificateResponse.encode,
            ),
        }
        bundle = {
            "GetTrustBundle": grpc.unary_unary_rpc_method_handler(
                self.trust_bundle,
                request_deserializer=bytes,
                response_serializer=wire.TrustBundleResponse.encode,
            ),
        }
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "istio.v1.auth.IstioCertificateService", handlers
                ),
                grpc.method_handlers_generic_handler("istio.v1.auth.TrustBundleService", bundle),
            )
        )
        host = self.options.listen.rpartition(":")[0]
        bound = server.add_secure_port(self.options.listen, self._server_credentials(host))
        if bound == 0:
            raise OSError(f"cannot listen on {self.options.listen}")
        self.port = bound
        await server.start()
        if self.watcher:
            self.watcher.start()
        log.info("CA for %s serving on %s:%d", self.options.trust_domain, host, bound)
        return server

    async def stop(self, server: grpc.aio.Server) -> None:
        """Stop serving and watching."""
        if self.watcher:
            await self.watcher.stop()
        await server.stop(grace=0.5)


def _serving_cert(
    key: certs.PrivateKey, names: list[x509.GeneralName], signer: certs.Signer
) -> x509.Certificate:
    now = certs.utcnow()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_HOSTNAME)]))
        .issuer_name(signer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - certs.BACKDATE)
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(signer.key, hashes.SHA256())
    )
