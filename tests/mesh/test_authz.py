"""The L4 authorization matrix: translation and evaluation exactly as ztunnel does it."""

from __future__ import annotations

from typing import Any

import pytest

from mesh.errors import ConfigError
from mesh.identity import SpiffeId
from mesh.rbac import Authorizer, ConnectionAttrs, compile_policy
from mesh.rbac.authz import Scope

SLEEP = SpiffeId("cluster.local", "default", "sleep")
OTHER = SpiffeId("cluster.local", "other", "client")
LABELS = {"app": "echo"}


def conn(
    ident: SpiffeId | None = SLEEP, src: str = "10.0.0.1", dst: str = "10.0.0.2", port: int = 8080
) -> ConnectionAttrs:
    return ConnectionAttrs(ident, src, dst, port)


def pol(
    action: str, rules: Any, ns: str = "default", name: str = "p", **spec: Any
) -> dict[str, Any]:
    return {
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns, **spec.pop("meta", {})},
        "spec": {"action": action, "rules": rules, **spec},
    }


def allowed(policies: list[dict[str, Any]], c: ConnectionAttrs, ns: str = "default") -> bool:
    compiled = [p for p in (compile_policy(x) for x in policies) if p is not None]
    return Authorizer(compiled).check(ns, LABELS, c).allowed


def test_no_policies_allows() -> None:
    assert allowed([], conn())


def test_allow_without_rules_allows_nothing() -> None:
    assert not allowed([pol("ALLOW", None)], conn())
    assert not allowed([pol("ALLOW", [])], conn())


def test_empty_rule_allows_all() -> None:
    assert allowed([pol("ALLOW", [{}])], conn())
    assert allowed([pol("ALLOW", [{}])], conn(ident=None))


def test_deny_first() -> None:
    policies = [pol("ALLOW", [{}], name="a"), pol("DENY", [{}], name="d")]
    assert not allowed(policies, conn())


def test_deny_without_rules_never_matches() -> None:
    assert allowed([pol("DENY", [])], conn())


def test_other_namespace_policy_is_not_a_candidate() -> None:
    assert allowed([pol("DENY", [{}], ns="other")], conn())
    assert not allowed([pol("DENY", [{}], ns="istio-system")], conn()), "root namespace is global"


def test_selector_scope() -> None:
    p = pol("DENY", [{}], selector={"matchLabels": {"app": "echo"}})
    assert not allowed([p], conn())
    miss = pol("DENY", [{}], selector={"matchLabels": {"app": "db"}})
    assert allowed([miss], conn())
    compiled = compile_policy(p)
    assert compiled is not None and compiled.scope is Scope.WORKLOAD_SELECTOR


def test_allow_needs_a_match() -> None:
    p = pol(
        "ALLOW", [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}]
    )
    assert allowed([p], conn())
    assert not allowed([p], conn(ident=OTHER))
    assert not allowed([p], conn(ident=None))


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [
        ("cluster.local/ns/default/sa/sleep", True),
        ("*", True),
        ("*/sa/sleep", True),
        ("cluster.local/ns/default/*", True),
        ("*/sa/other", False),
        ("spiffe://cluster.local/ns/default/sa/sleep", False),
    ],
)
def test_principal_string_match(pattern: str, ok: bool) -> None:
    p = pol("ALLOW", [{"from": [{"source": {"principals": [pattern]}}]}])
    assert allowed([p], conn()) is ok


def test_presence_does_not_match_plaintext() -> None:
    p = pol("ALLOW", [{"from": [{"source": {"principals": ["*"]}}]}])
    assert not allowed([p], conn(ident=None))
    strict = pol("DENY", [{"from": [{"source": {"notPrincipals": ["*"]}}]}])
    assert not allowed([strict], conn(ident=None))
    assert allowed([strict], conn())


def test_not_principals_and_namespaces() -> None:
    p = pol("DENY", [{"from": [{"source": {"notNamespaces": ["default"]}}]}])
    assert allowed([p], conn())
    assert not allowed([p], conn(ident=OTHER))
    q = pol("ALLOW", [{"from": [{"source": {"namespaces": ["other"]}}]}])
    assert allowed([q], conn(ident=OTHER))
    assert not allowed([q], conn())
    r = pol("ALLOW", [{"from": [{"source": {"notPrincipals": ["*/sa/sleep"]}}]}])
    assert not allowed([r], conn())
    assert allowed([r], conn(ident=OTHER))


def test_ip_blocks() -> None:
    p = pol("ALLOW", [{"from": [{"source": {"ipBlocks": ["10.0.0.0/24"]}}]}])
    assert allowed([p], conn(src="10.0.0.9"))
    assert not allowed([p], conn(src="10.0.1.9"))
    single = pol("ALLOW", [{"from": [{"source": {"ipBlocks": ["10.0.0.1"]}}]}])
    assert allowed([single], conn(src="10.0.0.1"))
    assert not allowed([single], conn(src="10.0.0.2"))
    q = pol("DENY", [{"from": [{"source": {"notIpBlocks": ["10.0.0.0/24"]}}]}])
    assert allowed([q], conn(src="10.0.0.9"))
    assert not allowed([q], conn(src="192.168.0.1"))


