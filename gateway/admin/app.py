"""The admin Starlette app: readiness, Prometheus text, config dump, status, plugin routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from gateway.plugins import (
    ADMIN_PREFIX,
    UI_PREFIX,
    AdminView,
    admin_routes,
    admin_views,
    loaded_plugins,
    local_views,
    plugin_provides,
    ui_pages,
)
from gateway.snapshot import RouteStatus, SnapshotHolder

ENDPOINTS = (
    "/healthz/ready",
    "/metrics",
    "/stats/prometheus",
    "/config_dump",
    "/routes",
    ADMIN_PREFIX,
)


class JSONResponse(Response):
    """JSON through orjson; values it cannot encode (enums, objects) are written as strings."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Encode ``content`` with two-space indentation for people reading it in a terminal."""
        return orjson.dumps(
            content, default=_fallback, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        )


def _fallback(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


def route_status_json(status: RouteStatus) -> dict[str, Any]:
    """One route's status as ``/routes`` and ``ambient check`` show it."""
    return {
        "kind": status.kind,
        "namespace": status.namespace,
        "name": status.name,
        "valid": status.valid,
        "parents": [
            {
                "parent": parent.parent,
                "conditions": [
                    {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                    for c in parent.conditions
                ],
            }
            for parent in status.parents
        ],
    }


def _view_route(view: AdminView, gather: Callable[[str], list[Any]]) -> Route:
    async def endpoint(request: Request) -> Response:
        return JSONResponse(view.merge(gather(view.path)))

    return Route(ADMIN_PREFIX + view.path, endpoint, methods=["GET"])


def create_admin_app(
    holder: SnapshotHolder,
    metrics_source: Callable[[], bytes],
    ready: Callable[[], bool],
    gather_views: Callable[[str], list[Any]] = local_views,
) -> Starlette:
    """The admin API over the live snapshot holder, a metrics renderer and a readiness check.

    Plugin admin routes are served under ``/plugins``, plugin pages under ``/ui``; an endpoint
    finds the live snapshot at ``request.app.state.snapshot_holder.current``. A plugin admin view
    answers what ``gather_views(path)`` collects from the serving processes (this one by default).
    """
    extra = [
        Route(ADMIN_PREFIX + r.path, r.endpoint, methods=list(r.methods)) for r in admin_routes()
    ]
    extra += [_view_route(view, gather_views) for view in admin_views()]
    extra += [Route(UI_PREFIX + page.path, page.endpoint, methods=["GET"]) for page in ui_pages()]
    endpoints = [*ENDPOINTS, *(route.path for route in extra)]

    async def healthz_ready(request: Request) -> Response:
        if ready():
            return PlainTextResponse("ready\n")
        return PlainTextResponse("not ready\n", status_code=503)

    async def metrics(request: Request) -> Response:
        # Rendered in the event loop on purpose: the store is mutated by the same loop, so a
        # scrape sees a consistent state without locks.
        return Response(metrics_source(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    async def config_dump(request: Request) -> Response:
        snapshot = holder.current
        return JSONResponse({"version": snapshot.version, "config": snapshot.dump})

    async def routes(request: Request) -> Response:
        snapshot = holder.current
        return JSONResponse(
            {
                "version": snapshot.version,
                "routes": [route_status_json(s) for s in snapshot.statuses],
            }
        )

    async def plugins(request: Request) -> Response:
        return JSONResponse(
            {
                "plugins": [
                    {
                        "name": spec.name,
                        "reference": spec.reference,
                        "source": spec.source,
                        "provides": plugin_provides(spec.name),
                    }
                    for spec in loaded_plugins()
                ]
            }
        )

    async def index(request: Request) -> Response:
        return JSONResponse({"endpoints": endpoints})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return JSONResponse(
            {"error": detail, "path": request.url.path, "endpoints": endpoints},
            status_code=status,
        )

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/healthz/ready", healthz_ready),
            Route("/metrics", metrics),
            Route("/stats/prometheus", metrics),
            Route("/config_dump", config_dump),
            Route("/routes", routes),
            Route(ADMIN_PREFIX, plugins),
            *extra,
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.snapshot_holder = holder
    return app
