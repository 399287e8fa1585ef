"""SPIFFE ids of the form ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mesh.errors import IdentityError

_SCHEME = "spiffe://"
_TRUST_DOMAIN = re.compile(r"^[a-z0-9._-]+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A workload identity in Istio's SPIFFE layout."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise IdentityError(f"invalid trust domain {self.trust_domain!r}")
        for name, value in (
            ("namespace", self.namespace),
            ("service account", self.service_account),
        ):
            if not _SEGMENT.match(value) or value in (".", ".."):
                raise IdentityError(f"invalid {name} {value!r} in SPIFFE id")

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse ``spiffe://td/ns/<ns>/sa/<sa>``; anything else raises IdentityError."""
        if not uri.startswith(_SCHEME):
            raise IdentityError(f"SPIFFE id {uri!r} must start with {_SCHEME}")
        parts = uri[len(_SCHEME) :].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise IdentityError(f"SPIFFE id {uri!r} must look like spiffe://<td>/ns/<ns>/sa/<sa>")
        return cls(parts[0], parts[2], parts[4])

    @property
    def uri(self) -> str:
        """The full ``spiffe://`` URI."""
        return f"{_SCHEME}{self.principal}"

    @property
    def principal(self) -> str:
        """The identity without the scheme, as AuthorizationPolicy principals spell it."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri


_NODE_PATH = ("ztunnel", "node")


@dataclass(frozen=True, slots=True)
class NodeId:
    """A ztunnel's node identity ``spiffe://<td>/ztunnel/node/<node>``, used only towards the CA.

    Its path cannot be read as a workload's (``ns/<ns>/sa/<sa>``), so a node certificate never
    passes as a workload SVID on HBONE.
    """

    trust_domain: str
    node: str

    def __post_init__(self) -> None:
        if not _TRUST_DOMAIN.match(self.trust_domain):
            raise IdentityError(f"invalid trust domain {self.trust_domain!r}")
        if not _SEGMENT.match(self.node) or self.node in (".", ".."):
            raise IdentityError(f"invalid node name {self.node!r} in SPIFFE id")

    @property
    def uri(self) -> str:
        """The full ``spiffe://`` URI."""
        return f"{_SCHEME}{self.trust_domain}/{'/'.join(_NODE_PATH)}/{self.node}"

    def __str__(self) -> str:
        return self.uri


Identity = SpiffeId | NodeId


def parse_identity(uri: str) -> Identity:
    """A workload (``ns/<ns>/sa/<sa>``) or node (``ztunnel/node/<node>``) SPIFFE id."""
    if uri.startswith(_SCHEME):
        parts = uri[len(_SCHEME) :].split("/")
        if len(parts) == 4 and tuple(parts[1:3]) == _NODE_PATH:
            return NodeId(parts[0], parts[3])
    return SpiffeId.parse(uri)