def test_ports() -> None:
    p = pol("ALLOW", [{"to": [{"operation": {"ports": ["8080", 9090]}}]}])
    assert allowed([p], conn(port=8080))
    assert allowed([p], conn(port=9090))
    assert not allowed([p], conn(port=80))
    q = pol("DENY", [{"to": [{"operation": {"notPorts": ["8080"]}}]}])
    assert allowed([q], conn(port=8080))
    assert not allowed([q], conn(port=81))


def test_fields_and_clauses_are_anded_entries_ored() -> None:
    rule = {
        "from": [
            {"source": {"namespaces": ["default"], "ipBlocks": ["10.0.0.0/8"]}},
            {"source": {"principals": ["cluster.local/ns/other/sa/client"]}},
        ],
        "to": [{"operation": {"ports": ["8080"]}}],
    }
    p = pol("ALLOW", [rule])
    assert allowed([p], conn())
    assert not allowed([p], conn(src="192.168.1.1"))  # AND within a source
    assert allowed([p], conn(ident=OTHER, src="192.168.1.1"))  # OR across sources
    assert not allowed([p], conn(port=81))  # AND across from/to


def test_rules_are_ored() -> None:
    p = pol(
        "ALLOW",
        [
            {"to": [{"operation": {"ports": ["1"]}}]},
            {"from": [{"source": {"namespaces": ["default"]}}]},
        ],
    )
    assert allowed([p], conn(port=8080))
    assert not allowed([p], conn(ident=OTHER, port=8080))


def test_l7_allow_rule_is_dropped() -> None:
    p = pol("ALLOW", [{"to": [{"operation": {"methods": ["GET"], "ports": ["8080"]}}]}])
    assert not allowed([p], conn())
    compiled = compile_policy(p)
    assert compiled is not None and compiled.rules == ()


def test_l7_deny_rule_keeps_l4_fields() -> None:
    p = pol("DENY", [{"to": [{"operation": {"methods": ["GET"], "ports": ["8080"]}}]}])
    assert not allowed([p], conn(port=8080))
    assert allowed([p], conn(port=81))


def test_l7_only_deny_never_fires() -> None:
    p = pol("DENY", [{"to": [{"operation": {"paths": ["/admin"]}}]}])
    assert allowed([p], conn())
    q = pol("DENY", [{"from": [{"source": {"requestPrincipals": ["*"]}}]}])
    assert allowed([q], conn())
    r = pol("DENY", [{"when": [{"key": "request.headers[x]", "values": ["y"]}]}])
    assert allowed([r], conn())


def test_when_conditions() -> None:
    p = pol("ALLOW", [{"when": [{"key": "source.namespace", "values": ["default"]}]}])
    assert allowed([p], conn())
    assert not allowed([p], conn(ident=OTHER))
    q = pol("DENY", [{"when": [{"key": "destination.port", "notValues": ["8080"]}]}])
    assert allowed([q], conn(port=8080))
    assert not allowed([q], conn(port=1))
    r = pol("ALLOW", [{"when": [{"key": "source.ip", "values": ["10.0.0.0/8"]}]}])
    assert allowed([r], conn())
    assert not allowed([r], conn(src="192.168.0.1"))


def test_service_accounts() -> None:
    p = pol("ALLOW", [{"from": [{"source": {"serviceAccounts": ["sleep"]}}]}])
    assert allowed([p], conn())
    q = pol("ALLOW", [{"from": [{"source": {"serviceAccounts": ["other/client"]}}]}])
    assert allowed([q], conn(ident=OTHER))
    assert not allowed([q], conn())


def test_dry_run_only_logs() -> None:
    p = pol("DENY", [{}], meta={"annotations": {"istio.io/dry-run": "true"}})
    assert allowed([p], conn())


def test_ignored_actions_and_waypoint_policies() -> None:
    assert compile_policy(pol("CUSTOM", [{}])) is None
    assert compile_policy(pol("AUDIT", [{}])) is None
    assert compile_policy(pol("DENY", [{}], targetRefs=[{"kind": "Service", "name": "x"}])) is None


def test_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"default/p: spec.rules\[0\].from\[0\].source.ipBlocks"):
        compile_policy(pol("ALLOW", [{"from": [{"source": {"ipBlocks": ["nope"]}}]}]))
    with pytest.raises(ConfigError, match="ports"):
        compile_policy(pol("ALLOW", [{"to": [{"operation": {"ports": ["70000"]}}]}]))
    with pytest.raises(ConfigError, match="action"):
        compile_policy(pol("MAYBE", [{}]))
