"""L7 AuthorizationPolicy in the waypoint: targets, actions, Istio's string forms, conditions."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gateway.compile.compiler import compile_snapshot
from gateway.config.loader import load_text
from gateway.request import RequestHead
from gateway.waypoint.authz import DENIED, AuthzStage, PolicyError, compile_policy, stage_for
from gateway.waypoint.peer import MeshDestination, MeshPeer
from mesh.identity import SpiffeId
from mesh.state import parse_mesh
from mesh.state.registry import Service
from tests.fixtures.waypoint_mesh import ECHO_VIP, mesh_docs

SLEEP = SpiffeId("cluster.local", "default", "sleep")
OTHER = SpiffeId("cluster.local", "other", "client")
WAYPOINT = ("default", "waypoint")
ECHO = ("default", "echo")

ECHO_SERVICE = Service("echo", "default", "10.96.0.10", (), {})


def policy(action: str, rules: Any, target: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "targetRefs": [target or {"kind": "Gateway", "name": "waypoint"}],
            "action": action,
            "rules": rules,
        },
    }


class Request:
    """What a stage sees: the head (with its mesh peer) and no body."""

    def __init__(self, head: RequestHead) -> None:
        self.head = head
        self.body = None


def request(
    path: str = "/",
    method: str = "GET",
    identity: SpiffeId = SLEEP,
    headers: list[tuple[str, str]] | None = None,
    port: int = 80,
    host: str = "echo.default",
) -> Request:
    head = RequestHead(method, path, "", host, headers or [], client_ip="127.0.20.11")
    destination = MeshDestination(1, (ECHO_VIP, port), ECHO_SERVICE, "default/waypoint")
    head.peer = MeshPeer(identity, "127.0.20.11", None, destination, parse_mesh([]))
    return Request(head)


def stage(*policies: dict[str, Any]) -> AuthzStage:
    compiled = [p for p in (compile_policy(x) for x in policies) if p is not None]
    built = stage_for(compiled, WAYPOINT, ECHO)
    assert built is not None
    return built


def allowed(s: AuthzStage, r: Request) -> bool:
    answer = s.apply(r)
    assert answer in (None, DENIED)
    return answer is None


def test_deny_on_path_prefix_for_one_principal() -> None:
    s = stage(
        policy(
            "DENY",
            [
                {
                    "from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}],
                    "to": [{"operation": {"paths": ["/admin*"]}}],
                }
            ],
        )
    )
    assert not allowed(s, request("/admin"))
    assert not allowed(s, request("/admin/users"))
    assert allowed(s, request("/"))
    assert allowed(s, request("/admin", identity=OTHER))


def test_allow_needs_a_match_and_uses_suffix_methods_and_namespaces() -> None:
    s = stage(
        policy(
            "ALLOW",
            [
                {
                    "from": [{"source": {"namespaces": ["default"]}}],
                    "to": [{"operation": {"methods": ["GET"], "paths": ["*.json"]}}],
                }
            ],
        )
    )
    assert allowed(s, request("/data.json"))
    assert not allowed(s, request("/data.json", method="POST"))
    assert not allowed(s, request("/data.xml"))
    assert not allowed(s, request("/data.json", identity=OTHER))


def test_an_allow_without_rules_allows_nothing_and_an_empty_rule_everything() -> None:
    assert not allowed(stage(policy("ALLOW", [])), request())
    assert allowed(stage(policy("ALLOW", [{}])), request())


def test_when_conditions_on_headers_principal_and_claims() -> None:
    s = stage(
        policy(
            "ALLOW",
            [
                {
                    "when": [
                        {"key": "request.headers[x-tenant]", "values": ["blue", "green*"]},
                        {"key": "source.principal", "notValues": ["*/sa/blocked"]},
                    ]
                }
            ],
        )
    )
    assert allowed(s, request(headers=[("X-Tenant", "green-2")]))
    assert not allowed(s, request(headers=[("x-tenant", "red")]))
    assert not allowed(s, request())
    claims = stage(
        policy("ALLOW", [{"when": [{"key": "request.auth.claims[group]", "values": ["a"]}]}])
    )
    assert not allowed(claims, request())  # no JWT: no claim is present


def test_ports_hosts_and_not_forms() -> None:
    s = stage(policy("DENY", [{"to": [{"operation": {"ports": ["8080"], "notHosts": ["echo*"]}}]}]))
    assert not allowed(s, request(port=8080, host="api.example"))
    assert allowed(s, request(port=8080))  # the host is echo.default: excluded
    assert allowed(s, request(port=80, host="api.example"))


def test_policies_target_the_waypoint_or_a_service() -> None:
    other = policy("DENY", [{}], target={"kind": "Service", "name": "other"})
    compiled = [compile_policy(other)]
    assert stage_for([p for p in compiled if p is not None], WAYPOINT, ECHO) is None
    mine = policy("DENY", [{}], target={"kind": "Service", "name": "echo"})
    assert not allowed(stage(mine), request())


def test_policies_without_target_refs_are_left_to_ztunnel() -> None:
    raw = policy("DENY", [{}])
    del raw["spec"]["targetRefs"]
    raw["spec"]["selector"] = {"matchLabels": {"app": "echo"}}
    assert compile_policy(raw) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"action": "CUSTOM"}, "spec.action 'CUSTOM' is not supported"),
        ({"rules": [{"to": [{"operation": {"ports": ["99999"]}}]}]}, "is not a port number"),
        ({"rules": [{"when": [{"key": "request.size", "values": ["1"]}]}]}, "is not a supported"),
        ({"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.300"]}}]}]}, "is not an IP"),
        ({"targetRefs": [{"kind": "Pod", "name": "x"}]}, "must be Gateway or Service"),
    ],
)
def test_invalid_policies_raise_errors_naming_the_field(spec: dict[str, Any], message: str) -> None:
    raw = policy("DENY", [{}])
    raw["spec"].update(spec)
    with pytest.raises(PolicyError, match=message):
        compile_policy(raw)


def test_an_invalid_policy_is_reported_and_closes_its_targets() -> None:
    bad = policy("ALLOW", [{"to": [{"operation": {"ports": ["http"]}}]}])
    resources = load_text(yaml.safe_dump_all([*mesh_docs(8080), bad]), "t.yaml")
    snapshot = compile_snapshot(resources, 1)
    status = next(s for s in snapshot.statuses if s.kind == "AuthorizationPolicy")
    accepted = status.parents[0].conditions[0]
    assert (accepted.status, accepted.reason) == ("False", "Invalid")
    assert "spec.rules[0].to[0].operation.ports" in accepted.message
    assert snapshot.mesh is not None
    destination = snapshot.mesh.destination(ECHO_VIP, 80)
    assert destination is not None
    (only,) = snapshot.pre_route[destination.key].for_host("echo")
    assert only.apply(request()) is DENIED  # type: ignore[arg-type]
