"""RequestRedirect: answer with a 3xx and a Location built per the spec's port derivation."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.filters.path import rewritten_path
from gateway.request import DirectResponse, RequestHead, error_response

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RequestRedirect:
    """A compiled redirect; ``prefix`` is the rule's PathPrefix when ReplacePrefixMatch is used."""

    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    status: int = 302
    full_path: str | None = None
    prefix: str | None = None
    prefix_replacement: str | None = None

    def apply(self, head: RequestHead) -> DirectResponse | None:
        """The redirect response; the query string is preserved."""
        location = self.location(head)
        if location is None:
            return error_response(400, "a Host header is required for this redirect")
        return DirectResponse(self.status, [("location", location), ("content-length", "0")])

    def location(self, head: RequestHead) -> str | None:
        """The Location URL for a request; None when it needs a host nobody gave.

        Without a configured hostname or a Host header (HTTP/1.0) an absolute URL would have an
        empty host, so the Location is a path-absolute reference when the redirect keeps the
        request's scheme and port, and there is none otherwise.
        """
        scheme = self.scheme or head.scheme
        if self.port is not None:
            port = self.port
        elif self.scheme is not None:
            port = _DEFAULT_PORTS.get(scheme, 0)
        else:
            port = head.listener_port
        path = rewritten_path(head.path, self.full_path, self.prefix, self.prefix_replacement)
        query = f"?{head.query}" if head.query else ""
        host = self.hostname or head.host
        if not host:
            same_origin = scheme == head.scheme and port == head.listener_port
            return f"{path}{query}" if same_origin else None
        authority = host if not port or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
        return f"{scheme}://{authority}{path}{query}"
