"""The request head that routing and filters see, and the direct responses they may return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from gateway.waypoint.peer import MeshPeer


class RequestHead:
    """One request's head: matched by routing, edited in place by filters, serialised upstream.

    ``headers`` keeps the order and case the client sent; names are compared case-insensitively
    through :meth:`get`, which builds a lower-cased index on first use. Filters that edit headers
    must go through :meth:`set_header`, :meth:`add_header` and :meth:`remove_header` so the index
    stays right.
    """

    __slots__ = (
        "_index",
        "_query_params",
        "authority",
        "client_ip",
        "headers",
        "host",
        "listener_port",
        "method",
        "path",
        "peer",
        "query",
        "scheme",
        "sni",
    )

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        authority: str,
        headers: list[tuple[str, str]],
        *,
        scheme: str = "http",
        client_ip: str = "",
        listener_port: int = 0,
        sni: str | None = None,
    ) -> None:
        self.method = method
        self.path = path  # raw path as received, no query
        self.query = query  # raw query string without "?", "" when absent
        self.authority = authority  # Host / :authority as received, port included
        self.host = host_without_port(authority)  # lower-cased, port stripped: what hostnames match
        self.headers = headers
        self.scheme = scheme
        self.client_ip = client_ip
        self.listener_port = listener_port
        # The TLS server name the client sent (lower case), None on cleartext or without SNI;
        # the router compares it with the Host to detect misdirected requests (421).
        self.sni = sni
        # Who sent the request over the mesh (waypoint mode): the HBONE peer's SPIFFE identity
        # and the destination the tunnel named; None for requests on the gateway's listeners.
        self.peer: MeshPeer | None = None
        self._index: dict[str, str] | None = None
        self._query_params: dict[str, str] | None = None

    @property
    def target(self) -> str:
        """The request target sent upstream: path plus the query string, unchanged."""
        return f"{self.path}?{self.query}" if self.query else self.path

    def get(self, name_lower: str) -> str | None:
        """First value of a header, by lower-case name."""
        index = self._index
        if index is None:
            index = {}
            for name, value in self.headers:
                index.setdefault(name.lower(), value)
            self._index = index
        return index.get(name_lower)

    def seed_index(self, index: dict[str, str]) -> None:
        """Install the lower-case name index of ``headers`` (first value of each name), built by a
        parser that lower-cases every name anyway, so :meth:`get` does not build it again."""
        self._index = index

    def query_param(self, name: str) -> str | None:
        """First value of a query parameter; names are case-sensitive, as the spec says."""
        params = self._query_params
        if params is None:
            params = {}
            query = self.query
            if "%" in query or "+" in query:
                pairs = parse_qsl(query, keep_blank_values=True)
            else:  # nothing to decode: a plain split is 6x cheaper than parse_qsl
                pairs = [(k, v) for k, _, v in (p.partition("=") for p in query.split("&")) if k]
            for key, value in pairs:
                params.setdefault(key, value)
            self._query_params = params
        return params.get(name)

    def set_header(self, name: str, value: str) -> None:
        """Replace every value of ``name`` (case-insensitive) with one value."""
        lower = name.lower()
        self.headers = [(n, v) for n, v in self.headers if n.lower() != lower]
        self.headers.append((name, value))
        self._index = None
        if lower == "host":
            self.authority = value
            self.host = host_without_port(value)

    def add_header(self, name: str, value: str) -> None:
        """Append a value; an existing header gets ``,value`` as the spec's conformance expects."""
        lower = name.lower()
        for i, (n, v) in enumerate(self.headers):
            if n.lower() == lower:
                self.headers[i] = (n, f"{v},{value}")
                self._index = None
                return
        self.headers.append((name, value))
        self._index = None

    def remove_header(self, name: str) -> None:
        """Drop every value of ``name`` (case-insensitive)."""
        lower = name.lower()
        self.headers = [(n, v) for n, v in self.headers if n.lower() != lower]
        self._index = None


# The class's own __new__ (object.__new__ here; a mypyc-compiled build has its own).
_new_head = RequestHead.__new__


def parsed_head(
    method: str,
    path: str,
    query: str,
    authority: str,
    headers: list[tuple[str, str]],
    index: dict[str, str],
    client_ip: str,
    listener_port: int,
) -> RequestHead:
    """A RequestHead as a parser makes it, with the lower-case name index it built while reading
    the fields (first value of each name): what RequestHead(...) makes, in one Python frame
    instead of three (its __init__, host_without_port, seed_index) — once per request."""
    head: RequestHead = _new_head(RequestHead)
    head.method = method
    head.path = path
    head.query = query
    head.authority = authority
    if authority and authority[0] != "[":  # host_without_port, inlined for a name or IPv4
        colon = authority.rfind(":")
        head.host = (authority[:colon] if colon != -1 else authority).lower()
    else:
        head.host = host_without_port(authority)
    head.headers = headers
    head.scheme = "http"
    head.client_ip = client_ip
    head.listener_port = listener_port
    head.sni = None
    head.peer = None
    head._index = index
    head._query_params = None
    return head


def host_without_port(authority: str) -> str:
    """Lower-cased host of a Host header, port (and IPv6 brackets' port) removed."""
    if not authority:
        return ""
    if authority[0] == "[":
        end = authority.find("]")
        return authority[: end + 1].lower() if end != -1 else authority.lower()
    colon = authority.rfind(":")
    return (authority[:colon] if colon != -1 else authority).lower()


@dataclass(slots=True)
class DirectResponse:
    """A response the gateway answers itself (redirect, CORS preflight, 404, 500, 503, 504)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def error_response(status: int, message: str) -> DirectResponse:
    """A plain-text error whose body names the problem."""
    return DirectResponse(
        status, [("content-type", "text/plain; charset=utf-8")], message.encode() + b"\n"
    )
