"""Loading Kubernetes YAML: kinds, defaults, raw objects, errors naming file/object/field."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_files, load_text

ROUTE = """
apiVersion: gateway.networking.k8s.io/{version}
kind: HTTPRoute
metadata: {{name: foo}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /ok}}
    - path: {{type: PathPrefix, value: {path}}}
"""


def error_of(text: str, source: str = "routes.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text, source)
    return str(info.value)


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_httproute_versions_and_defaults(version: str) -> None:
    resources = load_text(ROUTE.format(version=version, path="/x"), "routes.yaml")
    (route,) = resources.routes
    assert route.metadata.namespace == "default"
    assert route.spec.parent_refs[0].kind == "Gateway"
    assert route.spec.parent_refs[0].group == "gateway.networking.k8s.io"
    assert route.spec.rules[0].matches[1].path.value == "/x"


def test_omitted_rules_and_matches_default_to_prefix_slash() -> None:
    resources = load_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n", "r.yaml"
    )
    (rule,) = resources.routes[0].spec.rules
    (match,) = rule.matches
    assert (match.path.type, match.path.value) == ("PathPrefix", "/")


def test_empty_matches_list_matches_everything_like_omitted_matches() -> None:
    resources = load_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
        "spec: {rules: [{matches: []}]}\n",
        "r.yaml",
    )
    (match,) = resources.routes[0].spec.rules[0].matches
    assert (match.path.type, match.path.value, match.headers, match.method) == (
        "PathPrefix",
        "/",
        [],
        None,
    )


def test_path_value_error_names_file_object_and_field_path() -> None:
    message = error_of(ROUTE.format(version="v1", path="nope"))
    assert message == (
        "routes.yaml: HTTPRoute default/foo: "
        "spec.rules[0].matches[1].path.value: must start with '/'"
    )


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop}\n"
            "spec: {ports: [{name: http, port: eighty}]}\n",
            "s.yaml: Service shop/s: spec.ports[0].port: ",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
            "spec: {listeners: []}\n",
            "s.yaml: Gateway default/g: spec.gatewayClassName: required field is missing",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
            "spec: {rules: [{backendRefs: [{name: svc}]}]}\n",
            "s.yaml: HTTPRoute default/r: spec.rules[0].backendRefs[0]: "
            "port is required for a Service",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
            "spec: {hostnames: [Foo.COM]}\n",
            "s.yaml: HTTPRoute default/r: spec.hostnames: 'Foo.COM' is not a valid hostname",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\n"
            "spec: {rules: [{backendRefs: [{name: s, port: 80, weight: -1}]}]}\n",
            "s.yaml: HTTPRoute default/r: spec.rules[0].backendRefs[0].weight: ",
        ),
        (
            "apiVersion: gateway.networking.k8s.io/v2\nkind: HTTPRoute\nmetadata: {name: r}\n",
            "s.yaml: HTTPRoute default/r: apiVersion: 'gateway.networking.k8s.io/v2' is not served",
        ),
        ("kind: Service\nmetadata: {name: x}\n", "s.yaml: document 1: apiVersion: required"),
        ("- just\n- a list\n", "s.yaml: document 1: expected a mapping"),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  annotations:\n"
            "    gateway.ambient.dev/load-balancer: weighted\n",
            "s.yaml: Service default/s: metadata.annotations['gateway.ambient.dev/load-balancer']: "
            "'weighted' is not one of",
        ),
        (
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  annotations:\n"
            "    gateway.ambient.dev/hash-on: 'ip:port'\n",
            "s.yaml: Service default/s: metadata.annotations['gateway.ambient.dev/hash-on']",
        ),
    ],
)
def test_validation_errors_name_file_object_and_field(document: str, expected: str) -> None:
    assert error_of(document, "s.yaml").startswith(expected)


def test_invalid_yaml_names_file_and_line() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: [unclosed\n"
    message = error_of(text, "broken.yaml")
    assert message.startswith("broken.yaml:")
    line = int(message.split(":")[1])
    assert line in (4, 5)
    assert "invalid YAML" in message


def test_every_error_is_reported() -> None:
    text = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: x}]}\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: y}]}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_text(text, "many.yaml")
    assert [p.split(":")[1].strip() for p in info.value.problems] == [
        "Service default/a",
        "Service default/b",
    ]


def test_unknown_kinds_are_kept_raw_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    text = """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: pool, namespace: ai}
spec: {targetPorts: [{number: 8000}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ambient}
spec: {controllerName: ambient.dev/gateway}
"""
    with caplog.at_level(logging.WARNING, logger="gateway.config.loader"):
        resources = load_text(text, "x.yaml")
    assert any("InferencePool" in r.getMessage() for r in caplog.records)
    assert not any("GatewayClass" in r.getMessage() for r in caplog.records)
    pool = resources.find("inference.networking.k8s.io", "InferencePool", "ai", "pool")
    assert pool is not None and pool["spec"]["targetPorts"][0]["number"] == 8000
    assert resources.list("inference.networking.k8s.io", "InferencePool") == [pool]
    assert resources.list("inference.networking.k8s.io", "InferencePool", "default") == []
    assert resources.find("gateway.networking.k8s.io", "GatewayClass", "", "ambient") is not None


def test_known_kinds_are_findable_raw_too() -> None:
    resources = load_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n", "a"
    )
    raw = resources.find("", "Service", "default", "s")
    assert raw is not None and raw["spec"]["ports"][0]["port"] == 80


def test_namespaces_keep_their_labels() -> None:
    resources = load_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: web, labels: {team: a}}\n", "n"
    )
    assert resources.namespace_labels("web") == {"team": "a", "kubernetes.io/metadata.name": "web"}
    assert resources.namespace_labels("undeclared") == {"kubernetes.io/metadata.name": "undeclared"}


def test_load_files_merges_files_and_rejects_duplicates(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    service = (
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
        "spec: {{ports: [{{port: 80}}]}}\n"
    )
    first.write_text(service.format(name="one"))
    second.write_text(service.format(name="two") + "---\n" + ROUTE.format(version="v1", path="/x"))
    resources = load_files([str(first), str(second)])
    assert sorted(resources.services) == [("default", "one"), ("default", "two")]
    assert resources.source_of("", "Service", "default", "two") == str(second)

    duplicate = tmp_path / "c.yaml"
    duplicate.write_text(service.format(name="one"))
    with pytest.raises(
        ConfigError, match=r"c\.yaml: Service default/one: duplicate of the object in .*a\.yaml"
    ):
        load_files([str(first), str(duplicate)])


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_files([str(tmp_path / "missing.yaml")])


def test_list_documents_are_expanded() -> None:
    text = (
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: Service, metadata: {name: s}}\n"
    )
    assert list(load_text(text, "l").services) == [("default", "s")]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "{rules: [{name: a}, {name: a}]}",
            "spec.rules: rule names must be unique",
        ),
        (
            "{parentRefs: [{name: gw}, {name: gw, sectionName: http}]}",
            "spec.parentRefs: parentRefs to Gateway gw must each set a distinct sectionName",
        ),
        (
            "{parentRefs: [{name: gw, sectionName: a}, {name: gw, sectionName: a}]}",
            "spec.parentRefs: parentRefs to Gateway gw must each set a distinct sectionName",
        ),
    ],
)
def test_route_spec_rules_an_api_server_would_enforce(spec: str, expected: str) -> None:
    text = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: r}}\nspec: {spec}\n"
    )
    assert error_of(text, "r.yaml").startswith(f"r.yaml: HTTPRoute default/r: {expected}")


@pytest.mark.parametrize(
    ("listeners", "expected"),
    [
        (
            "[{name: a, port: 80, protocol: HTTP}, {name: a, port: 81, protocol: HTTP}]",
            "spec.listeners: listener names must be unique",
        ),
        (
            "[{name: a, port: 80, protocol: HTTP}, {name: b, port: 80, protocol: HTTP}]",
            "spec.listeners: each listener needs a distinct port, protocol and hostname",
        ),
    ],
)
def test_gateway_listener_uniqueness(listeners: str, expected: str) -> None:
    text = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\n"
        f"spec: {{gatewayClassName: c, listeners: {listeners}}}\n"
    )
    assert error_of(text, "g.yaml").startswith(f"g.yaml: Gateway default/g: {expected}")


def test_an_unknown_gateway_api_field_rejects_that_object_and_keeps_the_rest() -> None:
    text = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, uid: abc}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRef: [{name: a, port: 80}]
    matches: [{pth: {value: /api}}]
status: {parents: []}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: fine}
spec:
  parentRefs: [{name: gw}]
"""
    resources = load_text(text, "r.yaml")
    assert [r.metadata.name for r in resources.routes] == ["fine"]
    assert resources.find("gateway.networking.k8s.io", "HTTPRoute", "default", "r") is None
    assert [(r.kind, r.namespace, r.name, r.message) for r in resources.rejected] == [
        (
            "HTTPRoute",
            "default",
            "r",
            "r.yaml: HTTPRoute default/r: spec.rules[0].backendRef: unknown field; "
            "r.yaml: HTTPRoute default/r: spec.rules[0].matches[0].pth: unknown field "
            "(not applied)",
        )
    ]


def test_a_repeated_field_rejects_that_object_whatever_its_kind() -> None:
    text = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /a}
      path: {type: PathPrefix, value: /b}
---
apiVersion: v1
kind: Service
metadata: {name: s, name: t}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: ok}
  spec: {ports: [{port: 80}]}
- apiVersion: v1
  kind: Service
  metadata: {name: listed}
  spec: {ports: [{port: 80}], ports: [{port: 81}]}
"""
    resources = load_text(text, "d.yaml")
    assert resources.routes == []
    assert sorted(name for _, name in resources.services) == ["ok"]
    assert [r.message for r in resources.rejected] == [
        "d.yaml: HTTPRoute default/r: spec.rules[0].matches[0].path: duplicate field (not applied)",
        "d.yaml: Service default/t: metadata.name: duplicate field (not applied)",
        "d.yaml: Service default/listed: spec.ports: duplicate field (not applied)",
    ]


def test_yaml_merge_keys_are_no_repeated_fields() -> None:
    text = """
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  <<: {ports: [{port: 80}]}
  ports: [{port: 81}]
"""
    resources = load_text(text, "m.yaml")
    assert resources.rejected == []
    assert resources.services[("default", "s")].spec.ports[0].port == 81
