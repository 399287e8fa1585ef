"""Session ids that are the session: the gateway's state sealed with AES-256-GCM.

A federated session is the negotiated version, each target's upstream session id and the
client's ``initialize`` params (to re-initialise an upstream whose session expired). Sealed, it
is the ``Mcp-Session-Id`` the client holds: any replica with the same key (from a Secret) opens
it, so no session store is shared and a restarted gateway resumes. The MCPBackend's identity is
the associated data, so an id from one backend does not open at another. The key is made with
HKDF from the Secret's bytes: one hash per compile, no per-session key-stretching cost.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_FORMAT = 1
_NONCE = 12
_INFO = b"ambient-gateway mcp session v1"


class SessionError(ValueError):
    """A session id that does not open: unknown, forged, from another backend or key."""


@dataclass(frozen=True, slots=True)
class SessionState:
    """What a session id holds."""

    version: str
    upstreams: tuple[tuple[str, str | None], ...]  # (target, its session id) per target in it
    client: dict[str, Any]  # the client's initialize params
    issued: int = 0
    principal: str = ""  # the token's subject the session is bound to ("" without one)

    def upstream(self, target: str) -> str | None:
        """``target``'s upstream session id (None: the upstream keeps no session)."""
        for name, session in self.upstreams:
            if name == target:
                return session
        return None

    @property
    def targets(self) -> tuple[str, ...]:
        """The targets in this session (under FailOpen, those that initialised)."""
        return tuple(name for name, _ in self.upstreams)


def derive_key(secret: bytes) -> bytes:
    """The AES-256 key made from a Secret's bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)


@dataclass(frozen=True, slots=True)
class Sealer:
    """Seals and opens session ids of one MCPBackend with one key."""

    key: bytes
    context: bytes  # the backend's identity, bound as associated data

    @classmethod
    def random(cls, context: bytes) -> Sealer:
        """A sealer with a key of this process only."""
        return cls(os.urandom(32), context)

    def seal(self, state: SessionState) -> str:
        """The session id holding ``state``."""
        payload = orjson.dumps(
            [
                _FORMAT,
                state.version,
                dict(state.upstreams),
                state.client,
                state.issued,
                state.principal,
            ]
        )
        nonce = os.urandom(_NONCE)
        sealed = nonce + AESGCM(self.key).encrypt(nonce, payload, self.context)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def seal_value(self, value: Any, purpose: bytes) -> str:
        """``value`` (JSON) sealed for ``purpose`` (another purpose's opening fails)."""
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self.key).encrypt(nonce, orjson.dumps(value), self.context + purpose)
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open_value(self, token: str, purpose: bytes) -> Any:
        """What :meth:`seal_value` sealed for ``purpose``; SessionError when it does not open."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            payload = AESGCM(self.key).decrypt(raw[:_NONCE], raw[_NONCE:], self.context + purpose)
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise SessionError("not sealed by this gateway") from exc
        return orjson.loads(payload)

    def open(self, session_id: str) -> SessionState:
        """The state in ``session_id``; SessionError when it does not open."""
        try:
            raw = base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))
        except (binascii.Error, ValueError) as exc:
            raise SessionError("not a session id of this gateway") from exc
        if len(raw) <= _NONCE + 16:
            raise SessionError("not a session id of this gateway")
        try:
            payload = AESGCM(self.key).decrypt(raw[:_NONCE], raw[_NONCE:], self.context)
        except InvalidTag as exc:
            raise SessionError("not a session id of this gateway") from exc
        fmt, version, upstreams, client, issued, principal = orjson.loads(payload)
        if fmt != _FORMAT:
            raise SessionError(f"session format {fmt} is not supported")
        return SessionState(version, tuple(upstreams.items()), client, issued, principal)


def now() -> int:
    """Seconds since the epoch, as sessions record their start."""
    return int(time.time())
