"""Compiling BackendTLSPolicy: targets and sectionName, precedence, every condition and reason,
the endpoints' TLS settings, and what an invalid policy does to the routes that use its Service."""

from __future__ import annotations

import json
import textwrap

import pytest

from gateway.backends.service import ServiceBackend
from gateway.compile import compile_snapshot, format_status
from gateway.config import load_text
from gateway.snapshot import CompiledRule, Snapshot
from tests.fixtures.backend_tls import config_map_yaml, policy_yaml
from tests.fixtures.certs import Authority, authority
from tests.fixtures.route_config import condition, head, match

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: ambient
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""

# Service "api": port 443 "https" (HTTP/1.1), 8443 "admin", 50051 "grpc" (appProtocol grpc),
# 8080 "h2c" (kubernetes.io/h2c); "dns" has only a UDP port; "mixed" a TCP and a UDP port.
SERVICES = """
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  ports:
  - {name: https, port: 443, targetPort: 8443}
  - {name: admin, port: 8443}
  - {name: grpc, port: 50051, appProtocol: grpc}
  - {name: h2c, port: 8080, appProtocol: kubernetes.io/h2c}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: default, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: https, port: 8443}, {name: admin, port: 9443}, {name: grpc, port: 50051},
        {name: h2c, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: default}
spec:
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: mixed, namespace: default}
spec:
  ports: [{name: web, port: 443}, {name: dns, port: 53, protocol: UDP}]
"""

ROUTE = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /https}}]
    backendRefs: [{name: api, port: 443}]
  - matches: [{path: {value: /admin}}]
    backendRefs: [{name: api, port: 8443}]
  - matches: [{path: {value: /grpc}}]
    backendRefs: [{name: api, port: 50051}]
  - matches: [{path: {value: /h2c}}]
    backendRefs: [{name: api, port: 8080}]
"""


def compile_with(*documents: str, route: str = ROUTE) -> Snapshot:
    """Gateway gw, the Services above, HTTPRoute ``web``, ConfigMap ``ca`` with the test CA,
    and ``documents``."""
    text = (
        GATEWAY
        + SERVICES
        + route
        + config_map_yaml("ca", authority().pem)
        + "".join(textwrap.dedent(d) for d in documents)
    )
    return compile_snapshot(load_text(text, "test.yaml"), 1)


def policy_conditions(
    snapshot: Snapshot, name: str
) -> tuple[list[str], dict[str, tuple[str, str, str]]]:
    """A policy's ancestors and its conditions (type -> (status, reason, message))."""
    status = next(s for s in snapshot.statuses if s.kind == "BackendTLSPolicy" and s.name == name)
    parents = [p.parent for p in status.parents]
    assert all(p.conditions == status.parents[0].conditions for p in status.parents)
    return parents, {c.type: (c.status, c.reason, c.message) for c in status.parents[0].conditions}


def backend_of(snapshot: Snapshot, rule: int) -> ServiceBackend:
    """The Service backend of HTTPRoute web's rule ``rule``."""
    (choice,) = compiled_rule(snapshot, rule).choices
    assert isinstance(choice.backend, ServiceBackend), choice.error
    return choice.backend


def compiled_rule(snapshot: Snapshot, rule: int) -> CompiledRule:
    """HTTPRoute web's rule ``rule``, as the router finds it by path."""
    path = ("/https", "/admin", "/grpc", "/h2c")[rule]
    found = match(snapshot, head(path))
    assert found is not None and found.ref.rule_index == rule
    return found


def test_valid_policy_is_accepted_and_puts_every_port_on_tls() -> None:
    snapshot = compile_with(policy_yaml("api-tls", "api", "api.test"))
    parents, conditions = policy_conditions(snapshot, "api-tls")
    assert parents == ["default/gw"]
    assert conditions["Accepted"] == ("True", "Accepted", "")
    assert conditions["ResolvedRefs"] == ("True", "ResolvedRefs", "")
    assert condition(snapshot, "web", "ResolvedRefs")[:2] == ("True", "ResolvedRefs")
    backend = backend_of(snapshot, 0)
    (endpoint,) = backend.endpoints
    assert (endpoint.address, endpoint.port, endpoint.protocol) == ("10.0.0.1", 8443, "http/1.1")
    assert endpoint.tls is not None
    assert endpoint.tls.server_name == "api.test"
    assert endpoint.tls.alpn == ("http/1.1",)
    assert endpoint.tls.source == "BackendTLSPolicy default/api-tls"
    assert endpoint.tls.trust.startswith("sha256:")
    assert endpoint.tls.context.check_hostname  # no subjectAltNames: OpenSSL checks api.test
    assert backend_of(snapshot, 1).endpoints[0].tls == endpoint.tls  # every port


