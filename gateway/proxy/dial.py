"""Dialling an upstream: TCP, or TCP and TLS verified before the connection's protocol sees it.

A TLS endpoint (``Endpoint.tls``) is dialled with its client context and SNI; the chain (and, by
default, the server name) is checked during the handshake, the policy's subjectAltNames right
after it (:meth:`UpstreamTls.check`). Only then is the HTTP/1.1 or HTTP/2 protocol attached, so
an unverified peer never receives a byte of HTTP, not even the HTTP/2 preface. A failure raises:
``ssl.SSLCertVerificationError`` (:class:`UpstreamTlsError`) when the certificate does not
verify, ``ssl.SSLError`` (:class:`UpstreamHandshakeError`) when the handshake fails otherwise.
There is no fallback to cleartext.

:func:`upstream_failed` names why a dial failed, for the access log and
``ambient_gateway_upstream_connect_failures_total``; it runs only when a dial failed.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar, cast

from gateway.tls.upstream import UpstreamHandshakeError, UpstreamTlsError

if TYPE_CHECKING:
    from gateway.backends.base import Backend, Endpoint

P = TypeVar("P", bound=asyncio.BaseProtocol)

TunnelOpen = Callable[
    [Callable[[], asyncio.Protocol]], Awaitable[tuple[asyncio.BaseTransport, asyncio.Protocol]]
]
Tunnels = Callable[["Endpoint"], TunnelOpen | None]
"""Waypoint mode: how to reach an endpoint through the mesh (HBONE), or None for a direct dial."""

TLS_VERIFY = "tls_verify"
TLS_HANDSHAKE = "tls_handshake"
CONNECT_REFUSED = "connect_refused"
CONNECT_TIMEOUT = "connect_timeout"
CONNECT_ERROR = "connect_error"


class _Verifying(asyncio.Protocol):
    """Holds a TLS connection from the end of its handshake until its protocol takes it over."""

    __slots__ = ("closed", "early")

    def __init__(self) -> None:
        self.early: list[bytes] = []  # e.g. an HTTP/2 server's SETTINGS, sent at once
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self.early.append(data)

    def eof_received(self) -> bool:
        self.closed = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    endpoint: Endpoint,
    tunnels: Tunnels | None = None,
) -> tuple[asyncio.BaseTransport, P]:
    """Connect to ``endpoint`` (through a mesh tunnel when ``tunnels`` gives one, with TLS when
    the endpoint says so) and attach ``factory()``'s protocol."""
    if tunnels is not None:
        tunnel = tunnels(endpoint)
        if tunnel is not None:
            carried, attached = await tunnel(cast(Callable[[], asyncio.Protocol], factory))
            return carried, cast(P, attached)
    tls = endpoint.tls
    if tls is None:
        return await loop.create_connection(factory, endpoint.address, endpoint.port)
    where = f"TLS to {endpoint} (SNI {tls.server_name})"
    try:
        transport, held = await loop.create_connection(
            _Verifying,
            endpoint.address,
            endpoint.port,
            ssl=tls.context,
            server_hostname=tls.server_name,
        )
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamTlsError(f"{where}: certificate verify failed: {exc.verify_message}") from exc
    except ssl.SSLError as exc:
        raise UpstreamHandshakeError(f"{where}: handshake failed: {exc.reason or exc}") from exc
    except ConnectionResetError as exc:
        raise UpstreamHandshakeError(
            f"{where}: handshake failed: the upstream closed the connection"
        ) from exc
    try:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            raise UpstreamHandshakeError(f"{where}: the transport has no TLS session")
        try:
            tls.check(ssl_object)
        except UpstreamTlsError as exc:
            raise UpstreamTlsError(f"{where}: {exc}") from None
        if held.closed:
            raise ConnectionResetError(f"{where}: the upstream closed the connection")
    except BaseException:
        transport.abort()
        raise
    protocol = factory()
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    if held.early and isinstance(protocol, asyncio.Protocol):
        for data in held.early:
            protocol.data_received(data)
    return transport, protocol


def failure_reason(error: BaseException | None) -> str:
    """Why a dial failed: tls_verify, tls_handshake, connect_refused, connect_timeout, or
    connect_error."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return TLS_VERIFY
    if isinstance(error, ssl.SSLError):
        return TLS_HANDSHAKE
    if isinstance(error, ConnectionRefusedError):
        return CONNECT_REFUSED
    if isinstance(error, TimeoutError):
        return CONNECT_TIMEOUT
    return CONNECT_ERROR


def upstream_failed(telemetry: object, backend: Backend | None, error: BaseException | None) -> str:
    """Name a failed dial and count it (when ``telemetry`` keeps metrics); returns the reason."""
    reason = failure_reason(error)
    metrics = getattr(telemetry, "metrics", None)
    if metrics is not None:
        metrics.upstream_connect_failure(
            backend.destination if backend is not None else None, reason
        )
    return reason
