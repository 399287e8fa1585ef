"""CORS: preflights answered by the gateway, actual responses given Allow-Origin and friends."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.request import DirectResponse, RequestHead

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class OriginPattern:
    """One ``allowOrigins`` entry: scheme, host (exact, ``*.suffix`` or ``*``) and port."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> OriginPattern:
        """``https://*.bar.com`` -> scheme https, host ``*.bar.com``, port 443."""
        scheme, _, authority = text.partition("://")
        scheme = scheme.lower()
        host, port = _split_port(authority.lower(), scheme)
        return cls(scheme, host, port)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        """Whether a request Origin's parts fit this pattern."""
        if scheme != self.scheme or port != self.port:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host


def _split_port(authority: str, scheme: str) -> tuple[str, int]:
    """Host and port of an origin's authority; the scheme's default port when absent."""
    host, colon, port = authority.rpartition(":")
    if colon and port.isdigit() and (host.endswith("]") or ":" not in host):
        return host, int(port)
    return authority, _DEFAULT_PORTS.get(scheme, 0)


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """A compiled CORS filter."""

    any_origin: bool
    origins: tuple[OriginPattern, ...]
    credentials: bool
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    expose: tuple[str, ...]
    max_age: int

    def allows(self, origin: str) -> bool:
        """Whether a request Origin is allowed."""
        if self.any_origin:
            return True
        scheme, sep, authority = origin.partition("://")
        if not sep:
            return False
        scheme = scheme.lower()
        host, port = _split_port(authority.lower(), scheme)
        return any(p.matches(scheme, host, port) for p in self.origins)

    def allow_origin(self, origin: str) -> str:
        """Access-Control-Allow-Origin: ``*`` only for a wildcard without credentials."""
        return "*" if self.any_origin and not self.credentials else origin


@dataclass(frozen=True, slots=True)
class CorsPreflight:
    """Answers preflight requests (OPTIONS + Origin + Access-Control-Request-Method) with 204."""

    policy: CorsPolicy

    def apply(self, head: RequestHead) -> DirectResponse | None:
        """A 204 with the CORS headers for an allowed origin, without them otherwise."""
        if head.method != "OPTIONS":
            return None
        origin = head.get("origin")
        method = head.get("access-control-request-method")
        if origin is None or method is None:
            return None
        policy = self.policy
        headers: list[tuple[str, str]] = [("content-length", "0")]
        if policy.allows(origin):
            allow_origin = policy.allow_origin(origin)
            headers.append(("access-control-allow-origin", allow_origin))
            if allow_origin != "*":
                headers.append(("vary", "Origin"))
            if policy.credentials:
                headers.append(("access-control-allow-credentials", "true"))
            if policy.methods:
                allowed = method if "*" in policy.methods else ", ".join(policy.methods)
                headers.append(("access-control-allow-methods", allowed))
            requested = head.get("access-control-request-headers")
            if "*" in policy.headers:
                if requested:
                    headers.append(("access-control-allow-headers", requested))
            elif policy.headers:
                headers.append(("access-control-allow-headers", ", ".join(policy.headers)))
            if policy.expose:
                headers.append(("access-control-expose-headers", ", ".join(policy.expose)))
            headers.append(("access-control-max-age", str(policy.max_age)))
        return DirectResponse(204, headers)


@dataclass(frozen=True, slots=True)
class CorsResponse:
    """Adds Allow-Origin, Allow-Credentials and Expose-Headers to responses of allowed origins."""

    policy: CorsPolicy

    def apply(self, head: RequestHead, status: int, headers: list[tuple[str, str]]) -> None:
        """Edit the response headers in place."""
        origin = head.get("origin")
        if origin is None or not self.policy.allows(origin):
            return
        policy = self.policy
        headers[:] = [(n, v) for n, v in headers if not n.lower().startswith("access-control-")]
        allow_origin = policy.allow_origin(origin)
        headers.append(("access-control-allow-origin", allow_origin))
        if allow_origin != "*":
            headers.append(("vary", "Origin"))
        if policy.credentials:
            headers.append(("access-control-allow-credentials", "true"))
        if policy.expose:
            headers.append(("access-control-expose-headers", ", ".join(policy.expose)))
