"""A CA client as ztunnel uses it: CSRs for this node's workloads, node-authenticated.

The first call presents the node bootstrap token and obtains the node certificate
(``spiffe://<td>/ztunnel/node/<node>``, client auth only); every later call, including that
certificate's own renewal at half-life, authenticates with it over mTLS instead. The token is
needed again only if the node certificate expired.

It speaks gRPC unary calls over our own h2 + TLS rather than grpcio, which keeps grpcio (and its
~18 MB of resident memory) out of every ztunnel.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import struct
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.events

from mesh.ca import wire
from mesh.errors import CAError
from mesh.hbone.tls import load_chain
from mesh.identity import issuance
from mesh.identity.spiffe import Identity, NodeId

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)

# How a call authenticates: the TLS context (with or without the node certificate) and headers.
CallCredentials = tuple[ssl.SSLContext, list[tuple[str, str]]]

GRPC_CODES = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 16: "UNAUTHENTICATED",
}  # fmt: skip


HELPER_PROCESSES = 4


def utcnow() -> dt.datetime:
    """Now, timezone-aware (UTC)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A workload's key and chain as returned by the CA (leaf first, root last)."""

    identity: Identity
    key_pem: bytes
    chain_pem: tuple[str, ...]
    roots_pem: tuple[str, ...]
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime  # checked on every connection

    @property
    def leaf(self) -> x509.Certificate:
        """The parsed leaf (imports ``cryptography``: for tools and tests, not the data path)."""
        from mesh.identity import certs

        return certs.certs_from_pem(self.chain_pem[0])[0]


