"""mesh.yaml compiled into the workload store."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.errors import ConfigError
from mesh.identity import SpiffeId
from mesh.state import load_mesh, parse_mesh
from tests.mesh.conftest import namespace, pod, service

SLICE = {
    "apiVersion": "discovery.k8s.io/v1",
    "kind": "EndpointSlice",
    "metadata": {
        "name": "api-1",
        "namespace": "default",
        "labels": {"kubernetes.io/service-name": "api"},
    },
    "ports": [{"name": "http", "port": 9000}],
    "endpoints": [
        {"addresses": ["10.0.0.5"], "conditions": {"ready": True}},
        {"addresses": ["10.0.0.6"], "conditions": {"ready": False}},
    ],
}
API = {
    "kind": "Service",
    "metadata": {"name": "api", "namespace": "default", "labels": {"istio.io/use-waypoint": "wp"}},
    "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "http", "port": 80, "targetPort": 9000}]},
}


def test_workloads_and_enrolment() -> None:
    state = parse_mesh(
        [
            namespace("default"),
            namespace("legacy", ambient=False),
            pod("a", "10.0.0.1", "n1", "sleep"),
            pod("b", "10.0.0.2", "n2", "echo", ns="legacy"),
        ],
        "example.org",
    )
    a = state.workload_by_ip("10.0.0.1")
    assert (
        a is not None and a.enrolled and a.identity == SpiffeId("example.org", "default", "sleep")
    )
    b = state.workload_by_ip("10.0.0.2")
    assert b is not None and not b.enrolled
    assert [w.name for w in state.node_workloads("n1")] == ["a"]
    assert state.nodes() == {"n1", "n2"}


def test_service_endpoints_from_slices_and_selector() -> None:
    state = parse_mesh(
        [
            namespace("default"),
            pod("echo", "10.0.0.9", "n", "echo"),
            API,
            SLICE,
            service("echo", "10.96.0.2", 80, 7000),
        ]
    )
    api = state.service_by_vip("10.96.0.1")
    assert api is not None and api.waypoint is None  # "wp" is not defined: traffic goes direct
    assert [(e.ip, e.port) for e in api.endpoints[80]] == [("10.0.0.5", 9000)]
    echo = state.service("echo", "default")
    assert echo is not None and [(e.ip, e.port) for e in echo.endpoints[80]] == [("10.0.0.9", 7000)]
    assert echo.hostname == "echo.default.svc.cluster.local"


def test_list_documents_and_policies(tmp_path: Path) -> None:
    f = tmp_path / "mesh.yaml"
    f.write_text(
        "kind: List\nitems:\n- kind: Namespace\n  metadata: {name: default}\n"
        "---\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: default}\n"
        "spec: {action: DENY, rules: [{}]}\n"
    )
    state = load_mesh(f)
    assert [p.key for p in state.policies] == ["default/deny"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"kind": "Pod", "metadata": {"name": "x"}, "spec": {}},
            "Pod default/x: status.podIP is required",
        ),
        ({"kind": "Pod", "metadata": {"name": "x"}, "status": {"podIP": "nope"}}, "not an IP"),
        (
            {"kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{}]}},
            r"spec.ports\[0\].port",
        ),
    ],
)
def test_errors_name_object_and_field(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_mesh([doc])


def test_duplicate_pod_ip() -> None:
    with pytest.raises(ConfigError, match="also used by"):
        parse_mesh([pod("a", "10.0.0.1", "n", "a"), pod("b", "10.0.0.1", "n", "b")])


def test_invalid_yaml(tmp_path: Path) -> None:
    f = tmp_path / "mesh.yaml"
    f.write_text("kind: [")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_mesh(f)


def test_pods_a_cluster_has_that_are_not_workloads_are_left_out() -> None:
    """On the node's network (sharing its IP), finished (its IP reused), pending without an IP:
    none is a workload, and none fails the state as a duplicate or missing IP would."""
    host_a, host_b = pod("kube-proxy", "10.1.0.1", "n", "kp"), pod("ztunnel", "10.1.0.1", "n", "z")
    for p in (host_a, host_b):
        p["spec"]["hostNetwork"] = True
    done = pod("job-1", "10.0.0.1", "n", "job")
    done["status"]["phase"] = "Succeeded"
    failed = pod("job-2", "10.0.0.1", "n", "job")
    failed["status"]["phase"] = "Failed"
    pending = pod("starting", "", "n", "s")
    pending["status"] = {"phase": "Pending"}
    running = pod("web", "10.0.0.1", "n", "web")
    running["status"]["phase"] = "Running"
    state = parse_mesh([host_a, host_b, done, failed, pending, running])
    assert [w.name for w in state.workloads] == ["web"]
    assert state.workload_by_ip("10.0.0.1") is not None
    # A Pod written by hand without an IP (no phase) is still an error naming the field.
    with pytest.raises(ConfigError, match=r"status\.podIP is required"):
        parse_mesh([pod("x", "", "n", "x")])
