"""The ztunnel admits a workload's waypoint although an ALLOW policy names only the clients
(Istio's implicit ``istio_allow_waypoint_*`` policy); DENY policies still apply to it."""

from __future__ import annotations

from typing import Any

from mesh.identity import SpiffeId
from mesh.rbac import ConnectionAttrs
from mesh.state import parse_mesh
from tests.mesh.conftest import namespace, pod, policy, service
from tests.mesh.test_waypoint import labelled, waypoint_gateway, waypoint_pod

WAYPOINT = SpiffeId("cluster.local", "default", "waypoint")
SLEEP = SpiffeId("cluster.local", "default", "sleep")
OTHER = SpiffeId("cluster.local", "default", "other")


def docs(*policies: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        namespace("default"),
        pod("sleep", "127.0.30.1", "node-a", "sleep"),
        pod("other", "127.0.30.2", "node-a", "other"),
        pod("echo", "127.0.30.3", "node-b", "echo"),
        waypoint_pod("127.0.30.4", "node-a"),
        waypoint_gateway(),
        labelled(service("echo", "10.96.30.1", 80, 8080), **{"istio.io/use-waypoint": "waypoint"}),
        service("plain", "10.96.30.2", 80, 8080),
        *policies,
    ]


ONLY_SLEEP = policy(
    "only-sleep",
    "ALLOW",
    [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}],
)


def check(state_docs: list[dict[str, Any]], source: SpiffeId) -> bool:
    state = parse_mesh(state_docs)
    echo = state.workload_by_ip("127.0.30.3")
    assert echo is not None
    attrs = ConnectionAttrs(source, "127.0.30.4", echo.ip, 8080)
    decision = state.authorizer.check(
        echo.namespace, echo.labels, attrs, state.waypoint_identities(echo)
    )
    return decision.allowed


def test_the_waypoint_of_a_service_is_allowed_by_an_allow_policy_naming_clients() -> None:
    assert check(docs(ONLY_SLEEP), SLEEP)
    assert check(docs(ONLY_SLEEP), WAYPOINT)
    assert not check(docs(ONLY_SLEEP), OTHER)


def test_a_deny_policy_still_applies_to_the_waypoint() -> None:
    deny = policy(
        "no-waypoint",
        "DENY",
        [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/waypoint"]}}]}],
    )
    assert not check(docs(ONLY_SLEEP, deny), WAYPOINT)


def test_workloads_behind_no_waypoint_admit_no_waypoint_identity() -> None:
    state = parse_mesh(
        [
            d
            for d in docs(ONLY_SLEEP)
            if d["metadata"].get("name") != "echo" or d["kind"] != "Service"
        ]
    )
    echo = state.workload_by_ip("127.0.30.3")
    assert echo is not None
    assert state.waypoint_identities(echo) == frozenset()
