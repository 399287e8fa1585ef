"""The request path's seams in a real ``ambient gateway`` process, with a plugin loaded the way a
user loads one that is not an installed distribution (``AMBIENT_PLUGINS``), and its body cap set
on the command line."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.echo_process import EchoProcess, gateway_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.request_path_plugin import GROUP


@pytest.fixture
def gateway(tmp_path: Path, echo_a: EchoProcess, echo_b: EchoProcess) -> Iterator[tuple[int, str]]:
    port = free_port()
    config = tmp_path / "models.yaml"
    config.write_text(
        gateway_yaml(port)
        + f"""
---
apiVersion: {GROUP}/v1alpha1
kind: ModelPicker
metadata: {{name: models, namespace: default}}
spec:
  endpoints:
    - {{model: a, address: 127.0.0.1, port: {echo_a.port}}}
    - {{model: b, address: 127.0.0.1, port: {echo_b.port}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{group: {GROUP}, kind: ModelPicker, name: models}}]}}]
"""
    )
    env = {**os.environ, "AMBIENT_PLUGINS": "tests.fixtures.request_path_plugin"}
    process = GatewayProcess([config], "--max-request-body", "1Ki", env=env)
    try:
        process.wait_ready()
        yield port, process.admin
    finally:
        process.stop()


def test_a_plugin_backend_reads_the_body_under_the_command_line_cap(
    gateway: tuple[int, str], echo_b: EchoProcess
) -> None:
    port, admin = gateway
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        chosen = client.post("/v1/chat/completions", json={"model": "b"})
        too_big = client.post("/v1/chat/completions", json={"model": "b", "pad": "x" * 2000})
    assert chosen.status_code == 200 and chosen.headers["x-echo-backend"] == "backend-b"
    assert too_big.status_code == 413 and "1024 bytes (1 KiB)" in too_big.text
    dump = httpx.get(f"{admin}/config_dump", timeout=5).json()
    backend = dump["config"]["routes"][0]["rules"][0]["backends"][0]["backend"]
    assert backend == {"kind": "ModelPicker", "models": ["a", "b"]}
