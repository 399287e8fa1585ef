"""A compile reusing the previous one's routes (cluster mode) equals a compile from scratch.

Random sequences of changes (routes added, changed and deleted; Services, EndpointSlices and a
ReferenceGrant changed) are applied as the controller applies them: objects with a new
resourceVersion each change, validated once per version. After every change the incremental
compile's dump, statuses and routing decisions are compared with a from-scratch compile.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from gateway.compile import compile_snapshot
from gateway.compile.memo import CompileMemo
from gateway.config import load_objects
from gateway.controller.validated import ValidatedObjects
from gateway.snapshot import Snapshot
from tests.fixtures.route_config import head

GATEWAY_API = "gateway.networking.k8s.io/v1"
Obj = dict[str, Any]
Key = tuple[str, str, str]  # (kind, namespace, name)

HOSTS = ["a.example.com", "x.example.com", "b.test", "other.org"]
PATHS = ["/", "/a", "/a/b", "/c", "/cx"]
STAMPS = ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"]


class World:
    """The objects in the API server, each with a resourceVersion bumped on every change."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.version = 0
        self.objects: dict[Key, Obj] = {}
        self.put(
            {
                "apiVersion": GATEWAY_API,
                "kind": "GatewayClass",
                "metadata": {"name": "ambient"},
                "spec": {"controllerName": "ambient.dev/gateway-controller"},
            }
        )
        self.put(
            {
                "apiVersion": GATEWAY_API,
                "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "default"},
                "spec": {
                    "gatewayClassName": "ambient",
                    "listeners": [
                        {
                            "name": "http",
                            "port": 80,
                            "protocol": "HTTP",
                            "allowedRoutes": {"namespaces": {"from": "All"}},
                        },
                        {
                            "name": "api",
                            "port": 8080,
                            "protocol": "HTTP",
                            "hostname": "*.example.com",
                        },
                    ],
                },
            }
        )
        for namespace in ("default", "other"):
            self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        for namespace, name in [("default", f"svc{i}") for i in range(3)] + [("other", "far")]:
            self.service(namespace, name)
            self.slice(namespace, name)
        self.grant(True)
        for i in range(8):
            self.route(f"r{i}")

    def put(self, obj: Obj) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj

    def delete(self, key: Key) -> None:
        self.objects.pop(key, None)

    def service(self, namespace: str, name: str) -> None:
        port = {"name": "http", "port": 80, "targetPort": "http"}
        ports = [port] if self.rng.random() < 0.8 else [dict(port, port=81)]
        self.put(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"ports": ports},
            }
        )

    def slice(self, namespace: str, name: str) -> None:
        count = self.rng.randint(0, 3)
        self.put(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-a",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [f"10.0.{len(name)}.{i + 1}"]} for i in range(count)],
                "ports": [{"name": "http", "port": 9000 + count}],
            }
        )

    def grant(self, present: bool) -> None:
        key = ("ReferenceGrant", "other", "routes")
        if not present:
            self.delete(key)
            return
        self.put(
            {
                "apiVersion": "gateway.networking.k8s.io/v1beta1",
                "kind": "ReferenceGrant",
                "metadata": {"name": "routes", "namespace": "other"},
                "spec": {
                    "from": [
                        {"group": "gateway.networking.k8s.io", "kind": k, "namespace": "default"}
                        for k in ("HTTPRoute", "GRPCRoute")
                    ],
                    "to": [{"group": "", "kind": "Service"}],
                },
            }
        )

    def route(self, name: str) -> None:
        rng = self.rng
        grpc = rng.random() < 0.15
        parent: Obj = {"name": "gw", "namespace": "default"}
        if rng.random() < 0.3:
            parent["sectionName"] = rng.choice(["http", "api", "missing"])
        rules = []
        for i in range(rng.randint(1, 2)):
            backend = rng.choice(
                [
                    {"name": "svc0", "port": 80},
                    {"name": "svc1", "port": 80},
                    {"name": "svc2", "port": 80},
                    {"name": "far", "namespace": "other", "port": 80},
                    {"name": "gone", "port": 80},
                ]
            )
            rule: Obj = {"backendRefs": [backend]}
            if grpc:
                rule["matches"] = [{"method": {"service": rng.choice(["a.A", "b.B"])}}]
            else:
                path_type = rng.choice(["PathPrefix", "Exact"])
                match: Obj = {"path": {"type": path_type, "value": rng.choice(PATHS)}}
                if rng.random() < 0.2:
                    match["method"] = "POST"
                if rng.random() < 0.2:
                    match["headers"] = [{"name": "x-v", "value": "1"}]
                rule["matches"] = [match]
            if rng.random() < 0.3:
                rule["name"] = f"rule{i}"
            rules.append(rule)
        self.put(
            {
                "apiVersion": GATEWAY_API,
                "kind": "GRPCRoute" if grpc else "HTTPRoute",
                "metadata": {
                    "name": name,
                    "namespace": rng.choice(["default", "default", "other"]),
                    "creationTimestamp": rng.choice(STAMPS),
                },
                "spec": {
                    "parentRefs": [parent],
                    "hostnames": rng.sample(HOSTS, rng.randint(0, 2)),
                    "rules": rules,
                },
            }
        )

    def change(self) -> bool:
        """One random change; True when only routes changed."""
        rng = self.rng
        routes = [k for k in self.objects if k[0] in ("HTTPRoute", "GRPCRoute")]
        roll = rng.random()
        if roll < 0.3:
            self.route(f"r{rng.randint(0, 30)}")  # a new route or a changed one
        elif roll < 0.5 and routes:
            self.delete(rng.choice(routes))
        elif roll < 0.6 and routes:
            # The same route moved to another kind: a delete and an add in one compile.
            kind, namespace, name = rng.choice(routes)
            self.delete((kind, namespace, name))
            self.route(name)
        elif roll < 0.75:
            services = [("default", "svc0"), ("default", "svc1"), ("other", "far")]
            namespace, name = rng.choice(services)
            if ("Service", namespace, name) in self.objects and rng.random() < 0.3:
                self.delete(("Service", namespace, name))
            else:
                self.service(namespace, name)
            return False
        elif roll < 0.9:
            self.slice(*rng.choice([("default", "svc0"), ("default", "svc2"), ("other", "far")]))
            return False
        else:
            self.grant(("ReferenceGrant", "other", "routes") not in self.objects)
            return False
        return True

    def listed(self) -> list[Obj]:
        """The objects in an order that differs between calls, as informers' caches may."""
        objects = list(self.objects.values())
        self.rng.shuffle(objects)
        return objects


