"""Leader election over a ``coordination.k8s.io/v1`` Lease, as client-go does it.

The holder renews the Lease every ``renew_every`` seconds; another candidate takes it over
once it has seen the same Lease unchanged for ``duration`` seconds (measured on its own clock,
so clocks need not agree). Every write carries the resourceVersion it read: of two candidates
taking over at once, one gets 409 and stays a follower. A leader that stops releases the Lease
so that a follower takes over at its next try.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kubernetes import client

log = logging.getLogger("cluster.lease")


@dataclass(frozen=True, slots=True)
class LeaseOptions:
    """Where the Lease lives, who we are, and the timing (seconds)."""

    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    renew_every: float = 2.0


class LeaderElector:
    """Campaigns for the Lease until stopped; ``leader`` says whether we hold it now."""

    def __init__(
        self,
        api: client.ApiClient,
        options: LeaseOptions,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.options = options
        self._api = client.CoordinationV1Api(api)
        self._on_change = on_change
        self.leader = False
        self._seen: tuple[str, float] | None = None  # (resourceVersion, when first seen)

    async def run(self) -> None:
        """Try to acquire or renew every ``renew_every`` seconds, forever."""
        while True:
            try:
                held = await asyncio.to_thread(self._try)
            except client.ApiException as exc:
                log.warning("lease %s: HTTP %s %s", self.options.name, exc.status, exc.reason)
                held = False
            except OSError as exc:
                log.warning("lease %s: %s", self.options.name, exc)
                held = False
            self._set(held)
            await asyncio.sleep(self.options.renew_every)

    async def release(self) -> None:
        """Give the Lease up if we hold it (a follower takes over without waiting it out)."""
        if self.leader:
            self._set(False)
            try:
                await asyncio.to_thread(self._release)
            except (client.ApiException, OSError) as exc:
                log.warning("lease %s: release failed: %s", self.options.name, exc)

    def _set(self, held: bool) -> None:
        if held != self.leader:
            self.leader = held
            log.info(
                "lease %s/%s: %s",
                self.options.namespace,
                self.options.name,
                "became leader" if held else "not leader",
            )
            if self._on_change is not None:
                self._on_change(held)

    def _read(self) -> client.V1Lease | None:
        try:
            lease: client.V1Lease = self._api.read_namespaced_lease(
                self.options.name, self.options.namespace
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return lease

    def _spec(self, transitions: int, acquired: datetime | None) -> client.V1LeaseSpec:
        now = datetime.now(UTC)
        return client.V1LeaseSpec(
            holder_identity=self.options.identity,
            lease_duration_seconds=max(1, round(self.options.duration)),
            acquire_time=acquired or now,
            renew_time=now,
            lease_transitions=transitions,
        )

    def _try(self) -> bool:
        lease = self._read()
        if lease is None:
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(
                    name=self.options.name, namespace=self.options.namespace
                ),
                spec=self._spec(0, None),
            )
            return self._write(
                lambda: self._api.create_namespaced_lease(self.options.namespace, body)
            )
        spec = lease.spec or client.V1LeaseSpec()
        version = str(lease.metadata.resource_version if lease.metadata else "")
        if spec.holder_identity == self.options.identity:
            lease.spec = self._spec(spec.lease_transitions or 0, spec.acquire_time)
        else:
            if spec.holder_identity and not self._expired(version):
                return False
            lease.spec = self._spec((spec.lease_transitions or 0) + 1, None)
        return self._write(
            lambda: self._api.replace_namespaced_lease(
                self.options.name, self.options.namespace, lease
            )
        )

    def _expired(self, version: str) -> bool:
        """True once the Lease has stayed at ``version`` for longer than its duration."""
        now = time.monotonic()
        if self._seen is None or self._seen[0] != version:
            self._seen = (version, now)
        return now - self._seen[1] > self.options.duration

    def _write(self, call: Callable[[], object]) -> bool:
        try:
            call()
        except client.ApiException as exc:
            if exc.status in (409, 422):
                return False  # someone else wrote first
            raise
        return True

    def _release(self) -> None:
        lease = self._read()
        if lease is None or lease.spec is None:
            return
        if lease.spec.holder_identity != self.options.identity:
            return
        lease.spec.holder_identity = None
        lease.spec.renew_time = datetime.now(UTC)
        self._write(
            lambda: self._api.replace_namespaced_lease(
                self.options.name, self.options.namespace, lease
            )
        )
