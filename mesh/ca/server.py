"""The CA gRPC service: Istio's CreateCertificate plus a trust-bundle call, node-scoped issuing.

Callers authenticate either with a node bootstrap token (``authorization: Bearer``) or, once
they hold one, with their node certificate (``spiffe://<td>/ztunnel/node/<node>``) as the TLS
client certificate. Either way the caller is a node, and a node obtains certificates only for
service accounts of Pods scheduled on it, and its own node certificate. In cluster mode a
ServiceAccount token checked by TokenReview (:mod:`mesh.ca.token_review`) authenticates too: a
ztunnel's is its node's, any other workload's (a waypoint's) obtains only its own identity. The
CA also publishes its root as the ConfigMap ``ambient-ca-root`` in every namespace
(:mod:`mesh.ca.root_publisher`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes.client import ApiClient, ApiException

from cluster.cache import ObjectCache
from cluster.client import connect
from cluster.informer import Informer, Scope
from cluster.resources import discover
from mesh.ca import wire
from mesh.ca.grpc_server import CallContext, RpcAbort, Status, UnaryServer
from mesh.ca.root_publisher import FIELD_SELECTOR, RootPublisher
from mesh.ca.store import CAMaterial, TokenStore, load_or_create
from mesh.ca.token_review import ReviewedToken, TokenReviewer
from mesh.errors import CAError, IdentityError
from mesh.hbone.tls import load_chain
from mesh.identity import certs
from mesh.identity.spiffe import NodeId, SpiffeId, parse_identity
from mesh.state.cluster import ClusterMeshWatcher
from mesh.state.registry import MeshState
from mesh.state.watch import MeshWatcher
from ports import PortInUse

log = logging.getLogger(__name__)

CA_HOSTNAME = wire.CA_HOSTNAME
PUBLISH_RETRY = 5.0  # seconds before publishing the root again where it failed


@dataclass(frozen=True, slots=True)
class CAOptions:
    """Settings of ``ambient ca``."""

    trust_domain: str = "cluster.local"
    state_dir: Path = Path("ca")
    listen: str = "127.0.0.1:15012"
    mesh_file: Path | None = None
    intermediate: bool = False
    max_lifetime: dt.timedelta = certs.MAX_LIFETIME
    # Cluster mode: Pods from the Kubernetes API, ztunnels authenticated by TokenReview.
    cluster: bool = False
    kubeconfig: str | None = None  # None in cluster mode: the pod's in-cluster config
    # Whose tokens authenticate a node (a ztunnel); any other account's, only its own identity.
    ztunnel_accounts: frozenset[str] = frozenset({"ambient-system/ztunnel"})
    token_audience: str | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a call comes from: a node, or a workload by its own ServiceAccount token."""

    node: str | None = None
    workload: SpiffeId | None = None  # set instead of ``node``: it may obtain only this

    def __str__(self) -> str:
        return f"node {self.node}" if self.workload is None else f"workload {self.workload}"


