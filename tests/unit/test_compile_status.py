"""Route statuses: each Accepted / ResolvedRefs / PartiallyInvalid reason, grants, the table."""

from __future__ import annotations

import json

import pytest

from gateway.compile import format_status
from tests.fixtures.route_config import (
    compile_yaml,
    condition,
    head,
    route_yaml,
    served_by,
    status_of,
)

SIMPLE = "- backendRefs: [{name: v1, port: 8080}]"


def accepted(*documents: str, name: str = "r", **kwargs: bool) -> tuple[str, str, str]:
    return condition(compile_yaml(*documents, **kwargs), name, "Accepted")


def test_valid_route_is_accepted_with_resolved_refs() -> None:
    snapshot = compile_yaml(route_yaml("r", SIMPLE))
    assert condition(snapshot, "r", "Accepted")[:2] == ("True", "Accepted")
    assert condition(snapshot, "r", "ResolvedRefs")[:2] == ("True", "ResolvedRefs")
    assert status_of(snapshot, "r").valid
    assert not any(
        c.type == "PartiallyInvalid" for c in status_of(snapshot, "r").parents[0].conditions
    )


@pytest.mark.parametrize(
    ("parent", "message_part"),
    [
        ("{name: missing}", "Gateway default/missing not found"),
        ("{name: gw, sectionName: nope}", "named 'nope'"),
        ("{name: gw, port: 81}", "on port 81"),
        ("{name: gw, sectionName: http, port: 81}", "named 'http' and on port 81"),
        ("{group: '', kind: Service, name: v1}", "not supported"),
    ],
)
def test_no_matching_parent(parent: str, message_part: str) -> None:
    status, reason, message = accepted(route_yaml("r", SIMPLE, parent=parent))
    assert (status, reason) == ("False", "NoMatchingParent")
    assert message_part in message


