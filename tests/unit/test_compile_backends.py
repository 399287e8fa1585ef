"""Service backends, weights, mirrors, load-balancing policy, session persistence, timeouts, retry,
and ExtensionRef filters, compiled from YAML."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from gateway.backends.base import BackendRef, Endpoint, ResolveContext
from gateway.backends.service import ServiceBackend, resolve_service
from gateway.filters.extension import ExtensionFilters, ExtensionRef, register_filter_kind
from gateway.request import DirectResponse, RequestHead
from gateway.snapshot import CompiledRule
from tests.fixtures.route_config import (
    Finished,
    PickRequest,
    compile_yaml,
    condition,
    head,
    match,
    route_yaml,
)

SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: shop, annotations: {{{annotations}}}}}
spec:
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: grpc, port: 90, targetPort: 9090, appProtocol: kubernetes.io/h2c}}
  - {{port: 100, targetPort: 10000}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: shop-a, labels: {{kubernetes.io/service-name: shop}}}}
addressType: IPv4
endpoints:
- addresses: [10.1.0.1]
  conditions: {{ready: true}}
- addresses: [10.1.0.2]
  conditions: {{ready: false}}
- addresses: [10.1.0.3]
ports: [{{name: http, port: 18080}}, {{name: grpc, port: 19090}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: shop-b, labels: {{kubernetes.io/service-name: shop}}}}
addressType: IPv4
endpoints: [{{addresses: [10.1.0.4]}}]
ports: [{{name: http, port: 28080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: other, labels: {{kubernetes.io/service-name: not-shop}}}}
addressType: IPv4
endpoints: [{{addresses: [10.9.9.9]}}]
ports: [{{name: http, port: 1}}]
"""


def rule_for(rules: str, *extra: str, annotations: str = "") -> CompiledRule:
    snapshot = compile_yaml(route_yaml("r", rules), SERVICE.format(annotations=annotations), *extra)
    rule = match(snapshot, head("/"))
    assert rule is not None
    return rule


def service_backend(rule: CompiledRule, index: int = 0) -> ServiceBackend:
    backend = rule.choices[index].backend
    assert isinstance(backend, ServiceBackend)
    return backend


def test_service_port_maps_to_slice_port_of_the_same_name_and_ready_endpoints() -> None:
    backend = service_backend(rule_for("- backendRefs: [{name: shop, port: 80}]"))
    assert backend.endpoints == (
        Endpoint("10.1.0.1", 18080),
        Endpoint("10.1.0.3", 18080),
        Endpoint("10.1.0.4", 28080),
    )
    assert backend.destination.host == "shop.default.svc.cluster.local"
    assert backend.destination.service_name == "shop"


def test_h2c_app_protocol_and_unnamed_port_uses_target_port() -> None:
    grpc = service_backend(rule_for("- backendRefs: [{name: shop, port: 90}]"))
    assert {e.protocol for e in grpc.endpoints} == {"h2c"}
    assert {e.port for e in grpc.endpoints} == {19090}
    unnamed = service_backend(rule_for("- backendRefs: [{name: shop, port: 100}]"))
    assert {e.port for e in unnamed.endpoints} == {10000}
    assert {e.protocol for e in unnamed.endpoints} == {"http/1.1"}


def test_service_without_ready_endpoints_is_valid_and_picks_none() -> None:
    snapshot = compile_yaml(
        route_yaml("r", "- backendRefs: [{name: idle, port: 80}]"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: idle}\nspec: {ports: [{port: 80}]}",
    )
    assert condition(snapshot, "r", "ResolvedRefs")[:2] == ("True", "ResolvedRefs")
    rule = match(snapshot, head("/"))
    assert rule is not None
    backend = rule.choices[0].backend
    assert backend is not None and backend.pick(PickRequest(head("/"))) is None


def test_pick_and_release_use_the_balancer() -> None:
    backend = service_backend(rule_for("- backendRefs: [{name: shop, port: 80}]"))
    picked = {backend.pick(PickRequest(head("/"))) for _ in range(60)}
    assert picked <= set(backend.endpoints) and len(picked) >= 2
    endpoint = backend.pick(PickRequest(head("/")))
    assert endpoint is not None
    backend.done(endpoint, Finished())


