"""Pre-route policies at compile: targetRefs to Gateways and listeners, status, conflicts, order."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from gateway.compile import format_status
from gateway.request import RequestHead
from gateway.snapshot import Snapshot
from gateway.stages import PortStages, register_stage_kind
from tests.fixtures.plugin import HeaderStampStage, ModelHeaderStage
from tests.fixtures.plugins import plugin_sandbox, test_plugin  # noqa: F401  (fixtures)
from tests.fixtures.route_config import compile_yaml, head

pytestmark = pytest.mark.usefixtures("test_plugin")

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: ambient
  listeners:
  - {name: plain, port: 80, protocol: HTTP}
  - {name: api, port: 80, protocol: HTTP, hostname: api.example.com}
  - {name: wild, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - {name: deep, port: 80, protocol: HTTP, hostname: "*.eu.example.com"}
  - {name: other, port: 81, protocol: HTTP}
"""


def policy(
    name: str,
    targets: str = "[{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]",
    *,
    kind: str = "ModelHeader",
    namespace: str = "default",
    created: str = "",
    spec: str = "",
) -> str:
    stamp = f", creationTimestamp: '{created}'" if created else ""
    return (
        f"apiVersion: test.ambient.dev/v1alpha1\nkind: {kind}\n"
        f"metadata: {{name: {name}, namespace: {namespace}{stamp}}}\n"
        f"spec:\n  targetRefs: {targets}\n" + (f"  {spec}\n" if spec else "")
    )


def section(name: str, gateway: str = "gw") -> str:
    ref = f"group: gateway.networking.k8s.io, kind: Gateway, name: {gateway}, sectionName: {name}"
    return f"[{{{ref}}}]"


def build(*documents: str) -> Snapshot:
    return compile_yaml(GATEWAY, *documents, with_gateway=False, with_backends=False)


def accepted(snapshot: Snapshot, name: str, kind: str = "ModelHeader") -> list[tuple[str, ...]]:
    """(parent, status, reason, message) of a policy's Accepted condition per targetRef."""
    status = next(s for s in snapshot.statuses if (s.kind, s.name) == (kind, name))
    return [
        (p.parent, c.status, c.reason, c.message)
        for p in status.parents
        for c in p.conditions
        if c.type == "Accepted"
    ]


def names(stages: tuple[object, ...]) -> list[str]:
    return [type(s).__name__ for s in stages]


@dataclass
class Request:
    head: RequestHead
    body: bytes | None


def test_gateway_target_applies_to_every_listener_of_the_gateway() -> None:
    snapshot = build(policy("p"))
    assert accepted(snapshot, "p") == [("default/gw", "True", "Accepted", "")]
    assert sorted(snapshot.pre_route) == [80, 81]
    for port, host in ((80, "api.example.com"), (80, "x.example.com"), (80, "a.b"), (81, "x")):
        assert names(snapshot.pre_route[port].for_host(host)) == ["ModelHeaderStage"]
    assert snapshot.pre_route[80].needs_body


def test_stage_sets_a_header_that_matching_would_see() -> None:
    snapshot = build(policy("p", spec="header: X-Model"))
    (stage,) = snapshot.pre_route[80].for_host("example.org")
    request = Request(head("/v1/chat"), json.dumps({"model": "llama"}).encode())
    assert stage.apply(request) is None
    assert request.head.get("x-model") == "llama"


def test_section_name_targets_one_listener_and_host_selects_the_listener() -> None:
    snapshot = build(policy("p", section("api")))
    assert accepted(snapshot, "p") == [("default/gw/api", "True", "Accepted", "")]
    stages = snapshot.pre_route[80]
    assert names(stages.for_host("api.example.com")) == ["ModelHeaderStage"]
    # Other listeners of the port keep their own (empty) stages, even the wildcard around it.
    assert stages.for_host("www.example.com") == ()
    assert stages.for_host("example.org") == ()
    assert 81 not in snapshot.pre_route