def test_route_without_parent_refs_is_not_accepted() -> None:
    snapshot = compile_yaml(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: HTTPRoute
        metadata: {name: orphan}
        spec:
          rules: [{backendRefs: [{name: v1, port: 8080}]}]
        """
    )
    assert condition(snapshot, "orphan", "Accepted")[:2] == ("False", "NoMatchingParent")


SAME_NS_GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: ambient
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: selector
    port: 8080
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: web}}}}
  - name: tls-only
    port: 9090
    protocol: HTTP
    allowedRoutes: {kinds: [{kind: TLSRoute}]}
"""


def test_not_allowed_by_listeners_namespace() -> None:
    snapshot = compile_yaml(
        SAME_NS_GATEWAY,
        route_yaml(
            "r",
            SIMPLE,
            namespace="other",
            parent="{name: gw, namespace: default, sectionName: http}",
        ),
        with_gateway=False,
    )
    status, reason, _ = condition(snapshot, "r", "Accepted", namespace="other")
    assert (status, reason) == ("False", "NotAllowedByListeners")


def test_not_allowed_by_listeners_kind() -> None:
    snapshot = compile_yaml(
        SAME_NS_GATEWAY,
        route_yaml("r", SIMPLE, parent="{name: gw, sectionName: tls-only}"),
        with_gateway=False,
    )
    assert condition(snapshot, "r", "Accepted")[:2] == ("False", "NotAllowedByListeners")
    gateway = next(s for s in snapshot.statuses if s.kind == "Gateway")
    tls = next(p for p in gateway.parents if "tls-only" in p.parent)
    refs = next(c for c in tls.conditions if c.type == "ResolvedRefs")
    assert (refs.status, refs.reason) == ("False", "InvalidRouteKinds")


@pytest.mark.parametrize(("labels", "expected"), [("{team: web}", "True"), ("{team: db}", "False")])
def test_selector_namespaces(labels: str, expected: str) -> None:
    namespace = f"""
    apiVersion: v1
    kind: Namespace
    metadata: {{name: web, labels: {labels}}}
    """
    grant = """
    apiVersion: gateway.networking.k8s.io/v1beta1
    kind: ReferenceGrant
    metadata: {name: allow-web, namespace: default}
    spec:
      from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]
      to: [{group: "", kind: Service}]
    """
    snapshot = compile_yaml(
        SAME_NS_GATEWAY,
        namespace,
        grant,
        route_yaml(
            "r",
            "- backendRefs: [{name: v1, namespace: default, port: 8080}]",
            namespace="web",
            parent="{name: gw, namespace: default, sectionName: selector}",
        ),
        with_gateway=False,
    )
    status = status_of(snapshot, "r", "web")
    assert status.parents[0].conditions[0].status == expected
    assert (served_by(snapshot, head("/"), port=8080) == "v1") == (expected == "True")


def test_https_listener_without_certificate_refs_is_not_programmed_nor_routes_on_it() -> None:
    snapshot = compile_yaml(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: ambient
          listeners:
          - {name: web, port: 80, protocol: HTTP}
          - {name: secure, port: 443, protocol: HTTPS, hostname: example.com}
        """,
        route_yaml("r", SIMPLE, parent="{name: gw, sectionName: secure}"),
        with_gateway=False,
    )
    assert [i.name for i in snapshot.listeners] == ["web"]
    gateway = next(s for s in snapshot.statuses if s.kind == "Gateway")
    secure = next(p for p in gateway.parents if "secure" in p.parent)
    programmed = next(c for c in secure.conditions if c.type == "Programmed")
    assert (programmed.status, programmed.reason) == ("False", "Invalid")
    refs = next(c for c in secure.conditions if c.type == "ResolvedRefs")
    assert (refs.status, refs.reason) == ("False", "InvalidCertificateRef")
    status, reason, message = condition(snapshot, "r", "Accepted")
    assert (status, reason) == ("False", "NotAllowedByListeners")
    assert "HTTPS" in message


@pytest.mark.parametrize(
    ("rules", "reason", "message_part"),
    [
        (
            """
            - matches: [{path: {type: RegularExpression, value: "/(unclosed"}}]
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "spec.rules[0].matches[0].path.value: invalid regular expression",
        ),
        (
            """
            - matches: [{path: {type: Prefix, value: /x}}]
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "spec.rules[0].matches[0].path.type: unsupported value 'Prefix'",
        ),
        (
            """
            - matches: [{headers: [{type: Glob, name: a, value: b}]}]
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "headers[0].type",
        ),
        (
            """
            - matches: [{method: FETCH}]
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "method",
        ),
        (
            """
            - filters: [{type: Teleport}]
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "unsupported filter type 'Teleport'",
        ),
        (
            """
            - filters: [{type: RequestHeaderModifier}]
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "requestHeaderModifier: required",
        ),
        (
            """
            - timeouts: {request: 10 seconds}
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "timeouts.request: invalid duration",
        ),
        (
            """
            - timeouts: {request: 1s, backendRequest: 2s}
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "longer than",
        ),
        (
            """
            - filters:
              - {type: RequestRedirect, requestRedirect: {scheme: https}}
              - {type: URLRewrite, urlRewrite: {hostname: a.com}}
            """,
            "IncompatibleFilters",
            "RequestRedirect and URLRewrite",
        ),
        (
            """
            - filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
              backendRefs: [{name: v1, port: 8080}]
            """,
            "IncompatibleFilters",
            "backendRefs",
        ),
        (
            """
            - filters:
              - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}]}}
              - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: c, value: d}]}}
              backendRefs: [{name: v1, port: 8080}]
            """,
            "IncompatibleFilters",
            "only once",
        ),
        (
            """
            - matches: [{path: {type: Exact, value: /x}}]
              filters:
              - type: URLRewrite
                urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /y}}
              backendRefs: [{name: v1, port: 8080}]
            """,
            "IncompatibleFilters",
            "ReplacePrefixMatch",
        ),
        (
            """
            - matches: [{path: {value: /a}}, {path: {value: /b}}]
              filters:
              - type: URLRewrite
                urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /y}}
              backendRefs: [{name: v1, port: 8080}]
            """,
            "IncompatibleFilters",
            "ReplacePrefixMatch",
        ),
        (
            """
            - filters:
              - type: RequestMirror
                requestMirror:
                  backendRef: {name: v2, port: 8080}
                  percent: 5
                  fraction: {numerator: 1}
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "percent or fraction",
        ),
        (
            """
            - filters:
              - type: CORS
                cors: {allowOrigins: ["*", "https://a.com"]}
              backendRefs: [{name: v1, port: 8080}]
            """,
            "UnsupportedValue",
            "cannot be mixed",
        ),
        (
            """
            - filters: [{type: RequestRedirect, requestRedirect: {statusCode: 304}}]
            """,
            "UnsupportedValue",
            "statusCode",
        ),
    ],
)
def test_invalid_rule_makes_route_not_accepted(rules: str, reason: str, message_part: str) -> None:
    snapshot = compile_yaml(route_yaml("r", rules))
    status, got_reason, message = condition(snapshot, "r", "Accepted")
    assert (status, got_reason) == ("False", reason)
    assert message_part in message
    assert served_by(snapshot, head("/x")) is None
    assert not status_of(snapshot, "r").valid


