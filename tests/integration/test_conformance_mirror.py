"""Conformance: RequestMirror (one or several mirrors, percent and fraction, response ignored).

The mirror backends' request counters show the copies (research note §1.5.4).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.conformance import backend_of, deploy, not_ready_service_doc, route_doc
from tests.fixtures.echo_process import service_yaml
from tests.fixtures.proxy import start_fixed_server, wait_for


def _mirror_rule(prefix: str, *mirrors: str) -> str:
    filters = "".join(
        f"\n    - type: RequestMirror\n      requestMirror: {mirror}" for mirror in mirrors
    )
    return f"""
- matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
  filters:{filters}
  backendRefs: [{{name: v1, port: 80}}]
"""


ROUTES = route_doc(
    "mirror",
    _mirror_rule("/one", "{backendRef: {name: v2, port: 80}}")
    + _mirror_rule(
        "/two", "{backendRef: {name: v2, port: 80}}", "{backendRef: {name: v3, port: 80}}"
    )
    + _mirror_rule("/percent", "{backendRef: {name: v2, port: 80}, percent: 20}")
    + _mirror_rule(
        "/fraction", "{backendRef: {name: v2, port: 80}, fraction: {numerator: 1, denominator: 4}}"
    )
    + _mirror_rule("/missing", "{backendRef: {name: missing, port: 80}}")
    + _mirror_rule("/unready", "{backendRef: {name: unready, port: 80}}")
    + """
- matches: [{path: {type: PathPrefix, value: /backend-level}}]
  backendRefs:
    - name: v1
      port: 80
      filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: v3, port: 80}}
""",
) + not_ready_service_doc("unready", 1)


@pytest.mark.parametrize(
    ("path", "mirrors"), [("/one", ["v2"]), ("/two", ["v2", "v3"]), ("/backend-level", ["v3"])]
)
async def test_mirror_receives_a_copy(
    echo_factory, gateway_factory, free_port: int, path: str, mirrors: list[str]
) -> None:
    target = f"{path}/x?a=1&b=two"
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.post(target, headers={"X-Test": "mirrored"}, content=b"abc")
        await wait_for(lambda: all(dep.requests_to(m) == 1 for m in mirrors))
        copies = [dep.recent(m)[0] for m in mirrors]
    assert (response.status_code, backend_of(response)) == (200, "v1")
    assert response.json()["path"] == target
    for copy in copies:
        assert (copy["method"], copy["path"], copy["body_length"]) == ("POST", target, 3)
        assert copy["headers"]["x-test"] == "mirrored"


@pytest.mark.parametrize(("path", "share"), [("/percent", 0.20), ("/fraction", 0.25)])
async def test_mirror_percentage(
    echo_factory, gateway_factory, free_port: int, path: str, share: float
) -> None:
    # Mirroring samples at random: the bound is 4.5 standard deviations of the binomial count, so
    # chance alone fails it about once in 150,000 runs (3 over 500 requests failed ~1 in 300).
    total = 1000
    spread = 4.5 * (total * share * (1 - share)) ** 0.5
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:

        async def worker(start: int) -> None:
            for i in range(start, total, 10):
                assert (await dep.client.get(f"{path}?i={i}")).status_code == 200

        await asyncio.gather(*(worker(s) for s in range(10)))
        low, high = total * share - spread, total * share + spread
        await wait_for(lambda: dep.requests_to("v2") >= low)
        assert dep.requests_to("v2") <= high
        assert dep.requests_to("v1") == total


@pytest.mark.parametrize("path", ["/missing", "/unready"])
async def test_unusable_mirror_never_fails_the_request(
    echo_factory, gateway_factory, free_port: int, path: str
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        responses = [await dep.client.get(f"{path}?i={i}") for i in range(3)]
    assert [(r.status_code, backend_of(r)) for r in responses] == [(200, "v1")] * 3


@pytest.mark.parametrize(
    "answer", [None, b"HTTP/1.1 500 Boom\r\ncontent-length: 4\r\nx-mirror: yes\r\n\r\nboom"]
)
async def test_mirror_response_is_ignored(
    echo_factory, gateway_factory, free_port: int, answer: bytes | None
) -> None:
    mirror = await start_fixed_server(answer)  # None: accepts and never answers
    while (port := mirror.sockets[0].getsockname()[1]) == free_port:
        mirror.close()
        mirror = await start_fixed_server(answer)
    routes = route_doc("ignored", _mirror_rule("/", "{backendRef: {name: sink, port: 80}}"))
    try:
        async with deploy(
            echo_factory, gateway_factory, free_port, routes + service_yaml("sink", port)
        ) as dep:
            response = await asyncio.wait_for(dep.client.get("/x"), 3)
    finally:
        mirror.close()
    assert (response.status_code, backend_of(response)) == (200, "v1")
    assert "x-mirror" not in response.headers


@pytest.mark.parametrize(
    ("zero", "granted"),
    [("percent: 0", True), ("fraction: {numerator: 0}", True), ("percent: 100", False)],
)
async def test_mirror_that_must_not_copy(
    echo_factory, gateway_factory, free_port: int, zero: str, granted: bool
) -> None:
    """0 % mirrors nothing; a cross-namespace mirror without a ReferenceGrant is not configured.

    A later request routed straight to the mirror backend bounds the wait for stray copies.
    """
    routes = route_doc(
        "zero",
        _mirror_rule(
            "/zero", f"{{backendRef: {{name: v2, namespace: mirrors, port: 80}}, {zero}}}"
        ),
    ) + route_doc(
        "sync",
        "- matches: [{path: {type: Exact, value: /sync}}]\n  backendRefs: [{name: v2, port: 80}]",
        namespace="mirrors",
    )
    grant = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: mirrors}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: '', kind: Service, name: v2}]
"""
    async with deploy(
        echo_factory,
        gateway_factory,
        free_port,
        routes + (grant if granted else ""),
        backends=("v1",),
        namespaces={"mirrors": ["v2"]},
    ) as dep:
        statuses = [(await dep.client.get(f"/zero?i={i}")).status_code for i in range(20)]
        assert backend_of(await dep.client.get("/sync")) == "v2"
        mirrored = [r["path"] for r in dep.recent("v2")]
    assert statuses == [200] * 20
    assert mirrored == ["/sync"]
