"""Answer agreement: a share of the requests a rewrite sends to stable, copied to the canary.

A rollout with an ``agreement`` check sets a :class:`MirrorPlan` for its rewrite rule
(:meth:`~inference_ext.rewrite.RewriteState.set_mirror`). The pool backend draws, per request
answered by another target than the canary, whether to copy it (``fraction``); the response tap
then reads the answer's text as it streams to the client (nothing is held back from the client).
When the answer ends with 200, :class:`CanaryMirror` sends the same body as the canary model to
one of the pool's servers (the picker chooses it, as for any request of that model), reads the
canary's answer whole, drops it and counts whether the two agree
(:func:`~inference_ext.rollout.agreement.compare_with_canary`). The copy runs in the background
after the client's answer is complete: it can neither delay nor fail the client's request. At
most ``limit`` copies run at once per process; more are skipped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from gateway.backends.base import Endpoint

# The module, not its names: agreement imports this package (its splice), so either may load first.
from inference_ext.rollout import agreement

if TYPE_CHECKING:
    from inference_ext.rollout.agreement import Comparison

log = logging.getLogger(__name__)

MIRRORS_AT_ONCE = 32
MIRROR_TIMEOUT = 60.0  # seconds for the canary's whole answer


@dataclass(frozen=True, slots=True)
class MirrorPlan:
    """Copy ``fraction`` of a rule's non-canary requests to ``canary``; count for ``rollout``."""

    rollout: str  # "namespace/name": the agreement counters' key
    canary: str  # the model the copies are sent as
    fraction: float  # in [0, 1]
    comparison: Comparison


@dataclass(frozen=True, slots=True)
class MirrorCopy:
    """One request to copy: the body as sent to stable, its path, and stable's answer text."""

    plan: MirrorPlan
    body: bytes
    path: str
    stable_text: str
    request_id: str


# Chooses one of the pool's servers for the canary model; the release callback ends its count.
PickCanary = Callable[[MirrorCopy], tuple[Endpoint, Callable[[], None]]]


class CanaryMirror:
    """The copies in flight in this process, their HTTP clients, and the agreement counts."""

    def __init__(self, limit: int = MIRRORS_AT_ONCE) -> None:
        self.limit = limit
        self.counters = agreement.AgreementCounters()
        self.sent = 0
        self.skipped = 0  # over the limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._clients: dict[bool, httpx.AsyncClient] = {}

    def start(self, copy: MirrorCopy, pick: PickCanary) -> bool:
        """Compare ``copy`` with the canary in the background (False: skipped, at the limit)."""
        if len(self._tasks) >= self.limit:
            self.skipped += 1
            return False
        self.sent += 1
        task = asyncio.get_running_loop().create_task(self._compare(copy, pick))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _compare(self, copy: MirrorCopy, pick: PickCanary) -> None:
        plan = copy.plan
        send = self._sender(copy, pick)
        result = await agreement.compare_with_canary(
            send, copy.body, plan.canary, copy.stable_text, plan.comparison, MIRROR_TIMEOUT
        )
        self.counters.add(plan.rollout, time.time(), result)

    def _sender(self, copy: MirrorCopy, pick: PickCanary) -> Callable[[bytes], Awaitable[bytes]]:
        async def send(body: bytes) -> bytes:
            endpoint, release = pick(copy)
            try:
                client = self._client(endpoint.protocol == "h2c")
                response = await client.post(
                    f"http://{endpoint}{copy.path}",
                    content=body,
                    headers={
                        "content-type": "application/json",
                        "x-request-id": f"{copy.request_id}-mirror",
                    },
                )
                response.raise_for_status()
                return response.content
            finally:
                release()

        return send

    def _client(self, h2c: bool) -> httpx.AsyncClient:
        client = self._clients.get(h2c)
        if client is None:
            client = httpx.AsyncClient(
                timeout=MIRROR_TIMEOUT, http1=not h2c, http2=h2c, trust_env=False
            )
            self._clients[h2c] = client
        return client

    def in_flight(self) -> int:
        """Copies not finished yet."""
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel the copies in flight and close the clients (the serving process stops)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
