"""Cluster mode validates each object version once: a recompile re-validates only changes."""

from __future__ import annotations

from gateway.controller.validated import ValidatedObjects
from tests.fixtures.cluster_objects import gateway, http_route, service


def _versioned(obj: dict, version: str) -> dict:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": version}}


def test_only_new_object_versions_are_validated_and_rejections_stay_per_object() -> None:
    cache = ValidatedObjects("kubernetes")
    bad = http_route("bad", "/", "svc")
    bad["spec"]["rules"][0]["matches"][0]["path"]["type"] = 7  # not a string
    objects = [
        _versioned(gateway(8080), "1"),
        _versioned(service("svc"), "2"),
        _versioned(http_route("r1", "/", "svc"), "3"),
        _versioned(bad, "4"),
    ]
    first = cache.resources(objects)
    assert cache.validated == 4
    assert [r.metadata.name for r in first.routes] == ["r1"]
    (rejected,) = first.rejected
    assert rejected.name == "bad"
    assert "HTTPRoute default/bad: spec.rules[0].matches[0].path.type" in rejected.message

    objects[2] = _versioned(http_route("r1", "/v2", "svc"), "5")
    second = cache.resources(objects)
    assert cache.validated == 5  # only the changed route again
    assert second.routes[0].spec.rules[0].matches[0].path.value == "/v2"
    assert second.gateways[0] is first.gateways[0]  # the unchanged model is shared
    assert len(second.rejected) == 1

    cache.resources(objects[:1])
    cache.resources(objects)
    assert cache.validated == 8  # dropped objects are forgotten, then validated anew


def test_a_status_write_to_a_gateway_api_object_is_not_validated_again() -> None:
    cache = ValidatedObjects("kubernetes")
    route = _versioned(http_route("r1", "/", "svc"), "1")
    svc = _versioned(service("svc"), "2")
    first = cache.resources([route, svc])
    assert cache.validated == 2

    written = {**_versioned(route, "3"), "status": {"parents": []}}
    second = cache.resources([written, {**_versioned(svc, "4"), "status": {"x": 1}}])
    assert cache.validated == 3  # the Service again: core objects' statuses are read (Pods)
    assert second.routes[0] is first.routes[0]

    changed = _versioned(http_route("r1", "/v2", "svc"), "5")
    third = cache.resources([changed, _versioned(svc, "4")])
    assert cache.validated == 4
    assert third.routes[0].spec.rules[0].matches[0].path.value == "/v2"
