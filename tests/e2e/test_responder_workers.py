"""``ambient gateway --workers 2`` with an in-gateway responder: each worker runs the app's
lifespan itself and serves the app with the state its own startup made."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.responders import responder_config

ROOT = Path(__file__).resolve().parents[2]


def test_each_worker_starts_the_app_and_serves_it_with_its_own_state(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(responder_config(port, {"/": "whoami"}))
    plugin = "tests.fixtures.responders:register_whoami"
    gw = GatewayProcess(
        [config], "--workers", "2", env={"AMBIENT_PLUGINS": plugin, "PYTHONPATH": str(ROOT)}
    )
    try:
        gw.wait_ready(timeout=30)
        served = []
        for _ in range(40):  # new connections spread over the workers (SO_REUSEPORT)
            response = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
            assert response.status_code == 200, response.text
            served.append(response.json())
        # A worker without its own startup would answer 503; one serving another's state
        # would show another pid.
        assert all(s["pid"] == s["lifespan_pid"] for s in served), served
        assert len({s["pid"] for s in served}) == 2
    finally:
        assert gw.stop() == 0, gw.output()
