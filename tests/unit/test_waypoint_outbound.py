"""HBONE out: which upstream endpoints the waypoint tunnels and which it dials directly."""

from __future__ import annotations

from typing import Any

import yaml

from gateway.backends.base import Endpoint
from gateway.compile.compiler import compile_snapshot
from gateway.config.loader import load_text
from gateway.snapshot import SnapshotHolder
from gateway.waypoint.outbound import WaypointOutbound
from mesh.identity import SpiffeId
from tests.fixtures.waypoint_mesh import V1_IP, WAYPOINT_IP, mesh_docs, pod

WAYPOINT = SpiffeId("cluster.local", "default", "waypoint")


def outbound(*extra: dict[str, Any]) -> WaypointOutbound:
    resources = load_text(yaml.safe_dump_all([*mesh_docs(8080), *extra]), "t.yaml")
    holder = SnapshotHolder(compile_snapshot(resources, 1))
    # No certificate is needed to decide the route (only to open a tunnel).
    return WaypointOutbound(holder, None, lambda: WAYPOINT, lambda: WAYPOINT_IP, 15008)  # type: ignore[arg-type]


def test_an_enrolled_pod_is_reached_through_a_tunnel() -> None:
    assert outbound()(Endpoint(V1_IP, 8080)) is not None


def test_addresses_outside_the_mesh_are_dialled_directly() -> None:
    assert outbound()(Endpoint("127.0.0.1", 8080)) is None


def test_a_pod_outside_ambient_mode_is_dialled_directly() -> None:
    outside = pod(
        "legacy", "127.0.20.40", "node-b", "legacy", **{"istio.io/dataplane-mode": "none"}
    )
    assert outbound(outside)(Endpoint("127.0.20.40", 8080)) is None