def routing(snapshot: Snapshot) -> list[tuple[Any, ...]]:
    """What every port's router picks for a grid of requests."""
    out: list[tuple[Any, ...]] = []
    for port, router in sorted(snapshot.routers.items()):
        for host in HOSTS:
            for path in [*PATHS, "/a.A/Call", "/b.B/Call"]:
                for method in ("GET", "POST"):
                    for headers in ({}, {"x-v": "1"}):
                        rule = router.match(head(path, host=host, method=method, headers=headers))
                        out.append((port, host, path, method, bool(headers), rule and rule.ref))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_incremental_compile_equals_full_compile(seed: int) -> None:
    world = World(random.Random(seed))
    validated = ValidatedObjects("kubernetes")
    memo = CompileMemo()
    reused_after_route_changes = 0
    for step in range(40):
        only_routes = world.change() if step else False
        objects = world.listed()
        incremental = compile_snapshot(validated.resources(objects), step, memo)
        full = compile_snapshot(load_objects(world.listed(), "kubernetes"), step)
        assert incremental.dump == full.dump, f"seed {seed} step {step}"
        assert incremental.statuses == full.statuses
        assert routing(incremental) == routing(full)
        if not only_routes:
            assert memo.reused == 0  # another kind changed: everything compiled again
        else:
            reused_after_route_changes += memo.reused
    assert reused_after_route_changes > 0


def test_a_route_change_reuses_every_other_route_and_status() -> None:
    world = World(random.Random(7))
    validated = ValidatedObjects("kubernetes")
    memo = CompileMemo()
    before = compile_snapshot(validated.resources(world.listed()), 1, memo)
    routes = sum(1 for k in world.objects if k[0] in ("HTTPRoute", "GRPCRoute"))
    key = next(k for k in world.objects if k[2] == "r3")
    changed = copy.deepcopy(world.objects[key])
    changed["spec"]["hostnames"] = ["changed.example.com"]
    world.put(changed)
    after = compile_snapshot(validated.resources(world.listed()), 2, memo)
    assert memo.reused == routes - 1
    # Unchanged statuses are the previous compile's objects (the status pass compares them).
    previous = {(s.kind, s.namespace, s.name): s for s in before.statuses}
    others = [s for s in after.statuses if s.name != "r3"]
    assert others and all(previous[(s.kind, s.namespace, s.name)] is s for s in others)
