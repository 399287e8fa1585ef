"""A route rule whose weights a plugin overrides (gateway.route_weights): the split moves at
once for an httpx client, and each answer of a Service backendRef is a RouteAnswer for the
observers; a rule without an override is neither moved nor sampled."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from gateway.route_weights import ROUTE_WEIGHTS, RouteAnswer
from tests.fixtures.proxy import holder_from_yaml, wait_for

RULE = ("default/llm-route", "versions")


def service(name: str, port: int) -> str:
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{name: http, port: {port}}}]
"""


def config(port: int, v1: int, v2: int) -> str:
    return (
        f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm-route, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - name: versions
    backendRefs: [{{name: v1, port: 80, weight: 1}}, {{name: v2, port: 80, weight: 0}}]
"""
        + service("v1", v1)
        + service("v2", v2)
    )


@pytest.fixture
def answers() -> Iterator[list[RouteAnswer]]:
    got: list[RouteAnswer] = []
    ROUTE_WEIGHTS.observers.append(got.append)
    yield got
    ROUTE_WEIGHTS.observers.remove(got.append)
    ROUTE_WEIGHTS.set(*RULE, None)


async def test_an_override_moves_the_split_and_samples_each_service_answer(
    echo_factory, gateway_factory, free_port: int, answers: list[RouteAnswer]
) -> None:
    v1, v2 = await echo_factory("v1"), await echo_factory("v2")
    await gateway_factory(holder_from_yaml(config(free_port, v1.port, v2.port)))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as c:

        async def served(n: int) -> Counter[str]:
            return Counter([(await c.get("/x")).json()["backend"] for _ in range(n)])

        assert await served(4) == {"v1": 4} and answers == []
        ROUTE_WEIGHTS.set(*RULE, {"v1": 1, "v2": 3})
        assert await served(8) == {"v1": 2, "v2": 6}
        await wait_for(lambda: len(answers) == 8)
        ROUTE_WEIGHTS.set(*RULE, None)
        assert await served(4) == {"v1": 4}
    assert len(answers) == 8
    assert Counter(a.backend_ref for a in answers) == {"v1": 2, "v2": 6}
    assert {(a.route, a.rule, a.status) for a in answers} == {(*RULE, 200)}
    assert all(a.first_byte is not None and 0 < a.first_byte <= a.duration for a in answers)