@pytest.mark.parametrize(
    ("annotations", "kind", "hash_on"),
    [
        ("", "LeastRequest", None),
        ("gateway.ambient.dev/load-balancer: round-robin", "RoundRobin", None),
        ("gateway.ambient.dev/load-balancer: random", "Random", None),
        ("gateway.ambient.dev/load-balancer: consistent-hash", "ConsistentHash", "source-ip"),
        ("gateway.ambient.dev/hash-on: 'header:x-user'", "ConsistentHash", "header:x-user"),
        (
            "gateway.ambient.dev/load-balancer: consistent-hash, "
            "gateway.ambient.dev/hash-on: 'cookie:sid'",
            "ConsistentHash",
            "cookie:sid",
        ),
    ],
)
def test_load_balancer_annotations(annotations: str, kind: str, hash_on: str | None) -> None:
    backend = service_backend(
        rule_for("- backendRefs: [{name: shop, port: 80}]", annotations=annotations)
    )
    assert (backend.policy.kind, backend.policy.hash_on) == (kind, hash_on)


def test_round_robin_spreads_over_every_endpoint() -> None:
    backend = service_backend(
        rule_for(
            "- backendRefs: [{name: shop, port: 80}]",
            annotations="gateway.ambient.dev/load-balancer: round-robin",
        )
    )
    picks = Counter(backend.pick(PickRequest(head("/"))) for _ in range(30))
    assert set(picks) == set(backend.endpoints) and set(picks.values()) == {10}


def test_session_persistence_cookie_sets_affinity_and_hashes_on_the_cookie() -> None:
    rule = rule_for(
        """
        - backendRefs: [{name: shop, port: 80}]
          sessionPersistence:
            sessionName: shop-session
            cookie: {lifetimeType: Permanent}
            absoluteTimeout: 1h
        """
    )
    assert rule.affinity is not None
    assert (rule.affinity.type, rule.affinity.name, rule.affinity.max_age) == (
        "Cookie",
        "shop-session",
        3600,
    )
    backend = service_backend(rule)
    assert (backend.policy.kind, backend.policy.hash_on) == (
        "ConsistentHash",
        "cookie:shop-session",
    )
    sticky = head("/", headers={"cookie": "shop-session=abc"})
    assert len({backend.pick(PickRequest(sticky)) for _ in range(20)}) == 1


def test_session_persistence_header() -> None:
    rule = rule_for(
        """
        - backendRefs: [{name: shop, port: 80}]
          sessionPersistence: {type: Header, header: {name: x-session}}
        """
    )
    assert rule.affinity is not None and (rule.affinity.type, rule.affinity.name) == (
        "Header",
        "x-session",
    )
    assert service_backend(rule).policy.hash_on == "header:x-session"


def test_weights_compile_to_shares() -> None:
    rule = rule_for(
        """
        - backendRefs:
          - {name: v1, port: 8080, weight: 70}
          - {name: v2, port: 8080, weight: 30}
          - {name: v3, port: 8080, weight: 0}
        """
    )
    assert [c.weight for c in rule.choices] == [70, 30, 0]
    rng = random.Random(1)
    counts: Counter[str] = Counter()
    for _ in range(10_000):
        choice = rule.choose(rng)
        assert choice is not None and choice.backend is not None
        counts[choice.backend.destination.service_name] += 1
    assert abs(counts["v1"] / 10_000 - 0.7) < 0.03
    assert abs(counts["v2"] / 10_000 - 0.3) < 0.03
    assert counts["v3"] == 0


def test_all_zero_weights_choose_nothing() -> None:
    rule = rule_for("- backendRefs: [{name: v1, port: 8080, weight: 0}]")
    assert rule.choose() is None


def test_rule_without_backend_refs_has_no_choices() -> None:
    rule = rule_for("- matches: [{path: {value: /}}]")
    assert rule.choices == () and rule.choose() is None


def test_mirrors_percent_fraction_and_backend_level() -> None:
    rule = rule_for(
        """
        - filters:
          - type: RequestMirror
            requestMirror: {backendRef: {name: v2, port: 8080}, percent: 20}
          - type: RequestMirror
            requestMirror:
              backendRef: {name: v3, port: 8080}
              fraction: {numerator: 1, denominator: 8}
          - type: RequestMirror
            requestMirror: {backendRef: {name: shop, port: 80}}
          backendRefs:
          - name: v1
            port: 8080
            filters:
            - type: RequestMirror
              requestMirror: {backendRef: {name: v3, port: 8080}, fraction: {numerator: 3}}
        """
    )
    mirrors = [(m.backend.destination.service_name, m.fraction) for m in rule.mirrors]
    assert mirrors == [("v2", 0.2), ("v3", 0.125), ("shop", 1.0)]
    (backend_mirror,) = rule.choices[0].mirrors
    assert (backend_mirror.backend.destination.service_name, backend_mirror.fraction) == (
        "v3",
        0.03,
    )


