"""The admin API served by uvicorn on loopback: readiness, metrics, config dump, route status."""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.admin import AdminServer, create_admin_app, serve_admin
from gateway.observability.metrics import IstioMetrics, render_states
from gateway.observability.telemetry import GatewayTelemetry
from gateway.observability.tracing import Tracer
from gateway.snapshot import (
    Condition,
    ListenerInfo,
    ParentStatus,
    RouteStatus,
    Snapshot,
    SnapshotHolder,
)
from tests.fixtures.records import StaticBackend, make_head, make_record


def snapshot(version: int = 3) -> Snapshot:
    """A hand-built snapshot: one valid route and one with an unresolved backend."""
    good = RouteStatus(
        "HTTPRoute", "default", "echo",
        (ParentStatus("default/gw", (
            Condition("Accepted", "True", "Accepted"),
            Condition("ResolvedRefs", "True", "ResolvedRefs"),
        )),),
    )  # fmt: skip
    bad = RouteStatus(
        "HTTPRoute", "apps", "broken",
        (ParentStatus("default/gw/http", (
            Condition("Accepted", "True", "Accepted"),
            Condition("ResolvedRefs", "False", "BackendNotFound", "service apps/nope not found"),
            Condition("PartiallyInvalid", "True", "UnsupportedValue", "rule 1 dropped"),
        )),),
    )  # fmt: skip
    return Snapshot(
        version=version,
        listeners=(ListenerInfo("default", "gw", "http", 8080, "HTTP", None),),
        routers={},
        statuses=(good, bad),
        dump={"listeners": [{"port": 8080}], "routes": ["default/echo", "apps/broken"]},
    )


@dataclass
class Admin:
    """A running admin server and a client for it."""

    server: AdminServer
    client: httpx.AsyncClient


StartAdmin = Callable[..., Awaitable[Admin]]


@pytest.fixture
async def start_admin() -> AsyncIterator[StartAdmin]:
    """Start admin servers on free loopback ports; all are closed at the end of the test."""
    running: list[Admin] = []

    async def start(
        metrics_source: Callable[[], bytes] = lambda: b"",
        ready: Callable[[], bool] = lambda: True,
        holder: SnapshotHolder | None = None,
    ) -> Admin:
        app = create_admin_app(holder or SnapshotHolder(snapshot()), metrics_source, ready)
        server = await serve_admin(app, "127.0.0.1", 0)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10)
        admin = Admin(server, client)
        running.append(admin)
        return admin

    yield start
    for admin in running:
        await admin.client.aclose()
        await admin.server.close()


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Metric families by name, as (sample name, labels, value) triples."""
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


async def test_metrics_are_scraped_over_http_and_parse(start_admin: StartAdmin) -> None:
    telemetry = GatewayTelemetry(IstioMetrics(), Tracer(None))
    echo = StaticBackend("echo", "default")
    for status, ms in ((200, 3.0), (200, 30.0), (503, 0.3)):
        head = make_head()
        telemetry.finish(telemetry.start(head), make_record(head, status=status, duration_ms=ms,
                                                            backend=echo))  # fmt: skip
    admin = await start_admin(metrics_source=telemetry.metrics.render)

    for path in ("/metrics", "/stats/prometheus"):
        response = await admin.client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = parse(response.text)
        totals = {
            labels["response_code"]: value
            for name, labels, value in families["istio_requests"]
            if name == "istio_requests_total"
        }
        assert totals == {"200": 2, "503": 1}
        ok = {"response_code": "200", "reporter": "waypoint", "destination_service_name": "echo"}
        duration = [
            (name, labels, value)
            for name, labels, value in families["istio_request_duration_milliseconds"]
            if ok.items() <= labels.items()
        ]
        buckets = {labels["le"]: v for n, labels, v in duration if n.endswith("_bucket")}
        assert buckets["1.0"] == 0
        assert buckets["5.0"] == 1
        assert buckets["50.0"] == 2
        assert buckets["+Inf"] == 2
        count = next(v for n, _, v in duration if n.endswith("_count"))
        total = next(v for n, _, v in duration if n.endswith("_sum"))
        assert (count, total) == (2, pytest.approx(33.0))


async def test_merged_worker_states_add_up_when_scraped(start_admin: StartAdmin) -> None:
    workers = [IstioMetrics(), IstioMetrics()]
    for worker, n in zip(workers, (4, 6), strict=True):
        for _ in range(n):
            worker.observe(make_record(backend=StaticBackend(), response_bytes=2048))
    admin = await start_admin(
        metrics_source=lambda: render_states([w.export_state() for w in workers])
    )

    families = parse((await admin.client.get("/metrics")).text)
    (total,) = [v for n, _, v in families["istio_requests"] if n == "istio_requests_total"]
    assert total == 10
    response_bytes = {
        labels.get("le", name): v for name, labels, v in families["istio_response_bytes"]
    }
    assert response_bytes["1000.0"] == 0
    assert response_bytes["10000.0"] == 10
    assert response_bytes["istio_response_bytes_sum"] == 20480


async def test_ready_is_503_until_ready(start_admin: StartAdmin) -> None:
    state = {"ready": False}
    admin = await start_admin(ready=lambda: state["ready"])

    before = await admin.client.get("/healthz/ready")
    assert before.status_code == 503
    state["ready"] = True
    after = await admin.client.get("/healthz/ready")
    assert (after.status_code, after.text.strip()) == (200, "ready")


async def test_routes_show_each_parents_conditions(start_admin: StartAdmin) -> None:
    admin = await start_admin()
    response = await admin.client.get("/routes")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["version"] == 3
    routes = {f"{r['namespace']}/{r['name']}": r for r in body["routes"]}
    assert routes["default/echo"]["valid"] is True
    broken = routes["apps/broken"]
    assert broken["kind"] == "HTTPRoute"
    assert broken["valid"] is False
    (parent,) = broken["parents"]
    assert parent["parent"] == "default/gw/http"
    conditions = {c["type"]: c for c in parent["conditions"]}
    assert conditions["ResolvedRefs"] == {
        "type": "ResolvedRefs",
        "status": "False",
        "reason": "BackendNotFound",
        "message": "service apps/nope not found",
    }
    assert conditions["PartiallyInvalid"]["status"] == "True"


async def test_config_dump_follows_the_current_snapshot(start_admin: StartAdmin) -> None:
    holder = SnapshotHolder(snapshot(version=3))
    admin = await start_admin(holder=holder)

    first = (await admin.client.get("/config_dump")).json()
    assert first == {
        "version": 3,
        "config": {"listeners": [{"port": 8080}], "routes": ["default/echo", "apps/broken"]},
    }
    holder.current = snapshot(version=4)
    assert (await admin.client.get("/config_dump")).json()["version"] == 4


async def test_unknown_path_is_a_json_404(start_admin: StartAdmin) -> None:
    admin = await start_admin()
    response = await admin.client.get("/nope")
    assert response.status_code == 404
    assert response.json()["path"] == "/nope"
    assert "/metrics" in response.json()["endpoints"]


async def test_serving_leaves_signal_handlers_alone_and_close_frees_the_port() -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    app = create_admin_app(SnapshotHolder(snapshot()), lambda: b"", lambda: True)
    server = await serve_admin(app, "127.0.0.1", 0)
    port = server.port
    with pytest.raises(OSError):
        await serve_admin(app, "127.0.0.1", port)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    await server.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