class CertificateAuthority:
    """Signs CSRs for workloads on the calling node's own Pods, or a workload's own identity."""

    def __init__(self, options: CAOptions, state: MeshState | None = None) -> None:
        self.options = options
        self.material: CAMaterial = load_or_create(
            options.state_dir, options.trust_domain, options.intermediate
        )
        self.tokens = TokenStore(options.state_dir)
        self.authentications: collections.Counter[str] = collections.Counter()
        self.port = 0
        self.watcher: MeshWatcher | ClusterMeshWatcher | None = None
        self.reviewer: TokenReviewer | None = None
        self.publisher: RootPublisher | None = None  # cluster mode: the root in each namespace
        self._publish_due = asyncio.Event()
        self._publishing: asyncio.Task[None] | None = None
        # Cluster mode: the root ConfigMaps as they are, to write one again when edited/deleted.
        self._root_copies: ObjectCache | None = None
        self._root_informer: Informer | None = None
        self._repairing: asyncio.Task[None] | None = None
        if state is None and options.cluster:
            self.watcher = ClusterMeshWatcher(options.kubeconfig, options.trust_domain)
            self.watcher.subscribe(self._on_state)
        elif state is None and options.mesh_file is not None:
            self.watcher = MeshWatcher(options.mesh_file, options.trust_domain)
            self.watcher.subscribe(self._on_state)
            state = self.watcher.state
        self.state = state or MeshState(options.trust_domain)
        self._on_state(self.state)

    def _on_state(self, state: MeshState) -> None:
        self.state = state
        for node in sorted(state.nodes()):
            self.tokens.ensure(node)
        self._publish_due.set()  # a new namespace gets the root ConfigMap

    def roots(self) -> list[str]:
        """The trust bundle as PEM strings."""
        return [certs.cert_to_pem(self.material.root)]

    def authenticate(self, context: CallContext) -> tuple[str, str]:
        """(node, method) of the caller: its node certificate, else its bootstrap token.

        Raises RpcAbort(UNAUTHENTICATED) naming what was wrong.
        """
        if context.peer_certificate is not None:
            try:
                peer = certs.leaf_identity(x509.load_der_x509_certificate(context.peer_certificate))
            except (IdentityError, ValueError) as exc:
                raise RpcAbort(Status.UNAUTHENTICATED, f"client certificate: {exc}") from exc
            if not isinstance(peer, NodeId):
                raise RpcAbort(
                    Status.UNAUTHENTICATED,
                    f"client certificate identity {peer} is not a node identity "
                    f"(spiffe://{self.options.trust_domain}/ztunnel/node/<node>)",
                )
            if peer.trust_domain != self.options.trust_domain:
                raise RpcAbort(
                    Status.UNAUTHENTICATED,
                    f"client certificate trust domain {peer.trust_domain} is not "
                    f"{self.options.trust_domain}",
                )
            return peer.node, "certificate"
        value = context.metadata.get("authorization", "")
        if value.startswith("Bearer "):
            node = self.tokens.node_for(value[len("Bearer ") :].strip())
            if node is not None:
                return node, "token"
        raise RpcAbort(
            Status.UNAUTHENTICATED, "no node certificate and a missing or invalid node token"
        )

    def issue(self, caller: Caller, request: wire.CertificateRequest) -> list[str]:
        """Check the request against the caller's node's Pods, or the workload's own identity,
        and sign it; raises PermissionError."""
        identity, public_key = certs.csr_identity(request.csr)
        wanted = request.metadata.get(wire.IMPERSONATED_IDENTITY)
        if wanted is not None and parse_identity(wanted) != identity:
            raise PermissionError(
                f"ImpersonatedIdentity {wanted} does not match the CSR identity {identity}"
            )
        if identity.trust_domain != self.options.trust_domain:
            raise PermissionError(
                f"trust domain {identity.trust_domain} is not {self.options.trust_domain}"
            )
        node = caller.node or ""
        if caller.workload is not None:
            if identity != caller.workload:
                raise PermissionError(
                    f"the token of service account {caller.workload.namespace}/"
                    f"{caller.workload.service_account} obtains only its own identity "
                    f"{caller.workload}, not {identity}"
                )
        elif isinstance(identity, NodeId):
            if identity.node != node:
                raise PermissionError(f"node {node} may not obtain the identity of {identity}")
            if node not in self.state.nodes():
                raise PermissionError(f"node {node} runs no Pod in the mesh")
        elif not any(
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
            "issued %s to %s, serial %x, expires %s",
            identity,
            caller,
            leaf.serial_number,
            leaf.not_valid_after_utc.isoformat(),
        )
        return [certs.cert_to_pem(leaf), *self.material.chain_pems()]

    async def _authenticated(self, context: CallContext, what: str) -> Caller:
        try:
            node, method = self.authenticate(context)
            caller = Caller(node=node)
        except RpcAbort:
            reviewed = await self._review(context)
            if reviewed is None:
                raise
            if reviewed.node is not None:
                caller, method = Caller(node=reviewed.node), "token-review"
            else:
                own = SpiffeId(
                    self.options.trust_domain, reviewed.namespace, reviewed.service_account
                )
                caller, method = Caller(workload=own), "workload-token"
        self.authentications[method] += 1
        log.debug("%s from %s: %s by %s", what, context.peer, caller, method)
        return caller

    async def _review(self, context: CallContext) -> ReviewedToken | None:
        """Whose a ServiceAccount bearer token is, by TokenReview (cluster mode), or None."""
        value = context.metadata.get("authorization", "")
        if self.reviewer is None or not value.startswith("Bearer "):
            return None
        token = value[len("Bearer ") :].strip()
        try:
            return await asyncio.to_thread(self.reviewer.review, token)
        except (ApiException, OSError) as exc:
            log.warning("token review failed: %s", exc)
            return None

    async def create_certificate(self, message: bytes, context: CallContext) -> bytes:
        """RPC: IstioCertificateService/CreateCertificate."""
        caller = await self._authenticated(context, "CreateCertificate")
        try:
            request = wire.CertificateRequest.decode(message)
            chain = self.issue(caller, request)
        except PermissionError as exc:
            log.warning("refused certificate for %s: %s", caller, exc)
            raise RpcAbort(Status.PERMISSION_DENIED, str(exc)) from exc
        except (IdentityError, CAError, UnicodeDecodeError) as exc:
            raise RpcAbort(Status.INVALID_ARGUMENT, str(exc)) from exc
        return wire.CertificateResponse(tuple(chain)).encode()

    async def trust_bundle(self, message: bytes, context: CallContext) -> bytes:
        """RPC: TrustBundleService/GetTrustBundle."""
        await self._authenticated(context, "GetTrustBundle")
        return wire.TrustBundleResponse(tuple(self.roots())).encode()

    def _tls_context(self, host: str) -> ssl.SSLContext:
        """Serving certificate signed by the CA; client certificates asked for, verified if sent."""
        key = certs.generate_key()
        names: list[x509.GeneralName] = [x509.DNSName(CA_HOSTNAME), x509.DNSName("localhost")]
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
        cert = _serving_cert(key, names, self.material.signer)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cadata="".join(self.roots()))
        ctx.set_alpn_protocols(["h2"])
        chain = (certs.cert_to_pem(cert), *self.material.chain_pems()[:-1])
        load_chain(ctx, certs.key_to_pem(key), chain)
        return ctx

    async def start(self) -> UnaryServer:
        """Serve on ``options.listen`` over TLS; returns the started server."""
        server = UnaryServer(
            {
                wire.CREATE_CERTIFICATE: self.create_certificate,
                wire.GET_TRUST_BUNDLE: self.trust_bundle,
            },
            self._tls_context(self.options.listen.rpartition(":")[0]),
        )
        host, _, port = self.options.listen.rpartition(":")
        try:
            self.port = await server.start(host.strip("[]"), int(port))
        except PortInUse:
            raise  # names the port and its holder itself
        except (OSError, ValueError) as exc:
            raise CAError(f"cannot listen on {self.options.listen}: {exc}") from exc
        if isinstance(self.watcher, ClusterMeshWatcher):
            await self.watcher.sync()
            api = await asyncio.to_thread(connect, self.options.kubeconfig)
            self.reviewer = TokenReviewer(
                api, self.options.ztunnel_accounts, self.options.token_audience
            )
            self.publisher = RootPublisher(api, "".join(self.roots()))
            await self._publish(self.watcher)
            self._root_copies = await self._watch_root_copies(api)
            self._publishing = asyncio.create_task(self._publish_forever(self.watcher))
            self._repairing = asyncio.create_task(self._repair_forever(self._root_copies))
        if self.watcher:
            self.watcher.start()
        log.info("CA for %s serving on %s:%d", self.options.trust_domain, host, self.port)
        return server

    async def _watch_root_copies(self, api: ApiClient) -> ObjectCache:
        """Start watching the published ConfigMaps (by name, in every namespace)."""
        served = await asyncio.to_thread(discover, api, {("", "ConfigMap"): ("v1",)})
        copies = ObjectCache()
        scope = Scope(served[("", "ConfigMap")], None, FIELD_SELECTOR)
        self._root_informer = Informer(api, scope, copies, asyncio.get_running_loop())
        self._root_informer.start()
        await self._root_informer.synced.wait()
        return copies

    async def _repair_forever(self, copies: ObjectCache) -> None:
        """A root ConfigMap was written or deleted: publish again (which checks them all)."""
        while True:
            await copies.changed.wait()
            copies.changed.clear()
            self._publish_due.set()

    async def _publish(self, watcher: ClusterMeshWatcher) -> set[str]:
        """Publish where needed; the namespaces the API refused."""
        assert self.publisher is not None
        self._publish_due.clear()
        if self._root_copies is not None:  # checked here, not while a publish runs
            self.publisher.check(obj for _, obj in self._root_copies.all())
        return await asyncio.to_thread(self.publisher.publish, watcher.namespaces())

    async def _publish_forever(self, watcher: ClusterMeshWatcher) -> None:
        assert self.publisher is not None
        while True:
            await self._publish_due.wait()
            if await self._publish(watcher):
                # The API refused some: try those again. (Not "some namespace is unpublished":
                # one that appeared while publishing has set _publish_due itself.)
                await asyncio.sleep(PUBLISH_RETRY)
                self._publish_due.set()

    async def stop(self, server: UnaryServer) -> None:
        """Stop serving and watching."""
        for task in (self._publishing, self._repairing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._root_informer is not None:
            self._root_informer.stop()
        if self.watcher:
            await self.watcher.stop()
        await server.stop()


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
