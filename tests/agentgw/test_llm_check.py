"""``ambient check`` on LLMBackend configs, as a user runs it: what a route cannot use is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The Gateway and the route to the LLMBackend ``models`` every config here has.
GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: ambient
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
"""
ROUTE = """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: llm}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{group: agents.ambient.dev, kind: LLMBackend, name: models}]
"""

CONFIG = (
    GATEWAY
    + """apiVersion: agents.ambient.dev/v1alpha1
kind: LLMBackend
metadata: {name: models}
spec:
  providers:
  - name: openai
    type: OpenAI
    url: "https://api.openai.com/v1"
    apiKeySecretRef: {name: nokey, key: key}
  - name: fleet
    type: OpenAI
    backendRef: {group: inference.networking.k8s.io, kind: InferencePool, name: nopool}
  models:
  - {name: gpt-4o-mini, provider: %s}
"""
    + ROUTE
)


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "llm.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_a_missing_secret_or_pool_is_named_in_the_routes_status(tmp_path: Path) -> None:
    result = check(tmp_path, CONFIG % "openai")
    assert result.returncode == 1
    assert "ResolvedRefs=False(BackendNotFound)" in result.stdout
    assert "providers[0]: Secret default/nokey not found" in result.stdout
    # With the Secret there, the pool is what is missing.
    secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: nokey}\nstringData: {key: k}\n"
    result = check(tmp_path, CONFIG % "openai" + secret)
    assert "providers[1].backendRef: InferencePool default/nopool not found" in result.stdout


def test_an_invalid_backend_names_the_file_object_and_field(tmp_path: Path) -> None:
    result = check(tmp_path, CONFIG % "google")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "llm.yaml: LLMBackend default/models" in output
    assert "models[0].provider: 'google' is not a provider" in output


PRICED = (
    GATEWAY
    + """apiVersion: agents.ambient.dev/v1alpha1
kind: LLMBackend
metadata: {name: models}
spec:
  providers: [{name: openai, type: OpenAI, url: "https://api.openai.com/v1"}]
  models: [{name: gpt-4o-mini, provider: openai}]
  pricing: {configMapRef: {name: prices, key: prices.yaml}}
"""
    + ROUTE
)


def test_a_missing_or_invalid_price_table_is_named(tmp_path: Path) -> None:
    result = check(tmp_path, PRICED)
    assert result.returncode == 1
    assert "spec.pricing: ConfigMap default/prices not found" in result.stdout
    table = "gpt-4o-mini: {inputPerMillion: -1, outputPerMillion: 0.6}"
    config_map = (
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: prices}\n"
        f"data:\n  prices.yaml: '{table}'\n"
    )
    result = check(tmp_path, PRICED + config_map)
    assert result.returncode == 1
    assert "key 'prices.yaml': model 'gpt-4o-mini': inputPerMillion:" in result.stdout
    assert "greater than or equal to 0" in result.stdout
