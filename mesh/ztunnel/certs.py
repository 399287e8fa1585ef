"""Per-workload certificates from the CA: cached, rotated before expiry with back-off on failure."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mesh.ca.client import IssuedCertificate, utcnow
from mesh.errors import CAError
from mesh.hbone.tls import Credentials, client_context, server_context
from mesh.identity.spiffe import SpiffeId

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 150.0


class Issuer(Protocol):
    """What the manager needs from a CA client."""

    async def issue(
        self, identity: SpiffeId, ttl_seconds: int = 0, timeout: float = 10.0
    ) -> IssuedCertificate:
        """Obtain a fresh certificate for ``identity``."""
        ...


@dataclass(frozen=True, slots=True)
class WorkloadCert:
    """An issued certificate with its ready-made TLS contexts."""

    issued: IssuedCertificate
    received_at: dt.datetime
    server: ssl.SSLContext
    client: ssl.SSLContext

    @property
    def not_after(self) -> dt.datetime:
        """Expiry of the leaf."""
        return self.issued.not_after

    def refresh_at(self, fraction: float) -> dt.datetime:
        """When to rotate: ``fraction`` of the remaining lifetime measured from receipt."""
        # Measured from receipt rather than NotBefore: NotBefore is back-dated 2 min, which for
        # a 1-minute certificate would put the half-life in the past.
        return self.received_at + (self.not_after - self.received_at) * fraction


class CertManager:
    """Fetches, caches and rotates one certificate per local workload identity."""

    def __init__(
        self,
        issuer: Issuer,
        ttl_seconds: int = 86400,
        rotate_fraction: float = 0.5,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.issuer = issuer
        self.ttl_seconds = ttl_seconds
        self.rotate_fraction = rotate_fraction
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._certs: dict[SpiffeId, WorkloadCert] = {}
        self._tasks: dict[SpiffeId, asyncio.Task[None]] = {}
        self._ready: dict[SpiffeId, asyncio.Event] = {}
        self.rotations = 0

    def ensure(self, identities: Iterable[SpiffeId]) -> None:
        """Keep certificates for exactly these identities (start new, stop removed)."""
        wanted = set(identities)
        for identity in wanted - self._tasks.keys():
            self._ready.setdefault(identity, asyncio.Event())
            self._tasks[identity] = asyncio.get_running_loop().create_task(self._maintain(identity))
        for identity in set(self._tasks) - wanted:
            self._tasks.pop(identity).cancel()
            self._certs.pop(identity, None)
            self._ready.pop(identity, None)

    def current(self, identity: SpiffeId) -> WorkloadCert | None:
        """The cached, unexpired certificate, if any."""
        cert = self._certs.get(identity)
        if cert is not None and cert.not_after <= utcnow():
            return None
        return cert

    async def get(self, identity: SpiffeId, timeout: float = 10.0) -> WorkloadCert:
        """Wait for the identity's certificate; raises CAError if it is not managed or not ready."""
        cert = self.current(identity)
        if cert is not None:
            return cert
        event = self._ready.get(identity)
        if event is None:
            raise CAError(f"no certificate is managed for {identity} on this node")
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError as exc:
            raise CAError(f"certificate for {identity} not available yet") from exc
        cert = self.current(identity)
        if cert is None:
            raise CAError(f"certificate for {identity} expired")
        return cert

    async def _fetch(self, identity: SpiffeId) -> WorkloadCert:
        issued = await self.issuer.issue(identity, self.ttl_seconds)
        creds = Credentials(issued.key_pem, issued.chain_pem, issued.roots_pem)
        return WorkloadCert(issued, utcnow(), server_context(creds), client_context(creds))

    async def _maintain(self, identity: SpiffeId) -> None:
        backoff = self.backoff_initial
        while True:
            try:
                cert = await self._fetch(identity)
            except (CAError, OSError, ssl.SSLError) as exc:
                # Keep serving the previous certificate until it expires; retry with back-off.
                log.warning("certificate for %s: %s; retrying in %.1fs", identity, exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.9, 1.1))
                backoff = min(backoff * 2, self.backoff_max)
                continue
            backoff = self.backoff_initial
            if identity in self._certs:
                self.rotations += 1
            self._certs[identity] = cert
            self._ready[identity].set()
            at = cert.refresh_at(self.rotate_fraction)
            delay = max(0.0, (at - utcnow()).total_seconds()) * random.uniform(0.99, 1.0)
            log.info(
                "certificate for %s serial %x valid until %s; refresh in %.1fs",
                identity,
                cert.issued.serial,
                cert.not_after.isoformat(),
                delay,
            )
            await asyncio.sleep(delay)

    def dump(self) -> list[dict[str, Any]]:
        """Certificates for config_dump: identity, pem, serial, validity."""
        out = []
        for identity, cert in sorted(self._certs.items(), key=lambda kv: kv[0].uri):
            issued = cert.issued
            out.append(
                {
                    "identity": identity.uri,
                    "state": "Available" if self.current(identity) else "Expired",
                    "certChain": [
                        {
                            "pem": issued.chain_pem[0],
                            "serialNumber": format(issued.serial, "x"),
                            "validFrom": issued.not_before.isoformat(),
                            "expirationTime": issued.not_after.isoformat(),
                        }
                    ],
                    "rootCerts": list(cert.issued.roots_pem),
                }
            )
        return out

    async def close(self) -> None:
        """Stop every rotation task."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