def test_partially_invalid_drops_only_the_bad_rule() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            """
            - matches: [{path: {type: RegularExpression, value: "/bad[" }}]
              backendRefs: [{name: v2, port: 8080}]
            - matches: [{path: {value: /good}}]
              backendRefs: [{name: v1, port: 8080}]
            """,
        )
    )
    assert condition(snapshot, "r", "Accepted")[:2] == ("True", "Accepted")
    status, reason, message = condition(snapshot, "r", "PartiallyInvalid")
    assert (status, reason) == ("True", "UnsupportedValue")
    assert message.startswith("Dropped Rule") and "spec.rules[0]" in message
    assert served_by(snapshot, head("/good")) == "v1"
    assert snapshot.dump["routes"][0]["rules"][0]["dropped"]["reason"] == "UnsupportedValue"


@pytest.mark.parametrize(
    ("backend_ref", "reason"),
    [
        ("{name: nothere, port: 8080}", "BackendNotFound"),
        ("{name: v1, port: 9999}", "BackendNotFound"),
        ("{group: unknownkind.example.com, kind: NonExistent, name: x}", "InvalidKind"),
        ("{name: v1, namespace: elsewhere, port: 8080}", "RefNotPermitted"),
    ],
)
def test_resolved_refs_reasons_keep_the_route_accepted(backend_ref: str, reason: str) -> None:
    snapshot = compile_yaml(route_yaml("r", f"- backendRefs: [{backend_ref}]"))
    assert condition(snapshot, "r", "Accepted")[:2] == ("True", "Accepted")
    assert condition(snapshot, "r", "ResolvedRefs")[:2] == ("False", reason)
    rule = snapshot.routers[80].match(head("/"))
    assert rule is not None
    choice = rule.choose()
    assert choice is not None and choice.backend is None and choice.error


def test_mirror_to_ungranted_namespace_is_ref_not_permitted_and_dropped() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            """
            - filters:
              - type: RequestMirror
                requestMirror: {backendRef: {name: v2, namespace: other, port: 8080}}
              backendRefs: [{name: v1, port: 8080}]
            """,
        )
    )
    status, reason, message = condition(snapshot, "r", "ResolvedRefs")
    assert (status, reason) == ("False", "RefNotPermitted")
    assert "requestMirror.backendRef" in message
    rule = snapshot.routers[80].match(head("/"))
    assert rule is not None and rule.mirrors == ()


GRANTED_ROUTE = route_yaml(
    "r",
    "- backendRefs: [{name: v1, namespace: default, port: 8080}]",
    namespace="apps",
)
VALID_GRANT = {
    "namespace": "default",
    "from_group": "gateway.networking.k8s.io",
    "from_kind": "HTTPRoute",
    "from_namespace": "apps",
    "to_group": '""',
    "to_kind": "Service",
    "to_name": "v1",
}


def grant_yaml(**fields: str) -> str:
    f = {**VALID_GRANT, **fields}
    return f"""
    apiVersion: gateway.networking.k8s.io/v1beta1
    kind: ReferenceGrant
    metadata: {{name: grant, namespace: {f["namespace"]}}}
    spec:
      from: [{{group: {f["from_group"]}, kind: {f["from_kind"]}, namespace: {f["from_namespace"]}}}]
      to: [{{group: {f["to_group"]}, kind: {f["to_kind"]}, name: {f["to_name"]}}}]
    """


