"""``ambient gateway`` says at start and at every reload which objects are not accepted: one
WARNING per object and parent with the failing condition's reason and message, and a summary."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.e2e.test_check import TYPO
from tests.fixtures.gateway_process import GatewayProcess, free_port

BAD_REGEX = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken-regex}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{path: {type: RegularExpression, value: "/api/(unclosed"}}]
      backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-service}
spec:
  parentRefs: [{name: gw}]
  rules:
    - backendRefs: [{name: missing, port: 80}]
"""


def warnings_of(output: str, marker: str) -> list[str]:
    return [line for line in output.splitlines() if marker in line and "WARNING" in line]


def wait_for_text(gw: GatewayProcess, text: str, count: int = 1, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while gw.output().count(text) < count:
        assert time.monotonic() < deadline, gw.output()
        time.sleep(0.05)
    return gw.output()


def test_invalid_routes_are_logged_at_start_and_at_each_reload(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(TYPO.replace("port: 8080", f"port: {port}") + BAD_REGEX)
    gw = GatewayProcess([config])
    try:
        gw.wait_ready()
        output = wait_for_text(gw, "2 accepted, 3 invalid")
        assert "config version 1 (start): 2 accepted, 3 invalid" in output
        typo = warnings_of(output, "HTTPRoute default/typo")
        assert len(typo) == 1
        assert "Accepted=False InvalidField" in typo[0]
        assert "spec.rules[0].matches[0].pth: unknown field" in typo[0]
        regex = warnings_of(output, "HTTPRoute default/broken-regex")
        assert len(regex) == 1 and "Accepted=False" in regex[0] and "unclosed" in regex[0]
        missing = warnings_of(output, "HTTPRoute default/no-service")
        assert len(missing) == 1 and "ResolvedRefs=False BackendNotFound" in missing[0]
        # A reload (the typo fixed) logs again, with the new counts.
        fixed = config.with_suffix(".tmp")
        fixed.write_text(config.read_text().replace("pth:", "path:"))
        os.replace(fixed, config)
        output = wait_for_text(gw, "3 accepted, 2 invalid")
        assert "config version 2 (file changed): 3 accepted, 2 invalid" in output
        assert len(warnings_of(output, "HTTPRoute default/typo")) == 1
        assert len(warnings_of(output, "HTTPRoute default/broken-regex")) == 2
    finally:
        assert gw.stop() == 0, gw.output()


def test_with_workers_one_of_them_reports(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "routes.yaml"
    config.write_text(TYPO.replace("port: 8080", f"port: {port}") + BAD_REGEX)
    gw = GatewayProcess([config], "--workers", "2")
    try:
        gw.wait_ready()
        wait_for_text(gw, "worker 0 ready")
        output = wait_for_text(gw, "worker 1 ready")  # both compiled: still said once
        assert output.count("2 accepted, 3 invalid") == 1
        assert len(warnings_of(output, "HTTPRoute default/typo")) == 1
    finally:
        assert gw.stop() == 0, gw.output()
