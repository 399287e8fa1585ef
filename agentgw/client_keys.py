"""API keys clients present to the agent gateway's endpoints, from Secrets: one model for the
LLMBackend's ``spec.keys`` and the MCPBackend's ``spec.authentication.apiKeys``, one lookup.

A key is presented as ``x-api-key: <key>`` or ``Authorization: Bearer <key>``. It is compared
by its SHA-256 digest against every configured key, so timing tells neither which key matched
nor how long the keys are. Keys are read from their Secrets at each compile: a rotated Secret is
followed on the next configuration reload.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import Field

from agentgw.resolving import secret_value
from agentgw.unique import check_unique
from gateway.backends.base import ResolveContext
from gateway.config.models import Model

KEY_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


class SecretKeyRef(Model):
    """A key of a ``v1`` Secret in the backend's namespace."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class ApiKey(Model):
    """An API key clients present, from a Secret; ``name`` (default: the Secret's name) is how
    rules, logs and budgets call its holder, ``team`` what it stands for."""

    name: str | None = Field(default=None, pattern=KEY_NAME)
    secret_ref: SecretKeyRef
    team: str | None = None

    @property
    def key_name(self) -> str:
        return self.name or self.secret_ref.name


def unique_names(field_name: str, keys: Sequence[ApiKey]) -> None:
    """ValueError naming the first key whose name another key has too."""
    hint = " (keys of one Secret need names of their own)"
    check_unique(field_name, (key.key_name for key in keys), hint)


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A compiled key: its secret (kept only as a digest), name, team and LLM budgets."""

    secret: bytes = field(repr=False)
    team: str | None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    name: str = ""
    digest: bytes = field(init=False, repr=False)  # what requests are compared with
    ident: str = field(init=False)  # the budget identity: the key itself is never kept twice

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.secret).digest()
        object.__setattr__(self, "digest", digest)
        object.__setattr__(self, "ident", digest.hex()[:24])

    def who(self) -> str:
        return f"team {self.team}" if self.team else "this key"


def compile_keys(
    ctx: ResolveContext,
    namespace: str,
    keys: Sequence[ApiKey],
    where: str,
    field_name: str,
    budgets: Mapping[int, tuple[int | None, int | None]] | None = None,
) -> tuple[ClientKey, ...]:
    """The keys' values from their Secrets (BackendNotFound naming a missing one); ``budgets``
    gives the (requests, tokens) per minute of the key at an index."""
    compiled = []
    for i, key in enumerate(keys):
        ref = key.secret_ref
        value = secret_value(ctx, namespace, ref.name, ref.key, where, f"{field_name}[{i}]")
        requests, tokens = (budgets or {}).get(i, (None, None))
        compiled.append(ClientKey(value.strip(), key.team, requests, tokens, key.key_name))
    return tuple(compiled)


def presented(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``x-api-key``, else an ``Authorization: Bearer`` value."""
    value = headers.get("x-api-key")
    if value is not None:
        return value.strip()
    authorization = headers.get("authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


def match(keys: Sequence[ClientKey], value: str) -> ClientKey | None:
    """The key whose value is ``value`` (every key compared, in constant time each)."""
    offered = hashlib.sha256(value.encode()).digest()
    found = None
    for key in keys:
        if hmac.compare_digest(offered, key.digest) and found is None:
            found = key
    return found
