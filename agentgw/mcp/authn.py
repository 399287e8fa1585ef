"""Authentication of MCP clients (bearer JWTs, API keys from Secrets), and the RFC 9728
metadata that tells them how.

A token is checked for its signature (a key of the JWKS, chosen by ``kid``), issuer, audience
and expiry (``exp`` required; ``clockSkewSeconds`` of leeway). A failure is 401 with
``WWW-Authenticate: Bearer`` pointing at the protected-resource metadata, which the endpoint
serves at ``/.well-known/oauth-protected-resource<path>`` (a route must send that path to the
MCPBackend too). The client's token is never sent upstream.

API keys (:mod:`agentgw.client_keys`) come as ``x-api-key`` or ``Authorization: Bearer``; with
both JWTs and keys configured a bearer value that is one of the keys is that key, anything else
must be a valid token. Without JWTs the challenge is a bare ``Bearer`` (there is no
authorization server to point at).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

from agentgw.client_keys import ClientKey, match, presented

WELL_KNOWN = "/.well-known/oauth-protected-resource"


class AuthError(Exception):
    """A request without a valid token; the message says what was wrong."""


class JwksError(ValueError):
    """A JWKS document that cannot be used."""


def load_jwks(document: str) -> dict[str, PyJWK]:
    """The signing keys of a JWKS document by ``kid`` ("" for a key without one)."""
    try:
        keys = PyJWKSet.from_json(document).keys
    except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError) as exc:
        raise JwksError(f"not a usable JWKS: {exc}") from exc
    return {key.key_id or "": key for key in keys if key.public_key_use in (None, "sig")}


@dataclass(frozen=True, slots=True)
class JwtAuth:
    """Validates bearer tokens for one MCPBackend."""

    issuer: str
    audiences: tuple[str, ...]
    keys: dict[str, PyJWK]
    skew: float

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """The claims of the request's bearer token; AuthError when there is none or it fails."""
        if not authorization:
            raise AuthError("a bearer token is required")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header is not 'Bearer <token>'")
        token = token.strip()
        try:
            kid = jwt.get_unverified_header(token).get("kid") or ""
        except jwt.DecodeError as exc:
            raise AuthError(f"the token is malformed: {exc}") from exc
        key = self.keys.get(kid) or (self.keys.get("") if len(self.keys) == 1 else None)
        if key is None:
            raise AuthError(f"no key {kid!r} in the JWKS")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name],
                audience=list(self.audiences),
                issuer=self.issuer,
                leeway=self.skew,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"the token is not valid: {exc}") from exc
        return claims


@dataclass(frozen=True, slots=True)
class Authenticator:
    """One MCPBackend's ways in: bearer JWTs, API keys, or both."""

    jwt: JwtAuth | None
    keys: tuple[ClientKey, ...] = ()

    def verify(self, headers: Mapping[str, str]) -> tuple[dict[str, Any], ClientKey | None]:
        """The token's claims or the key a request presents; AuthError naming what is wrong."""
        offered = presented(headers)
        if self.keys and offered:
            key = match(self.keys, offered)
            if key is not None:
                return {}, key
            if self.jwt is None or "x-api-key" in headers:
                raise AuthError("the API key is not valid for this endpoint")
        if self.jwt is None:
            raise AuthError("an API key is required (x-api-key or Authorization: Bearer)")
        if not headers.get("authorization") and self.keys:
            raise AuthError("a bearer token or an API key is required")
        return self.jwt.verify(headers.get("authorization")), None

    def challenge(self, base: str, path: str, error: str | None = None) -> str:
        """The ``WWW-Authenticate`` value of a 401 for the endpoint at ``base`` + ``path``."""
        value = "Bearer"
        if self.jwt is not None:
            value += f' resource_metadata="{base}{WELL_KNOWN}{path}"'
        if error is not None:
            value += ("," if self.jwt is not None else "") + f' error="{error}"'
        return value


def metadata(base: str, path: str, issuer: str) -> dict[str, Any]:
    """The RFC 9728 protected-resource metadata of the endpoint at ``base`` + ``path``."""
    return {
        "resource": f"{base}{path}",
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
    }
