"""Stopping the waypoint lets the requests its tunnels carry finish (within the grace)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.waypoint_mesh import V2_IP, WaypointMesh


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[WaypointMesh]:
    started = WaypointMesh(tmp_path)
    try:
        started.start()
        yield started
    finally:
        started.stop()


def test_sigterm_drains_requests_in_flight_then_exits(mesh: WaypointMesh) -> None:
    waypoint = next(p for p in mesh.procs if p.name == "waypoint")
    results: list[httpx.Response] = []
    sent = threading.Event()

    def slow_request() -> None:
        with httpx.Client(timeout=15) as client:
            client.get(f"{mesh.url}/warm", headers={"x-version": "v2"})
            sent.set()
            results.append(
                client.get(f"{mesh.url}/slow?delay_ms=1500", headers={"x-version": "v2"})
            )

    thread = threading.Thread(target=slow_request)
    thread.start()
    assert sent.wait(10)
    assert _wait_for_request(mesh), "the slow request never reached the server"
    waypoint.proc.send_signal(signal.SIGTERM)
    thread.join(20)
    assert results and results[0].status_code == 200
    assert results[0].json()["path"] == "/slow?delay_ms=1500"
    assert waypoint.proc.wait(timeout=20) == 0


def _wait_for_request(mesh: WaypointMesh) -> bool:
    """Whether the slow request reached the server (so it is in flight at the waypoint)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = httpx.get(f"http://{V2_IP}:{mesh.echo_port}/stats", timeout=5).json()
        if any(r["path"].startswith("/slow") for r in stats["recent"]):
            return True
        time.sleep(0.05)
    return False
