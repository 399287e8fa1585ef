"""Conformance: ``timeouts.request`` / ``backendRequest`` (504) and ``retry`` codes and attempts.

The echo delays with ``?delay_ms=`` and fails the first N tries of a request with
``?fail=N&fail_code=C`` (``fail_mode=reset`` / ``slow``); research note §1.7, §1.8.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.conformance import backend_of, deploy, route_doc


def _rule(prefix: str, extra: str) -> str:
    return f"""
- matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
  backendRefs: [{{name: v1, port: 80}}]
  {extra}
"""


TIMEOUT_ROUTES = route_doc(
    "timeouts",
    _rule("/request", "timeouts: {request: 500ms}")
    + _rule("/disabled", "timeouts: {request: 0s}")
    + _rule("/backend", "timeouts: {backendRequest: 200ms}")
    + _rule("/none", ""),
)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/request?delay_ms=10", 200),
        ("/request?delay_ms=1500", 504),
        ("/disabled?delay_ms=700", 200),
        ("/backend?delay_ms=10", 200),
        ("/backend?delay_ms=800", 504),
        ("/none?delay_ms=700", 200),  # no timeout unless configured
    ],
)
async def test_timeouts(
    echo_factory, gateway_factory, free_port: int, path: str, status: int
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, TIMEOUT_ROUTES) as dep:
        response = await dep.client.get(path)
    assert response.status_code == status
    if status == 200:
        assert (backend_of(response), response.json()["path"]) == ("v1", path)


RETRY_ROUTES = route_doc(
    "retry",
    _rule("/codes-500", "retry: {codes: [500], attempts: 3}")
    + _rule("/codes-5xx", "retry: {codes: [500, 502, 503, 504], attempts: 2}")
    + _rule(
        "/backend-timeout",
        "retry: {codes: [504], attempts: 2}\n  timeouts: {backendRequest: 200ms}",
    )
    + _rule(
        "/request-timeout",
        "retry: {codes: [504], attempts: 5}\n  timeouts: {request: 450ms, backendRequest: 200ms}",
    )
    + _rule("/reset", "retry: {attempts: 3}"),
)


@pytest.mark.parametrize(
    ("path", "statuses", "tries"),
    [
        ("/codes-500?fail=2&fail_code=500", {200}, 3),
        ("/codes-500?fail=4&fail_code=500", {500}, 4),
        ("/codes-500?fail=2&fail_code=503", {503}, 1),  # not a listed code: not retried
        ("/codes-5xx?fail=1&fail_code=500", {200}, 2),
        ("/codes-5xx?fail=1&fail_code=502", {200}, 2),
        ("/codes-5xx?fail=1&fail_code=503", {200}, 2),
        ("/codes-5xx?fail=1&fail_code=504", {200}, 2),
        ("/codes-5xx?fail=3&fail_code=502", {502}, 3),
        ("/codes-5xx?fail=3&fail_code=503", {503}, 3),
        ("/codes-5xx?fail=3&fail_code=504", {504}, 3),
        ("/backend-timeout?fail=2&fail_mode=slow&slow_ms=300", {200}, 3),
        ("/backend-timeout?fail=3&fail_mode=slow&slow_ms=300", {504}, 3),
        ("/request-timeout?fail=1&fail_mode=slow&slow_ms=300", {200}, 2),
        ("/request-timeout?fail=4&fail_mode=slow&slow_ms=300", {504}, None),
        ("/reset?fail=2&fail_mode=reset", {200}, 3),
        ("/reset?fail=4&fail_mode=reset", {500, 502, 503}, 4),
    ],
)
async def test_retry(
    echo_factory, gateway_factory, free_port: int, path: str, statuses: set[int], tries
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, RETRY_ROUTES) as dep:
        response = await dep.client.get(path, headers={"X-Request-Id": f"retry-{path}"})
        if tries is not None:
            assert dep.requests_to("v1") == tries
    assert response.status_code in statuses
    if response.status_code == 200:
        assert response.json()["path"] == path


async def test_retry_waits_for_the_backoff(echo_factory, gateway_factory, free_port: int) -> None:

    routes = route_doc("backoff", _rule("/", "retry: {codes: [500], attempts: 1, backoff: 300ms}"))
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        started = time.monotonic()
        response = await dep.client.get("/b?fail=1&fail_code=500", headers={"X-Request-Id": "b"})
        elapsed = time.monotonic() - started
    assert (response.status_code, dep.requests_to("v1")) == (200, 2)
    assert elapsed >= 0.3


PAIR = """
---
apiVersion: v1
kind: Service
metadata: {{name: pair, namespace: default}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: pair-1, namespace: default, labels: {{kubernetes.io/service-name: pair}}}}
addressType: IPv4
ports: [{{name: http, port: {v1}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: pair-2, namespace: default, labels: {{kubernetes.io/service-name: pair}}}}
addressType: IPv4
ports: [{{name: http, port: {v2}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""


@pytest.mark.parametrize("mode", ["fail_code=503", "fail_mode=reset"])
async def test_retry_goes_to_the_other_endpoint(
    echo_factory, gateway_factory, free_port: int, mode: str
) -> None:
    routes = route_doc(
        "pair",
        "- backendRefs: [{name: pair, port: 80}]\n  retry: {codes: [503], attempts: 1}",
    )
    async with deploy(
        echo_factory,
        gateway_factory,
        free_port,
        lambda ports: routes + PAIR.format(**ports),
        backends=("v1", "v2"),
    ) as dep:
        # One failure ledger for both: each request fails once in total, on whichever it hits first.
        dep.backends["v2"].stats.failures = dep.backends["v1"].stats.failures
        for i in range(4):
            response = await dep.client.get(f"/p?fail=1&{mode}", headers={"X-Request-Id": f"p{i}"})
            assert response.status_code == 200
        tries = (dep.requests_to("v1"), dep.requests_to("v2"))
    # Each request failed once on one endpoint and succeeded on the other.
    assert tries == (4, 4)
