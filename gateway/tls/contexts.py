"""Server-side ``ssl.SSLContext``s: one per listener, and one per port that picks them by SNI.

Python's ``ssl`` loads certificates only from files, so each PEM is handed over through an
anonymous in-memory file (``memfd``; a private temporary file where that does not exist) and the
private key never touches the disk on Linux.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gateway.routing.hosts import HostTable, host_key
from gateway.tls.certificates import Certificate

ALPN_PROTOCOLS = ("h2", "http/1.1")
# TLS 1.2 suites: AEAD with forward secrecy only, as HTTP/2 requires (RFC 9113 section 9.2.2);
# TLS 1.3 suites are all acceptable and are configured separately by OpenSSL.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"

# SSLObject -> the server name its client sent, filled by the SNI callback during the handshake:
# Python's ssl offers no server-side accessor for it. Weak keys: entries go with their connection.
_SERVER_NAMES: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class TlsListener:
    """One HTTPS listener of a port: its hostname (None: any) and its certificates."""

    name: str
    hostname: str | None
    certificates: tuple[Certificate, ...]


def server_context(certificates: Sequence[Certificate]) -> ssl.SSLContext:
    """A TLS 1.2+ server context offering ALPN h2 and http/1.1 with these certificates loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    for certificate in certificates:
        with _pem_file(certificate.chain_pem) as chain, _pem_file(certificate.key_pem) as key:
            context.load_cert_chain(chain, key)
    return context


class SniSelector:
    """The ``sni_callback`` of a port context: switches to the listener context the name selects.

    Exact hostname first, then the most specific wildcard, then the listener without a hostname;
    a name no listener covers keeps the port's default context (catch-all listener, or the first).
    """

    __slots__ = ("table",)

    def __init__(self, table: HostTable[ssl.SSLContext]) -> None:
        self.table = table

    def __call__(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> None:
        if server_name is None:
            return
        name = server_name.lower()
        _SERVER_NAMES[ssl_object] = name
        chosen = self.table.best(name)
        if chosen is not None and chosen is not context:
            ssl_object.context = chosen


def port_context(listeners: Sequence[TlsListener]) -> ssl.SSLContext:
    """The context a TLS port is served with: default certificates plus SNI selection."""
    if not listeners:
        raise ValueError("a TLS port needs at least one listener")
    default = next((item for item in listeners if item.hostname is None), listeners[0])
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    catch_all: ssl.SSLContext | None = None
    for item in listeners:
        kind, name = host_key(item.hostname)
        context = server_context(item.certificates)
        if kind == "exact":
            exact.setdefault(name, context)
        elif kind == "wildcard":
            wildcard.setdefault(name, context)
        elif catch_all is None:
            catch_all = context
    context = server_context(default.certificates)
    context.sni_callback = SniSelector(HostTable.of(exact, wildcard, catch_all))
    return context


def server_name(ssl_object: object) -> str | None:
    """The SNI name (lower case) a server-side ``SSLObject``'s client sent, after the handshake."""
    return _SERVER_NAMES.get(ssl_object)


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read ``data`` from, valid inside the ``with`` block."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("ambient-pem", 0)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(suffix=".pem")  # mode 0600
    try:
        os.write(fd, data)
        os.close(fd)
        yield path
    finally:
        os.unlink(path)