def test_http2_app_protocols_speak_h2_over_tls_and_h2c_is_never_cleartext() -> None:
    plain = compile_with()
    assert [e.protocol for e in backend_of(plain, 2).endpoints] == ["h2c"]
    assert [e.protocol for e in backend_of(plain, 3).endpoints] == ["h2c"]
    assert backend_of(plain, 2).endpoints[0].tls is None

    snapshot = compile_with(policy_yaml("api-tls", "api", "api.test"))
    for rule in (2, 3):  # appProtocol grpc, and kubernetes.io/h2c: the policy wins
        (endpoint,) = backend_of(snapshot, rule).endpoints
        assert endpoint.protocol == "h2"
        assert endpoint.tls is not None and endpoint.tls.alpn == ("h2",)
    # One SSLContext per (policy, ALPN) per compile.
    assert backend_of(snapshot, 2).tls is backend_of(snapshot, 3).tls


def test_section_name_selects_one_port_and_wins_over_a_whole_service_policy() -> None:
    snapshot = compile_with(
        policy_yaml("whole", "api", "whole.test"),
        policy_yaml("admin-only", "api", "admin.test", section="admin"),
    )
    for name in ("whole", "admin-only"):
        assert policy_conditions(snapshot, name)[1]["Accepted"][:2] == ("True", "Accepted")
    assert backend_of(snapshot, 0).endpoints[0].tls.server_name == "whole.test"  # type: ignore[union-attr]
    assert backend_of(snapshot, 1).endpoints[0].tls.server_name == "admin.test"  # type: ignore[union-attr]

    only = compile_with(policy_yaml("admin-only", "api", "admin.test", section="admin"))
    assert backend_of(only, 0).endpoints[0].tls is None
    assert backend_of(only, 1).endpoints[0].tls is not None


@pytest.mark.parametrize(
    ("first", "second", "winner"),
    [
        # The older policy wins whatever its name ...
        (("b-policy", "2024-01-01T00:00:00Z"), ("a-policy", "2024-06-01T00:00:00Z"), "b-policy"),
        # ... and on equal age the first by namespace/name.
        (("b-policy", "2024-01-01T00:00:00Z"), ("a-policy", "2024-01-01T00:00:00Z"), "a-policy"),
    ],
)
def test_conflicting_policies_oldest_then_name_wins(
    first: tuple[str, str], second: tuple[str, str], winner: str
) -> None:
    snapshot = compile_with(
        policy_yaml(first[0], "api", f"{first[0]}.test", section="https", created=first[1]),
        policy_yaml(second[0], "api", f"{second[0]}.test", section="https", created=second[1]),
    )
    loser = ({first[0], second[0]} - {winner}).pop()
    assert policy_conditions(snapshot, winner)[1]["Accepted"][:2] == ("True", "Accepted")
    status, reason, message = policy_conditions(snapshot, loser)[1]["Accepted"]
    assert (status, reason) == ("False", "Conflicted")
    assert f"Service default/api port 'https': BackendTLSPolicy default/{winner}" in message
    assert backend_of(snapshot, 0).endpoints[0].tls.server_name == f"{winner}.test"  # type: ignore[union-attr]
    assert condition(snapshot, "web", "ResolvedRefs")[0] == "True"


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ("", "caCertificateRefs[0]: ConfigMap default/nope not found"),
        (
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: nope}\ndata: {other: x}\n",
            "caCertificateRefs[0]: ConfigMap default/nope has no key 'ca.crt'",
        ),
        (
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: nope}\n"
            "data: {ca.crt: not a certificate}\n",
            "caCertificateRefs[0]: ConfigMap default/nope: ca.crt is not PEM certificates",
        ),
    ],
    ids=["missing", "no-ca.crt", "malformed"],
)
def test_invalid_ca_certificate_ref(documents: str, message: str) -> None:
    snapshot = compile_with(policy_yaml("bad", "api", "api.test", ca="nope"), documents)
    parents, conditions = policy_conditions(snapshot, "bad")
    assert parents == ["default/gw"]
    assert conditions["ResolvedRefs"][:2] == ("False", "InvalidCACertificateRef")
    assert message in conditions["ResolvedRefs"][2]
    assert conditions["Accepted"][:2] == ("False", "NoValidCACertificate")
    assert message in conditions["Accepted"][2]
    assert_backend_refused(snapshot, "BackendTLSPolicy default/bad")


