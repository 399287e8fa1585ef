"""Loading and validating GRPCRoutes: config errors name the field; compile judges rules."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_text
from gateway.config.models import GrpcRoute
from tests.fixtures.grpc_config import ECHO, grpc_head, grpc_route_yaml
from tests.fixtures.route_config import compile_yaml


def load_error(rules: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(grpc_route_yaml("g", rules), "grpc.yaml")
    return str(caught.value)


def test_grpcroute_loads_with_defaults() -> None:
    resources = load_text(
        grpc_route_yaml("g", f"- matches: [{{method: {{service: {ECHO}}}}}]"), "grpc.yaml"
    )
    [route] = resources.grpc_routes
    assert isinstance(route, GrpcRoute)
    method = route.spec.rules[0].matches[0].method
    assert method is not None and (method.type, method.service, method.method) == (
        "Exact",
        ECHO,
        None,
    )
    assert resources.find("gateway.networking.k8s.io", "GRPCRoute", "default", "g") is not None


def test_empty_matches_list_matches_every_grpc_request() -> None:
    resources = load_text(grpc_route_yaml("g", "- matches: []"), "grpc.yaml")
    (match,) = resources.grpc_routes[0].spec.rules[0].matches
    assert (match.method, match.headers) == (None, [])


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            "- matches: [{method: {type: Exact}}]",
            "grpc.yaml: GRPCRoute default/g: spec.rules[0].matches[0].method: "
            "one or both of service and method must be set",
        ),
        (
            "- matches: [{method: {service: 'bad/service'}}]",
            "spec.rules[0].matches[0].method: service: 'bad/service' is not a valid gRPC",
        ),
        (
            "- matches: [{method: {service: svc.Echo, method: '9lives'}}]",
            "spec.rules[0].matches[0].method: method: '9lives' is not a valid gRPC method",
        ),
        (
            "- matches: [{headers: [{name: 'bad name', value: x}]}]",
            "spec.rules[0].matches[0].headers[0].name",
        ),
        (
            "- matches: [{headers: [{name: x, value: ''}]}]",
            "spec.rules[0].matches[0].headers[0].value",
        ),
        (
            "- name: same\n- name: same",
            "spec.rules: rule names must be unique within the route",
        ),
        (
            "- backendRefs: [{name: v1}]",
            "spec.rules[0].backendRefs[0]: port is required for a Service reference",
        ),
    ],
)
def test_invalid_grpcroute_is_a_config_error_naming_the_field(rules: str, expected: str) -> None:
    assert expected in load_error(rules)


def test_regular_expression_values_skip_the_exact_name_patterns() -> None:
    resources = load_text(
        grpc_route_yaml("g", "- matches: [{method: {type: RegularExpression, service: 'a.*/?'}}]"),
        "grpc.yaml",
    )
    assert len(resources.grpc_routes) == 1


def test_only_v1_grpcroute_is_served() -> None:
    text = grpc_route_yaml("g", "- {}").replace("/v1\n", "/v1alpha3\n", 1)
    with pytest.raises(ConfigError, match="GRPCRoute default/g: apiVersion"):
        load_text(text, "grpc.yaml")


@pytest.mark.parametrize(
    ("rules", "reason", "message_part"),
    [
        (
            "- matches: [{method: {type: RegularExpression, service: '(unclosed'}}]",
            "UnsupportedValue",
            "spec.rules[0].matches[0].method.service: invalid regular expression",
        ),
        (
            "- matches: [{method: {type: Prefix, service: svc.Echo}}]",
            "UnsupportedValue",
            "spec.rules[0].matches[0].method.type: unsupported value 'Prefix'",
        ),
        (
            "- matches: [{headers: [{type: Glob, name: a, value: b}]}]",
            "UnsupportedValue",
            "spec.rules[0].matches[0].headers[0].type: unsupported value 'Glob'",
        ),
        (
            "- filters: [{type: RequestRedirect, requestRedirect: {statusCode: 301}}]",
            "UnsupportedValue",
            "spec.rules[0].filters[0].type: filter type 'RequestRedirect' is not supported",
        ),
        (
            "- filters: [{type: URLRewrite, urlRewrite: {hostname: x.test}}]",
            "UnsupportedValue",
            "filter type 'URLRewrite' is not supported on GRPCRoute",
        ),
        (
            "- backendRefs:\n"
            "  - name: v1\n    port: 8080\n"
            "    filters: [{type: CORS, cors: {allowOrigins: ['*']}}]",
            "UnsupportedValue",
            "spec.rules[0].backendRefs[0].filters[0].type: filter type 'CORS'",
        ),
        (
            "- filters:\n"
            "  - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [a]}}\n"
            "  - {type: RequestHeaderModifier, requestHeaderModifier: {remove: [b]}}",
            "IncompatibleFilters",
            "RequestHeaderModifier may appear only once",
        ),
    ],
)
def test_rule_the_gateway_cannot_implement_is_not_accepted(
    rules: str, reason: str, message_part: str
) -> None:
    snapshot = compile_yaml(grpc_route_yaml("g", rules))
    route = next(s for s in snapshot.statuses if s.kind == "GRPCRoute")
    accepted = route.parents[0].conditions[0]
    assert (accepted.type, accepted.status, accepted.reason) == ("Accepted", "False", reason)
    assert message_part in accepted.message
    assert snapshot.routers[80].match(grpc_head(ECHO, "Echo")) is None


def test_one_bad_rule_is_dropped_and_reported_partially_invalid() -> None:
    snapshot = compile_yaml(
        grpc_route_yaml(
            "g",
            f"""
            - matches: [{{method: {{service: {ECHO}, method: Echo}}}}]
              backendRefs: [{{name: v1, port: 8080}}]
            - matches: [{{method: {{type: Fuzzy, method: EchoTwo}}}}]
              backendRefs: [{{name: v2, port: 8080}}]
            """,
        )
    )
    route = next(s for s in snapshot.statuses if s.kind == "GRPCRoute")
    conditions = {c.type: c for c in route.parents[0].conditions}
    assert conditions["Accepted"].status == "True"
    assert conditions["PartiallyInvalid"].message.startswith("Dropped Rule: spec.rules[1]")
    assert snapshot.routers[80].match(grpc_head(ECHO, "Echo")) is not None