def test_port_stages_pick_exact_then_most_specific_wildcard_then_catch_all() -> None:
    snapshot = build(
        policy("exact", section("api"), kind="HeaderStamp", spec="value: exact"),
        policy("wild", section("wild"), kind="HeaderStamp", spec="value: wild"),
        policy("deep", section("deep"), kind="HeaderStamp", spec="value: deep"),
        policy("plain", section("plain"), kind="HeaderStamp", spec="value: plain"),
    )
    stages = snapshot.pre_route[80]

    def stamp(host: str) -> str | None:
        chosen = stages.for_host(host)
        assert len(chosen) == 1 and isinstance(chosen[0], HeaderStampStage)
        return chosen[0].value

    assert stamp("api.example.com") == "exact"
    assert stamp("www.example.com") == "wild"
    assert stamp("a.eu.example.com") == "deep"
    assert stamp("eu.example.com") == "wild"  # "*.eu.example.com" needs one more label
    assert stamp("example.com") == "plain"
    assert stamp("elsewhere.org") == "plain"
    assert stages.uniform is None and not stages.needs_body


def test_same_stages_on_every_listener_of_a_port_need_no_lookup() -> None:
    snapshot = build(policy("p"))
    stages = snapshot.pre_route[80]
    assert stages.uniform is not None and names(stages.uniform) == ["ModelHeaderStage"]
    assert stages.for_host("anything.at.all") is stages.uniform


def test_without_a_catch_all_listener_an_unserved_host_gets_no_stages() -> None:
    stage = HeaderStampStage("x")
    stages = PortStages.of([("a.example.com", (stage,)), ("*.example.com", (stage,))])
    assert stages.uniform is None
    assert stages.for_host("a.example.com") == (stage,)
    assert stages.for_host("b.example.com") == (stage,)
    assert stages.for_host("example.org") == ()


@pytest.mark.parametrize(
    ("targets", "parent", "message"),
    [
        (
            "[{group: gateway.networking.k8s.io, kind: Gateway, name: missing}]",
            "default/missing",
            "Gateway default/missing not found",
        ),
        (section("nope"), "default/gw/nope", "Gateway default/gw has no listener named 'nope'"),
    ],
)
def test_missing_target_is_target_not_found(targets: str, parent: str, message: str) -> None:
    snapshot = build(policy("p", targets))
    assert accepted(snapshot, "p") == [(parent, "False", "TargetNotFound", message)]
    assert snapshot.pre_route == {}


def test_policies_are_namespace_local() -> None:
    snapshot = build(policy("p", namespace="apps"))
    assert accepted(snapshot, "p") == [
        ("apps/gw", "False", "TargetNotFound", "Gateway apps/gw not found")
    ]
    cross = build(
        policy("q", "[{group: gateway.networking.k8s.io, kind: Gateway, name: gw, namespace: x}]")
    )
    ((parent, status, reason, message),) = accepted(cross, "q")
    assert (parent, status, reason) == ("-", "False", "Invalid")
    assert message == (
        "spec.targetRefs[0].namespace: a policy targets objects in its own namespace (default) only"
    )


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ("[]", "spec.targetRefs: at least one target is required"),
        ("[{kind: Gateway, name: gw}]", "spec.targetRefs[0].group: required field is missing"),
        (
            "[{group: gateway.networking.k8s.io, kind: Gateway, name: gw}, {group: x, kind: Y}]",
            "spec.targetRefs[1].name: required field is missing",
        ),
    ],
)
def test_malformed_target_refs_are_invalid_with_the_field_path(targets: str, message: str) -> None:
    snapshot = build(policy("p", targets))
    assert accepted(snapshot, "p") == [("-", "False", "Invalid", message)]


def test_a_target_kind_other_than_gateway_is_invalid() -> None:
    snapshot = build(policy("p", "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]"))
    assert accepted(snapshot, "p") == [
        (
            "default/r",
            "False",
            "Invalid",
            "target kind gateway.networking.k8s.io/HTTPRoute is not supported (only Gateway)",
        )
    ]


def test_factory_value_error_is_invalid_with_its_message_and_builds_no_stage() -> None:
    snapshot = build(policy("p", spec="header: 'bad header'"))
    assert accepted(snapshot, "p") == [
        ("default/gw", "False", "Invalid", "spec.header: 'bad header' is not a valid header name")
    ]
    assert snapshot.pre_route == {}