class RpcError(CAError):
    """A gRPC call ended with a non-OK status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{GRPC_CODES.get(code, str(code))}: {message}")
        self.code = code


class CAClient:
    """Talks to ``ambient ca`` over TLS (trusting ``root_pem``) as node ``node``.

    Without ``node`` every call carries the bearer token and no node certificate is obtained
    (a workload authenticating as itself by its ServiceAccount token). With ``token_file`` the
    token is read again for each call that sends it: a projected token is rotated in place.
    """

    def __init__(
        self,
        address: str,
        root_pem: bytes,
        token: str | None,
        node: NodeId | None = None,
        token_file: Path | None = None,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.token = token
        self.token_file = token_file
        self.node = node
        self._root_pem = root_pem
        self._ctx = self._context()
        self.node_certificate: IssuedCertificate | None = None
        self._node_ctx: ssl.SSLContext | None = None
        self._node_refresh_at = 0.0
        self._node_lock = asyncio.Lock()
        # Where keys are generated and chains checked: None picks a child process unless
        # ``cryptography`` is already loaded here (see mesh.identity.issuance).
        self.keys_in_child: bool | None = None
        # Many workloads start at once on a busy node: a few children at a time, not one each.
        self._children = asyncio.Semaphore(HELPER_PROCESSES)

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self._root_pem.decode())
        ctx.set_alpn_protocols(["h2"])
        return ctx

    @classmethod
    def from_files(
        cls, address: str, root_file: Path, token_file: Path, node: NodeId | None = None
    ) -> CAClient:
        """Build from the CA root certificate file and the token file (read again when used)."""
        try:
            token = token_file.read_text().strip()
            return cls(address, root_file.read_bytes(), token, node, token_file)
        except OSError as exc:
            raise CAError(f"cannot read CA credentials: {exc}") from exc

    async def _credentials(self, timeout: float) -> CallCredentials:
        """The TLS context and headers to call with: the node certificate once there is one."""
        if self.node is None:
            return self._ctx, self._token_headers()
        async with self._node_lock:
            if self._node_ctx is None or asyncio.get_running_loop().time() >= self._node_refresh_at:
                await self._renew_node_certificate(timeout)
            assert self._node_ctx is not None
            return self._node_ctx, []

    def _token_headers(self) -> list[tuple[str, str]]:
        if self.token_file is not None:
            try:
                self.token = self.token_file.read_text().strip() or self.token
            except OSError as exc:  # being replaced: the last one read may still be valid
                log.warning("cannot read %s, using the token read before: %s", self.token_file, exc)
        if not self.token:
            raise CAError("no node token and no valid node certificate to authenticate with")
        return [("authorization", f"Bearer {self.token}")]

    async def _renew_node_certificate(self, timeout: float) -> None:
        assert self.node is not None
        current = self.node_certificate
        credentials: CallCredentials
        if self._node_ctx is not None and current is not None and current.not_after > utcnow():
            credentials = (self._node_ctx, [])
        else:
            credentials = (self._ctx, self._token_headers())
        issued = await self._issue(self.node, 0, timeout, credentials)
        node_ctx = self._context()
        load_chain(node_ctx, issued.key_pem, issued.chain_pem)
        lifetime = (issued.not_after - utcnow()).total_seconds()
        self.node_certificate, self._node_ctx = issued, node_ctx
        self._node_refresh_at = asyncio.get_running_loop().time() + lifetime / 2
        log.info(
            "node certificate %s valid until %s (authenticated by %s)",
            self.node,
            issued.not_after.isoformat(),
            "the node token" if credentials[1] else "the previous node certificate",
        )

    async def _call(
        self, path: str, message: bytes, timeout: float, credentials: CallCredentials | None = None
    ) -> bytes:
        ctx, headers = credentials or await self._credentials(timeout)
        try:
            return await asyncio.wait_for(self._unary(path, message, ctx, headers), timeout)
        except (OSError, ssl.SSLError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise CAError(f"{path}: UNAVAILABLE: {exc!r}") from exc

    async def _unary(
        self, path: str, message: bytes, ctx: ssl.SSLContext, extra: list[tuple[str, str]]
    ) -> bytes:
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=ctx, server_hostname=wire.CA_HOSTNAME
        )
        try:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding="utf-8"))
            conn.initiate_connection()
            sid = conn.get_next_available_stream_id()
            conn.send_headers(
                sid,
                [
                    (":method", "POST"),
                    (":scheme", "https"),
                    (":path", path),
                    (":authority", wire.CA_HOSTNAME),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    *extra,
                ],
            )
            conn.send_data(
                sid, b"\x00" + struct.pack("!I", len(message)) + message, end_stream=True
            )
            writer.write(conn.data_to_send())
            body, status, detail = bytearray(), None, ""
            ended = False
            while not ended:
                data = await reader.read(65536)
                if not data:
                    raise CAError(f"{path}: UNAVAILABLE: connection closed by the CA")
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                        body += ev.data or b""
                        conn.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
                    elif isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                        headers = {str(k): str(v) for k, v in ev.headers or ()}
                        if "grpc-status" in headers:
                            status = int(headers["grpc-status"])
                            detail = urllib.parse.unquote(headers.get("grpc-message", ""))
                    elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                        ended = True
                writer.write(conn.data_to_send())
        finally:
            writer.close()
        if status is None:
            raise CAError(f"{path}: UNKNOWN: response without grpc-status")
        if status != 0:
            raise RpcError(status, detail)
        if len(body) < 5:
            raise CAError(f"{path}: INTERNAL: empty response")
        (length,) = struct.unpack("!I", body[1:5])
        return bytes(body[5 : 5 + length])

    async def trust_bundle(self, timeout: float = 10.0) -> tuple[str, ...]:
        """The CA's root certificates."""
        try:
            raw = await self._call(wire.GET_TRUST_BUNDLE, b"", timeout)
        except RpcError as exc:
            raise CAError(f"trust bundle: {exc}") from exc
        return wire.TrustBundleResponse.decode(raw).root_certs

    async def issue(
        self, identity: Identity, ttl_seconds: int = 0, timeout: float = 10.0
    ) -> IssuedCertificate:
        """Generate a key, send a CSR impersonating ``identity`` and check the returned chain."""
        return await self._issue(identity, ttl_seconds, timeout)

    async def _issue(
        self,
        identity: Identity,
        ttl_seconds: int,
        timeout: float,
        credentials: CallCredentials | None = None,
    ) -> IssuedCertificate:
        chain: list[str] = []

        async def submit(csr: str) -> list[str]:
            request = wire.CertificateRequest(
                csr=csr,
                validity_duration=ttl_seconds,
                metadata={wire.IMPERSONATED_IDENTITY: identity.uri},
            )
            try:
                raw = await self._call(
                    wire.CREATE_CERTIFICATE, request.encode(), timeout, credentials
                )
            except RpcError as exc:
                raise CAError(f"CreateCertificate for {identity}: {exc}") from exc
            chain.extend(wire.CertificateResponse.decode(raw).cert_chain)
            return chain

        issued = await issuance.request(identity, submit, self.keys_in_child, self._children)
        return IssuedCertificate(
            identity,
            issued.key_pem,
            tuple(chain[:-1]),
            (chain[-1],),
            issued.serial,
            issued.not_before,
            issued.not_after,
        )

    async def close(self) -> None:
        """Nothing to release: every call uses its own connection."""
