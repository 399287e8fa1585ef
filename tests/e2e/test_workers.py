"""``ambient gateway --workers 2``: processes share the port; the admin API sums their metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.echo_process import EchoProcess, gateway_yaml, route_yaml, service_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port


def test_two_workers_serve_and_metrics_add_up(tmp_path: Path, echo_a: EchoProcess) -> None:
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(
        gateway_yaml(port) + service_yaml("svc-a", echo_a.port) + route_yaml("r", "svc-a")
    )
    gw = GatewayProcess([config], "--workers", "2")
    try:
        gw.wait_ready(timeout=30)
        requests = 60
        for i in range(requests):
            # A new connection each time, so the kernel spreads them over both workers.
            response = httpx.get(f"http://127.0.0.1:{port}/w/{i}", timeout=5)
            assert response.status_code == 200
        text = httpx.get(f"{gw.admin}/metrics", timeout=10).text
        total = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "istio_requests"
            for sample in family.samples
            if sample.name == "istio_requests_total" and sample.labels.get("response_code") == "200"
        )
        assert total == requests
    finally:
        assert gw.stop() == 0, gw.output()
