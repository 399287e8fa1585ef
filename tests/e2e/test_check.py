"""``ambient check``: validation and route status, as a user runs it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The checkout's agentgw plugin even when the installed entry points predate it (an editable
# install made before it was added); a plugin named twice is loaded once.


def ambient(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


# Examples that add to another one (checked together, as their comments say to run them).
COMPANIONS = {"rewrite.yaml": ("pool.yaml",), "rollout.yaml": ("pool.yaml", "rewrite.yaml")}


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_bundled_examples_are_valid(example: Path) -> None:
    files = [ROOT / "examples" / name for name in COMPANIONS.get(example.name, ())] + [example]
    result = ambient("check", *(arg for path in files for arg in ("-f", str(path))))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Accepted" in result.stdout


def test_demo_config_is_valid() -> None:
    result = ambient("check", "-f", str(ROOT / "gateway" / "demo" / "demo.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "echo" in result.stdout


def test_route_with_invalid_regex_is_reported_not_accepted(tmp_path: Path) -> None:
    config = tmp_path / "routes.yaml"
    config.write_text("""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: ambient
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken-regex}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{path: {type: RegularExpression, value: "/api/(unclosed"}}]
      backendRefs: [{name: svc, port: 80}]
""")
    result = ambient("check", "-f", str(config))
    assert result.returncode == 1
    line = next(
        ln for ln in result.stdout.splitlines() if "broken-regex" in ln and "Accepted" in ln
    )
    assert "False" in line


def test_invalid_field_names_file_object_and_path(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: typo, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  rules:
    - backendRefs: [{name: svc, port: "eighty"}]
""")
    result = ambient("check", "-f", str(config))
    assert result.returncode == 1
    assert "bad.yaml" in result.stderr
    assert "HTTPRoute shop/typo" in result.stderr
    assert "spec.rules[0].backendRefs[0].port" in result.stderr


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "syntax.yaml"
    config.write_text("kind: Gateway\nmetadata: {name: gw\n")
    result = ambient("check", "-f", str(config))
    assert result.returncode == 1
    assert re.search(r"syntax\.yaml:\d+:\d+: invalid YAML", result.stderr), result.stderr


def test_gateway_refuses_to_start_on_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "kind: HTTPRoute\napiVersion: gateway.networking.k8s.io/v1\n"
        "metadata: {name: r}\nspec: {rules: 7}\n"
    )
    result = ambient("gateway", "-f", str(config), "--admin", "off")
    assert result.returncode == 1
    assert "bad.yaml" in result.stderr and "HTTPRoute default/r" in result.stderr


TYPO = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: ambient
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: svc}
spec: {ports: [{port: 80, targetPort: 9}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: typo}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{pth: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: fine}
spec:
  parentRefs: [{name: gw}]
  rules:
    - backendRefs: [{name: svc, port: 80}]
"""


def test_an_unknown_field_is_an_error_naming_file_object_and_path(tmp_path: Path) -> None:
    config = tmp_path / "typo.yaml"
    config.write_text(TYPO)
    result = ambient("check", "-f", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    typo = next(ln for ln in result.stdout.splitlines() if ln.startswith("HTTPRoute default/typo"))
    assert "Accepted=False(InvalidField)" in typo
    assert f"{config}: HTTPRoute default/typo: spec.rules[0].matches[0].pth: unknown field" in typo
    assert "(not applied)" in typo
    fine = next(ln for ln in result.stdout.splitlines() if ln.startswith("HTTPRoute default/fine"))
    assert "Accepted=True" in fine


def test_a_repeated_field_is_an_error_too(tmp_path: Path) -> None:
    config = tmp_path / "twice.yaml"
    config.write_text(
        TYPO.replace("pth: {type: PathPrefix, value: /api}", "path: {value: /a}, path: {value: /b}")
    )
    result = ambient("check", "-f", str(config))
    assert result.returncode == 1
    assert "spec.rules[0].matches[0].path: duplicate field" in result.stdout