def assert_backend_refused(snapshot: Snapshot, policy: str) -> None:
    """Every backendRef to Service api is invalid: the route says why, requests get 500."""
    status, reason, message = condition(snapshot, "web", "ResolvedRefs")
    assert (status, reason) == ("False", "InvalidBackendTLS")
    assert f"{policy} targets Service default/api but is not valid" in message
    assert condition(snapshot, "web", "Accepted")[0] == "True"
    for rule in range(4):
        (choice,) = compiled_rule(snapshot, rule).choices
        assert choice.backend is None  # the data path answers 500 with choice.error
        assert choice.error is not None and "neither speaks TLS nor falls back" in choice.error


def test_ca_reference_of_another_kind_is_invalid_kind() -> None:
    snapshot = compile_with(policy_yaml("bad", "api", "api.test", ca="ca", ca_kind="Secret"))
    conditions = policy_conditions(snapshot, "bad")[1]
    status, reason, message = conditions["ResolvedRefs"]
    assert (status, reason) == ("False", "InvalidKind")
    assert "caCertificateRefs[0]: core/Secret ca: only ConfigMaps are supported" in message
    assert conditions["Accepted"][:2] == ("False", "NoValidCACertificate")
    assert_backend_refused(snapshot, "BackendTLSPolicy default/bad")


def test_valid_ca_refs_apply_alongside_invalid_ones() -> None:
    text = policy_yaml("p", "api", "api.test").replace(
        '[{group: "", kind: ConfigMap, name: ca}]',
        '[{group: "", kind: ConfigMap, name: ca}, {group: "", kind: ConfigMap, name: gone}]',
    )
    snapshot = compile_with(text)
    conditions = policy_conditions(snapshot, "p")[1]
    assert conditions["Accepted"][:2] == ("True", "Accepted")
    status, reason, message = conditions["ResolvedRefs"]
    assert (status, reason) == ("False", "InvalidCACertificateRef")
    assert message == "caCertificateRefs[1]: ConfigMap default/gone not found"
    assert backend_of(snapshot, 0).endpoints[0].tls is not None


def test_well_known_system_trust_and_an_unsupported_set() -> None:
    system = compile_with(policy_yaml("p", "api", "api.test", ca=None, well_known="System"))
    assert policy_conditions(system, "p")[1]["Accepted"][:2] == ("True", "Accepted")
    tls = backend_of(system, 0).endpoints[0].tls
    assert tls is not None and tls.trust == "System"

    custom = compile_with(
        policy_yaml("p", "api", "api.test", ca=None, well_known="example.com/internal-cas")
    )
    status, reason, message = policy_conditions(custom, "p")[1]["Accepted"]
    assert (status, reason) == ("False", "Invalid")
    assert (
        message
        == "wellKnownCACertificates 'example.com/internal-cas' is not supported (only System)"
    )
    assert_backend_refused(custom, "BackendTLSPolicy default/p")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            '{group: "", kind: Service, name: nowhere}',
            "targetRefs[0]: Service default/nowhere not found",
        ),
        (
            '{group: "", kind: Service, name: api, sectionName: nope}',
            "targetRefs[0]: Service default/api has no port named 'nope'",
        ),
        (
            "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}",
            "targetRefs[0]: gateway.networking.k8s.io/Gateway gw: only core Services",
        ),
    ],
    ids=["no-service", "no-port", "not-a-service"],
)
def test_target_not_found(target: str, message: str) -> None:
    text = policy_yaml("p", "api", "api.test").replace(
        '[{group: "", kind: Service, name: api}]', f"[{target}]"
    )
    snapshot = compile_with(text)
    parents, conditions = policy_conditions(snapshot, "p")
    assert parents == ["-"]  # no resolved target, so no ancestor
    status, reason, text_ = conditions["Accepted"]
    assert (status, reason) == ("False", "TargetNotFound")
    assert message in text_
    assert backend_of(snapshot, 0).endpoints[0].tls is None