def test_timeouts_and_retry() -> None:
    rule = rule_for(
        """
        - backendRefs: [{name: v1, port: 8080}]
          timeouts: {request: 1m30s, backendRequest: 500ms}
          retry: {codes: [500, 503], attempts: 3, backoff: 100ms}
        """
    )
    assert rule.timeouts.request == 90.0
    assert rule.timeouts.backend_request == pytest.approx(0.5)
    assert rule.retry is not None
    assert (rule.retry.attempts, rule.retry.codes, rule.retry.backoff) == (
        3,
        frozenset({500, 503}),
        0.1,
    )


def test_zero_duration_disables_the_timeout() -> None:
    rule = rule_for(
        """
        - backendRefs: [{name: v1, port: 8080}]
          timeouts: {request: 0s, backendRequest: 10s}
        """
    )
    assert (rule.timeouts.request, rule.timeouts.backend_request) == (None, 10.0)


def run_request_filters(rule: CompiledRule, request: RequestHead) -> DirectResponse | None:
    for request_filter in rule.request_filters:
        response = request_filter.apply(request)
        if response is not None:
            return response
    return None


def test_unresolvable_extension_ref_answers_500_naming_the_reference() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            """
            - filters:
              - type: ExtensionRef
                extensionRef: {group: example.dev, kind: Magic, name: wand}
              backendRefs: [{name: v1, port: 8080}]
            """,
        )
    )
    assert condition(snapshot, "r", "ResolvedRefs")[:2] == ("False", "InvalidKind")
    rule = match(snapshot, head("/"))
    assert rule is not None
    response = run_request_filters(rule, head("/"))
    assert response is not None and response.status == 500
    assert b"example.dev/Magic default/wand" in response.body


class _StampFilter:
    def __init__(self, value: str) -> None:
        self.value = value

    def apply(self, head: RequestHead) -> DirectResponse | None:
        head.set_header("x-stamp", self.value)
        return None


def _stamp_factory(ref: ExtensionRef, ctx: ResolveContext) -> ExtensionFilters:
    config = ctx.find("test.example.dev", "Stamp", ref.namespace, ref.name)
    if config is None:
        raise LookupError(f"Stamp {ref.namespace}/{ref.name} not found")
    return ExtensionFilters(request=_StampFilter(str(config["spec"]["value"])))


def test_registered_extension_kind_resolves_through_the_raw_objects() -> None:
    register_filter_kind("test.example.dev", "Stamp", _stamp_factory)
    stamp = (
        "apiVersion: test.example.dev/v1\nkind: Stamp\nmetadata: {name: s1}\nspec: {value: hello}"
    )
    rules = """
        - filters:
          - type: ExtensionRef
            extensionRef: {group: test.example.dev, kind: Stamp, name: %s}
          backendRefs: [{name: v1, port: 8080}]
        """
    snapshot = compile_yaml(route_yaml("r", rules % "s1"), stamp)
    rule = match(snapshot, head("/"))
    assert rule is not None
    request = head("/")
    assert run_request_filters(rule, request) is None
    assert request.get("x-stamp") == "hello"

    missing = compile_yaml(route_yaml("r", rules % "s2"), stamp)
    assert condition(missing, "r", "ResolvedRefs")[:2] == ("False", "BackendNotFound")
    rule = match(missing, head("/"))
    assert rule is not None
    response = run_request_filters(rule, head("/"))
    assert response is not None and response.status == 500


class _DictContext:
    """A ResolveContext over raw dicts, as another backend kind's tests might build one."""

    def __init__(self, documents: list[Mapping[str, Any]]) -> None:
        self.documents = documents

    def find(
        self, api_group: str, kind: str, namespace: str, name: str
    ) -> Mapping[str, Any] | None:
        return next(
            (d for d in self.list(api_group, kind, namespace) if d["metadata"]["name"] == name),
            None,
        )

    def list(
        self, api_group: str, kind: str, namespace: str | None = None
    ) -> list[Mapping[str, Any]]:
        return [
            d
            for d in self.documents
            if d["apiVersion"].rpartition("/")[0] == api_group
            and d["kind"] == kind
            and (namespace is None or d["metadata"].get("namespace", "default") == namespace)
        ]

    def typed(self, api_group: str, kind: str, namespace: str, name: str) -> None:
        return None  # nothing here is validated at load


def test_service_kind_resolves_against_any_resolve_context() -> None:
    documents = list(yaml.safe_load_all(SERVICE.format(annotations="")))
    backend = resolve_service(
        BackendRef("", "Service", "shop", "default", 80), _DictContext(documents)
    )
    assert [str(e) for e in backend.endpoints] == [
        "10.1.0.1:18080",
        "10.1.0.3:18080",
        "10.1.0.4:28080",
    ]
