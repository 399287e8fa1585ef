"""GAMMA compile: routes with Service parents become per-destination routers with GAMMA status."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import yaml

from gateway.compile.compiler import compile_snapshot
from gateway.config.loader import load_text
from gateway.request import RequestHead
from gateway.snapshot import Snapshot
from gateway.waypoint.peer import MeshPeer
from mesh.identity import SpiffeId
from tests.fixtures.waypoint_mesh import ECHO_VIP, mesh_docs, route_docs


def compile_docs(docs: list[dict[str, Any]]) -> Snapshot:
    return compile_snapshot(load_text(yaml.safe_dump_all(docs), "test.yaml"), 1)


def route(name: str, parent: dict[str, Any], backend: str = "echo-v1") -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "parentRefs": [parent],
            "rules": [{"backendRefs": [{"name": backend, "port": 80}]}],
        },
    }


def parent_conditions(snapshot: Snapshot, kind: str, name: str) -> dict[str, tuple[str, str, str]]:
    status = next(s for s in snapshot.statuses if (s.kind, s.name) == (kind, name))
    return {c.type: (c.status, c.reason, c.message) for c in status.parents[0].conditions}


def test_a_route_attached_to_a_service_port_is_accepted_and_routes_its_destination() -> None:
    snapshot = compile_docs(mesh_docs(8080) + route_docs())
    assert snapshot.mesh is not None
    destination = snapshot.mesh.destination(ECHO_VIP, 80)
    assert destination is not None and destination.waypoint == "default/waypoint"
    conditions = parent_conditions(snapshot, "HTTPRoute", "echo")
    assert conditions["Accepted"][:2] == ("True", "Accepted")
    assert conditions["ResolvedRefs"][:2] == ("True", "ResolvedRefs")
    head = RequestHead("GET", "/", "", "echo", [("x-version", "v2")])
    rule = snapshot.routers[destination.key].match(head)
    assert rule is not None and rule.choices[0].backend is not None
    assert rule.choices[0].backend.destination.service_name == "echo-v2"
    endpoints = rule.choices[0].backend.endpoints  # type: ignore[attr-defined]
    assert [(e.address, e.port) for e in endpoints] == [("127.0.20.13", 8080)]


def test_without_a_route_a_destination_goes_to_its_service() -> None:
    snapshot = compile_docs(mesh_docs(8080))
    assert snapshot.mesh is not None
    destination = snapshot.mesh.destination(ECHO_VIP, 80)
    assert destination is not None
    rule = snapshot.routers[destination.key].match(RequestHead("POST", "/any", "", "x", []))
    assert rule is not None and rule.choices[0].backend is not None
    assert rule.choices[0].backend.destination.service_name == "echo"


def test_service_parents_that_do_not_resolve_are_not_accepted_and_say_why() -> None:
    docs = [
        *mesh_docs(8080),
        route("missing", {"group": "", "kind": "Service", "name": "nope"}),
        route("bad-port", {"group": "", "kind": "Service", "name": "echo", "port": 81}),
        route("consumer", {"group": "", "kind": "Service", "name": "echo", "namespace": "other"}),
    ]
    snapshot = compile_docs(docs)
    assert parent_conditions(snapshot, "HTTPRoute", "missing")["Accepted"] == (
        "False",
        "NoMatchingParent",
        "Service default/nope not found",
    )
    assert parent_conditions(snapshot, "HTTPRoute", "bad-port")["Accepted"] == (
        "False",
        "NoMatchingParent",
        "Service default/echo has no port 81",
    )
    assert parent_conditions(snapshot, "HTTPRoute", "consumer")["Accepted"][:2] == (
        "False",
        "NoMatchingParent",
    )


def test_service_parents_outside_waypoint_mode_name_what_is_missing() -> None:
    docs = [d for d in mesh_docs(8080) if d["kind"] != "Gateway"]
    snapshot = compile_docs([*docs, route("r", {"group": "", "kind": "Service", "name": "echo"})])
    assert snapshot.mesh is None
    accepted = parent_conditions(snapshot, "HTTPRoute", "r")["Accepted"]
    assert accepted[:2] == ("False", "NoMatchingParent")
    assert "istio-waypoint" in accepted[2]


def test_the_waypoint_listener_is_accepted_as_hbone() -> None:
    snapshot = compile_docs(mesh_docs(8080))
    conditions = parent_conditions(snapshot, "Gateway", "waypoint")
    assert conditions["Accepted"][0] == "True"
    assert conditions["Programmed"][0] == "True"
    assert snapshot.listeners == ()  # nothing for the HTTP listener manager to bind


def test_a_pod_with_a_workload_waypoint_is_a_destination_at_any_port() -> None:
    snapshot = compile_docs(mesh_docs(8080))
    assert snapshot.mesh is not None
    destination = snapshot.mesh.destination("127.0.20.12", 9999)  # echo-v1 uses the waypoint
    assert destination is not None and destination.workload is not None
    assert destination.workload.name == "echo-v1" and destination.service is None
    assert snapshot.mesh.destination("127.0.20.13", 9999) is None  # echo-v2 does not
    head = RequestHead("GET", "/", "", "x", [])
    head.peer = MeshPeer(
        SpiffeId("cluster.local", "default", "sleep"), "", None, destination, snapshot.mesh.state
    )
    rule = snapshot.routers[destination.key].match(head)
    assert rule is not None and rule.choices[0].backend is not None
    request = SimpleNamespace(head=head)  # what pick reads of the request
    picked = rule.choices[0].backend.pick(request, ())  # type: ignore[arg-type]
    assert (picked.address, picked.port) == ("127.0.20.12", 9999)  # type: ignore[union-attr]
