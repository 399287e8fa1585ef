"""The ASGI app ``bench.asgi`` serves, and a plugin that mounts ASGI apps in the gateway.

``app`` is a Starlette app: ``GET /hello`` answers ``Hello, world!``; ``GET /sse?n=N`` streams N
small server-sent events as fast as the client takes them. ``bare`` answers ``/hello`` the same
way without a framework. uvicorn serves it as
``bench.asgi_apps:app``; the gateway serves the very same object once the plugin is loaded
(``AMBIENT_PLUGINS=bench.asgi_apps``): the plugin registers the backend kind
``bench.ambient.dev/AsgiApp``, whose resource names an ASGI app by import path::

    apiVersion: bench.ambient.dev/v1alpha1
    kind: AsgiApp
    metadata: {name: hello, namespace: default}
    spec: {app: "bench.asgi_apps:app"}
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.backends.base import (
    Backend,
    BackendRef,
    BackendResolveError,
    Destination,
    Endpoint,
    Outcome,
    ProxyRequest,
    ResolveContext,
)
from gateway.plugins import PluginApi

GROUP = "bench.ambient.dev"
KIND = "AsgiApp"
HELLO = "Hello, world!"


async def hello(request: Request) -> Response:
    return PlainTextResponse(HELLO)


async def sse(request: Request) -> Response:
    count = int(request.query_params.get("n", "100"))

    async def events() -> AsyncIterator[bytes]:
        for i in range(count):
            yield b"data: %d\n\n" % i

    return StreamingResponse(events(), media_type="text/event-stream")


app = Starlette(routes=[Route("/hello", hello), Route("/sse", sse)])


@dataclass(slots=True)
class AsgiAppBackend:
    """A backend answered in the gateway by the ASGI app its resource names."""

    destination: Destination
    responder: Any
    reference: str

    def pick(self, request: ProxyRequest, tried: tuple[Endpoint, ...] = ()) -> Endpoint | None:
        return None

    def done(self, endpoint: Endpoint, outcome: Outcome) -> None:
        return None

    def describe(self) -> Mapping[str, Any]:
        return {"kind": KIND, "app": self.reference}


def asgi_app_backend(ref: BackendRef, ctx: ResolveContext) -> Backend:
    """The backend of an AsgiApp resource: ``spec.app`` is ``module:attribute``."""
    raw = ctx.find(GROUP, KIND, ref.namespace, ref.name)
    if raw is None:
        raise BackendResolveError("BackendNotFound", f"{KIND} {ref.namespace}/{ref.name} not found")
    reference = str((raw.get("spec") or {}).get("app", ""))
    module, _, attribute = reference.partition(":")
    try:
        target = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise BackendResolveError(
            "BackendNotFound", f"{KIND} {ref.namespace}/{ref.name}: spec.app {reference!r}: {exc}"
        ) from exc
    destination = Destination(ref.name, ref.namespace, f"{ref.name}.{ref.namespace}.asgi", KIND)
    return AsgiAppBackend(destination, target, reference)


def register(api: PluginApi) -> None:
    """The plugin's entry point (``AMBIENT_PLUGINS=bench.asgi_apps``)."""
    api.backend_kind(GROUP, KIND, asgi_app_backend)


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The same ``/hello`` answer from a bare ASGI app, no framework: what servers cost alone."""
    if scope["type"] != "http":
        return  # no lifespan
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"13")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"Hello, world!"})