def test_older_policy_of_a_kind_wins_a_listener_and_the_other_is_conflicted() -> None:
    snapshot = build(
        policy("young", section("api"), created="2024-06-01T00:00:00Z", spec="header: X-Young"),
        policy("old", section("api"), created="2024-01-01T00:00:00Z", spec="header: X-Old"),
    )
    assert accepted(snapshot, "old") == [("default/gw/api", "True", "Accepted", "")]
    assert accepted(snapshot, "young") == [
        (
            "default/gw/api",
            "False",
            "Conflicted",
            "an older ModelHeader applies to every targeted listener: "
            "default/gw/api (to default/old)",
        )
    ]
    (stage,) = snapshot.pre_route[80].for_host("api.example.com")
    assert isinstance(stage, ModelHeaderStage) and stage.header == "X-Old"


def test_same_age_conflict_goes_to_namespace_then_name() -> None:
    snapshot = build(policy("b", spec="header: X-B"), policy("a", spec="header: X-A"))
    assert accepted(snapshot, "a")[0][1:3] == ("True", "Accepted")
    assert accepted(snapshot, "b")[0][1:3] == ("False", "Conflicted")


def test_a_policy_losing_some_listeners_still_applies_on_the_others() -> None:
    snapshot = build(
        policy("old", section("api"), created="2024-01-01T00:00:00Z", spec="header: X-Old"),
        policy("young", created="2024-06-01T00:00:00Z", spec="header: X-Young"),
    )
    ((parent, status, reason, message),) = accepted(snapshot, "young")
    assert (parent, status, reason) == ("default/gw", "True", "Accepted")
    assert message == "not applied on listeners default/gw/api (to default/old)"

    def header(host: str, port: int = 80) -> str:
        (stage,) = snapshot.pre_route[port].for_host(host)
        assert isinstance(stage, ModelHeaderStage)
        return stage.header

    assert header("api.example.com") == "X-Old"
    assert header("www.example.com") == "X-Young"
    assert header("x", 81) == "X-Young"


def test_kinds_on_one_listener_run_in_registration_order() -> None:
    snapshot = build(
        policy("stamp", kind="HeaderStamp", spec="value: s"),
        policy("model"),
    )
    assert names(snapshot.pre_route[80].for_host("x")) == ["ModelHeaderStage", "HeaderStampStage"]
    assert accepted(snapshot, "stamp", "HeaderStamp")[0][1] == "True"


def test_a_kind_registered_later_runs_later() -> None:
    register_stage_kind("late.example.dev", "Late", lambda raw, ctx: HeaderStampStage("late"))
    late = policy("late", kind="Late").replace("test.ambient.dev/v1alpha1", "late.example.dev/v1")
    snapshot = build(late, policy("stamp", kind="HeaderStamp", spec="value: s"))
    chosen = snapshot.pre_route[80].for_host("x")
    assert [s.value for s in chosen if isinstance(s, HeaderStampStage)] == ["s", "late"]


def test_statuses_show_in_check_table_and_config_dump() -> None:
    snapshot = build(
        policy("p", section("api")),
        policy("lost", "[{group: gateway.networking.k8s.io, kind: Gateway, name: nope}]"),
    )
    lines = {" ".join(line.split()) for line in format_status(snapshot.statuses).splitlines()}
    assert "ModelHeader default/p default/gw/api Accepted=True(Accepted)" in lines
    assert (
        "ModelHeader default/lost default/nope "
        "Accepted=False(TargetNotFound): Gateway default/nope not found"
    ) in lines
    dump = snapshot.dump
    (view,) = [p for p in dump["policies"] if p["name"] == "p"]
    assert view["targets"] == [
        {
            "target": "default/gw/api",
            "appliedTo": ["default/gw/api"],
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""}
            ],
        }
    ]
    assert view["stage"] == {
        "type": "ModelHeaderStage",
        "header": "X-Gateway-Model-Name",
        "body_field": "model",
        "needs_body": True,
    }
    (port,) = dump["preRoute"]
    assert port["port"] == 80 and port["needsBody"] is True
    assert {"hostname": "api.example.com", "stages": ["ModelHeader default/p"]} in port["listeners"]
    kinds = [(s["kind"], s["name"]) for s in dump["statuses"]]
    assert ("ModelHeader", "p") in kinds and ("ModelHeader", "lost") in kinds


def test_no_policies_means_no_pre_route_and_valid_status() -> None:
    snapshot = build()
    assert snapshot.pre_route == {}
    assert all(s.valid for s in snapshot.statuses)