def test_reference_grant_permits_cross_namespace_backend() -> None:
    snapshot = compile_yaml(GRANTED_ROUTE, grant_yaml())
    assert status_of(snapshot, "r", "apps").parents[0].conditions[1].reason == "ResolvedRefs"
    assert served_by(snapshot, head("/")) == "v1"


def test_reference_grant_without_name_covers_every_service() -> None:
    snapshot = compile_yaml(GRANTED_ROUTE, grant_yaml().replace(", name: v1", ""))
    assert served_by(snapshot, head("/")) == "v1"


@pytest.mark.parametrize(
    "near_miss",
    [
        {"namespace": "apps"},  # grant in the route's namespace, not the target's
        {"from_group": "gateway.networking.k8s.io.example"},
        {"from_kind": "GRPCRoute"},
        {"from_namespace": "elsewhere"},
        {"to_group": "core"},
        {"to_kind": "Secret"},
        {"to_name": "v2"},
    ],
)
def test_reference_grant_near_misses_are_rejected(near_miss: dict[str, str]) -> None:
    snapshot = compile_yaml(GRANTED_ROUTE, grant_yaml(**near_miss))
    refs = status_of(snapshot, "r", "apps").parents[0].conditions[1]
    assert (refs.status, refs.reason) == ("False", "RefNotPermitted")
    rule = snapshot.routers[80].match(head("/"))
    assert rule is not None and rule.choices[0].backend is None


def test_format_status_prints_one_line_per_parent_with_every_condition() -> None:
    snapshot = compile_yaml(
        route_yaml("good", SIMPLE),
        route_yaml("broken", "- backendRefs: [{name: ghost, port: 8080}]"),
        route_yaml("lost", SIMPLE, parent="{name: nowhere}"),
    )
    text = format_status(snapshot.statuses)
    lines = text.splitlines()
    good = next(line for line in lines if "HTTPRoute default/good" in line)
    broken = next(line for line in lines if "HTTPRoute default/broken" in line)
    lost = next(line for line in lines if "HTTPRoute default/lost" in line)
    assert "Accepted=True(Accepted)" in good and "ResolvedRefs=True(ResolvedRefs)" in good
    assert "ResolvedRefs=False(BackendNotFound): Service default/ghost not found" in broken
    assert "Accepted=False(NoMatchingParent): Gateway default/nowhere not found" in lost
    assert "default/gw" in good
    assert any(line.startswith("Gateway default/gw") for line in lines)
    assert lines[0].split() == ["OBJECT", "PARENT", "CONDITIONS"]


def test_dump_is_json_serialisable_and_describes_the_config() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            """
            - matches: [{path: {type: Exact, value: /x}, headers: [{name: a, value: b}]}]
              filters:
              - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x, value: y}]}}
              - type: RequestMirror
                requestMirror: {backendRef: {name: v3, port: 8080}, percent: 10}
              backendRefs: [{name: v1, port: 8080, weight: 3}, {name: v2, port: 8080}]
            """,
        )
    )
    dump = json.loads(json.dumps(snapshot.dump))
    assert dump["version"] == 1
    assert dump["listeners"][0]["name"] == "http"
    rule = dump["routes"][0]["rules"][0]
    assert rule["matches"] == [
        {
            "path": {"type": "Exact", "value": "/x"},
            "headers": [{"type": "Exact", "name": "a", "value": "b"}],
        }
    ]
    assert rule["requestFilters"][0]["type"] == "RequestHeaderModifier"
    assert rule["mirrors"][0]["fraction"] == pytest.approx(0.1)
    assert [b["weight"] for b in rule["backends"]] == [3, 1]
    assert rule["backends"][0]["backend"]["endpoints"] == [
        {"address": "10.0.0.1", "port": 3000, "protocol": "http/1.1"}
    ]
    assert {s["kind"] for s in dump["statuses"]} == {"Gateway", "HTTPRoute"}
