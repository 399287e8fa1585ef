"""BackendTLSPolicy as a user meets it: ``ambient check``, the admin API, the access log and the
connect-failure metric summed over ``--workers``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.backend_tls import config_map_yaml, policy_yaml
from tests.fixtures.certs import authority
from tests.fixtures.echo_process import EchoProcess, gateway_yaml, route_yaml, service_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port


def write_config(path: Path, port: int, echo_port: int) -> None:
    """Route / to Service svc-a (a cleartext echo) whose policy asks for TLS; Service svc-b's
    policy names a ConfigMap that does not exist."""
    path.write_text(
        gateway_yaml(port)
        + service_yaml("svc-a", echo_port)
        + service_yaml("svc-b", echo_port)
        + route_yaml("r", "svc-a")
        + route_yaml("r-b", "svc-b", "/b")
        + config_map_yaml("ca", authority().pem)
        + policy_yaml("svc-a-tls", "svc-a", "svc-a.test")
        + policy_yaml("svc-b-tls", "svc-b", "svc-b.test", ca="missing")
    )


def test_check_prints_policy_status_and_fails_on_an_invalid_policy(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    write_config(config, 8080, 9000)
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    good = next(line for line in lines if line.startswith("BackendTLSPolicy default/svc-a-tls"))
    assert "default/gw" in good
    assert "Accepted=True(Accepted)" in good and "ResolvedRefs=True(ResolvedRefs)" in good
    bad = next(line for line in lines if line.startswith("BackendTLSPolicy default/svc-b-tls"))
    assert "Accepted=False(NoValidCACertificate)" in bad
    assert "ResolvedRefs=False(InvalidCACertificateRef)" in bad
    route = next(line for line in lines if line.startswith("HTTPRoute default/r-b"))
    assert "ResolvedRefs=False(InvalidBackendTLS)" in route


def test_workers_report_tls_failures_in_log_metrics_and_admin(
    tmp_path: Path, echo_a: EchoProcess
) -> None:
    port = free_port()
    config = tmp_path / "routes.yaml"
    write_config(config, port, echo_a.port)
    gw = GatewayProcess([config], "--workers", "2", "--access-log")
    try:
        gw.wait_ready(timeout=30)
        requests = 20
        for i in range(requests):
            # A new connection each time, so the kernel spreads them over both workers.
            response = httpx.get(f"http://127.0.0.1:{port}/t/{i}", timeout=5)
            assert response.status_code == 503
            assert "(SNI svc-a.test): handshake failed" in response.text
        invalid = httpx.get(f"http://127.0.0.1:{port}/b", timeout=5)
        assert invalid.status_code == 500

        text = httpx.get(f"{gw.admin}/metrics", timeout=10).text
        failures = {
            (s.labels["destination_service_name"], s.labels["reason"]): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "ambient_gateway_upstream_connect_failures"
            for s in family.samples
            if s.name.endswith("_total")
        }
        assert failures == {("svc-a", "tls_handshake"): requests}

        routes = httpx.get(f"{gw.admin}/routes", timeout=5).json()["routes"]
        policies = {r["name"]: r for r in routes if r["kind"] == "BackendTLSPolicy"}
        assert policies["svc-a-tls"]["valid"] and not policies["svc-b-tls"]["valid"]
        conditions = policies["svc-b-tls"]["parents"][0]["conditions"]
        assert {c["type"]: c["reason"] for c in conditions} == {
            "Accepted": "NoValidCACertificate",
            "ResolvedRefs": "InvalidCACertificateRef",
        }
        dump = httpx.get(f"{gw.admin}/config_dump", timeout=5).json()["config"]
        assert {p["name"] for p in dump["backendTLSPolicies"]} == {"svc-a-tls", "svc-b-tls"}
    finally:
        assert gw.stop() == 0, gw.output()
    entries = [json.loads(line) for line in gw.output().splitlines() if line.startswith("{")]
    reasons = [e.get("upstream_failure") for e in entries if "request_id" in e]
    assert reasons.count("tls_handshake") == requests
    assert reasons.count(None) == 1  # the 500: no dial at all
