"""The data path on snapshots compiled from Kubernetes YAML by the real config pipeline."""

from __future__ import annotations

from collections import Counter

import httpx

from tests.fixtures.echo_process import gateway_yaml, service_yaml
from tests.fixtures.proxy import holder_from_yaml


async def test_yaml_routes_weights_and_session_persistence(
    echo_factory, gateway_factory, free_port: int
) -> None:
    v1, v2 = await echo_factory("v1"), await echo_factory("v2")
    text = (
        gateway_yaml(free_port)
        + service_yaml("v1", v1.port)
        + service_yaml("v2", v2.port)
        + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /split}}]
      backendRefs: [{name: v1, port: 80, weight: 3}, {name: v2, port: 80, weight: 1}]
    - matches: [{path: {type: PathPrefix, value: /sticky}}]
      sessionPersistence: {sessionName: sid, type: Cookie}
      backendRefs: [{name: v1, port: 80}, {name: v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /missing}}]
      backendRefs: [{name: nope, port: 80}]
"""
    )
    await gateway_factory(holder_from_yaml(text))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as client:
        seen = Counter([(await client.get("/split")).json()["backend"] for _ in range(200)])
        assert abs(seen["v1"] / 200 - 0.75) < 0.1
        assert (await client.get("/missing")).status_code == 500
        assert (await client.get("/elsewhere")).status_code == 404
        first = await client.get("/sticky")
        assert "set-cookie" in first.headers
        assert {(await client.get("/sticky")).json()["backend"] for _ in range(10)} == {
            first.json()["backend"]
        }