def test_udp_ports_are_invalid_targets() -> None:
    udp_only = compile_with(policy_yaml("p", "dns", "dns.test"))
    status, reason, message = policy_conditions(udp_only, "p")[1]["Accepted"]
    assert (status, reason) == ("False", "Invalid")
    assert "port dns of Service default/dns: a BackendTLSPolicy applies to TCP only" in message

    mixed = compile_with(policy_yaml("p", "mixed", "mixed.test"))
    status, reason, message = policy_conditions(mixed, "p")[1]["Accepted"]
    assert (status, reason) == ("True", "Accepted")
    assert "port dns of Service default/mixed ignored (UDP)" in message


def test_options_are_accepted_and_said_to_be_ignored() -> None:
    text = policy_yaml("p", "api", "api.test") + "  options: {example.com/min-version: '1.3'}\n"
    status, reason, message = policy_conditions(compile_with(text), "p")[1]["Accepted"]
    assert (status, reason) == ("True", "Accepted")
    assert message == "options ignored (none is supported): example.com/min-version"


def test_ancestors_are_the_gateways_of_routes_using_the_service() -> None:
    unused = compile_with(policy_yaml("p", "mixed", "mixed.test"))
    assert policy_conditions(unused, "p")[0] == ["-"]
    mirror_only = """
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: web, namespace: default}
    spec:
      parentRefs: [{name: gw}]
      rules:
      - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: mixed, port: 443}}}]
        backendRefs: [{name: api, port: 443}]
    """
    mirrored = compile_with(
        policy_yaml("p", "mixed", "mixed.test"), route=textwrap.dedent(mirror_only)
    )
    assert policy_conditions(mirrored, "p")[0] == ["default/gw"]


def test_subject_alt_names_replace_the_hostname_check() -> None:
    snapshot = compile_with(
        policy_yaml("p", "api", "api.test", sans=(("URI", "spiffe://td/ns/default/sa/api"),))
    )
    tls = backend_of(snapshot, 0).endpoints[0].tls
    assert tls is not None
    assert tls.server_name == "api.test"  # still the SNI
    assert tls.subject_alt_names == (("URI", "spiffe://td/ns/default/sa/api"),)
    assert not tls.context.check_hostname  # checked after the handshake instead


def test_recompiling_keeps_endpoints_equal_and_a_new_ca_changes_them() -> None:
    first = backend_of(compile_with(policy_yaml("p", "api", "api.test")), 0).endpoints[0]
    again = backend_of(compile_with(policy_yaml("p", "api", "api.test")), 0).endpoints[0]
    assert first == again and hash(first) == hash(again)  # pooled connections survive a reload
    assert first.tls is not None and again.tls is not None
    assert first.tls.context is not again.tls.context
    other_ca = config_map_yaml("other", Authority("Other CA").pem)
    changed = backend_of(
        compile_with(policy_yaml("p", "api", "api.test", ca="other"), other_ca), 0
    ).endpoints[0]
    assert changed != first


def test_statuses_appear_in_check_output_and_dump() -> None:
    snapshot = compile_with(
        policy_yaml("good", "api", "api.test", section="https"),
        policy_yaml("bad", "api", "admin.test", section="admin", ca="nope"),
    )
    table = format_status(snapshot.statuses)
    assert "BackendTLSPolicy default/good  default/gw" in table
    assert "Accepted=False(NoValidCACertificate)" in table
    statuses = {s.name: s for s in snapshot.statuses if s.kind == "BackendTLSPolicy"}
    assert statuses["good"].valid and not statuses["bad"].valid
    dump = json.loads(json.dumps(snapshot.dump))
    views = {v["name"]: v for v in dump["backendTLSPolicies"]}
    assert views["good"]["targets"] == [
        {"service": "default/api", "sectionName": "https", "applied": True}
    ]
    assert views["bad"]["invalid"][0] == "NoValidCACertificate"
    kinds = [s["kind"] for s in dump["statuses"]]
    assert kinds.count("BackendTLSPolicy") == 2
    backends = dump["routes"][0]["rules"][0]["backends"]
    assert backends[0]["backend"]["tls"]["sni"] == "api.test"
