"""Providers behind a backend of the gateway (``backendRef``: an InferencePool): one pick per call.

The pool's backend (built by its own kind's factory at compile) sees the call as a
``ProxyRequest``: a head with the client's headers minus credentials, the body with the model
the LLMBackend chose (the pool may rewrite it), and a request id. Its ``pick`` may queue or
refuse (``PickRefused``: the status then decides failover like a provider's); its ``done`` hears
how the call ended, when the answer has been relayed, so the picker's in-flight accounting holds.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.backends.base import Backend, Endpoint, Pick, PickRefused
from gateway.request import RequestHead

if TYPE_CHECKING:
    from gateway.snapshot import BackendChoice, CompiledRule

_CREDENTIALS = {"authorization", "x-api-key", "cookie"}


@dataclass(slots=True)
class PoolRequest:
    """The call as the pool's backend sees it."""

    head: RequestHead
    body: bytes | None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # A provider's call is no route's request: no rule matched it, no backendRef was chosen.
    rule: CompiledRule | None = None
    choice: BackendChoice | None = None

    def annotate(self, key: str, value: str | int | float | bool) -> None:
        return None  # the responder's call has no span of its own to annotate


@dataclass(slots=True)
class PoolOutcome:
    """How the call ended, as ``Backend.done`` reads it."""

    status: int
    ok: bool
    aborted: bool
    state: Any
    failure: str
    request_bytes: int
    response_bytes: int
    first_byte: float
    duration: float


@dataclass(slots=True)
class PoolCall:
    """One picked endpoint: where to send the body, and how to tell the pool the call ended."""

    backend: Backend
    endpoint: Endpoint
    state: Any
    body: bytes
    started: float = field(default_factory=time.perf_counter)
    first_byte: float = -1.0
    reported: bool = False

    def url(self, path: str) -> str:
        scheme = "https" if self.endpoint.tls is not None else "http"
        return f"{scheme}://{self.endpoint}{path}"

    def head_arrived(self) -> None:
        self.first_byte = time.perf_counter() - self.started

    def end(
        self, status: int, *, ok: bool = True, aborted: bool = False, failure: str = ""
    ) -> None:
        """Report the call once (later calls are ignored)."""
        if self.reported:
            return
        self.reported = True
        outcome = PoolOutcome(
            status,
            ok,
            aborted,
            self.state,
            failure,
            len(self.body),
            0,
            self.first_byte,
            time.perf_counter() - self.started,
        )
        self.backend.done(self.endpoint, outcome)


async def pick(
    backend: Backend, path: str, body: bytes, headers: Mapping[str, str]
) -> PoolCall | tuple[int, str]:
    """An endpoint of the pool for this call, or the status and reason it could not have one."""
    listed = [(k, v) for k, v in headers.items() if k not in _CREDENTIALS]
    request = PoolRequest(RequestHead("POST", path, "", headers.get("host", ""), listed), body)
    try:
        result = backend.pick(request, ())
        if inspect.isawaitable(result):
            result = await result
    except PickRefused as exc:
        return exc.status, exc.message
    if result is None:
        return 503, "no ready endpoint"
    endpoint, state = (
        (result.endpoint, result.state) if isinstance(result, Pick) else (result, None)
    )
    return PoolCall(backend, endpoint, state, request.body or body)
