"""Compile Kubernetes-style mesh.yaml into an immutable snapshot: workloads, services, policies."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mesh.errors import ConfigError
from mesh.identity.spiffe import SpiffeId
from mesh.rbac.authz import Authorizer, Policy, compile_policy
from mesh.state.waypoints import Waypoint, WaypointIndex

DATAPLANE_MODE = "istio.io/dataplane-mode"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
FINISHED_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class Workload:
    """A Pod as the ztunnel sees it."""

    name: str
    namespace: str
    service_account: str
    node: str
    ip: str
    labels: Mapping[str, str]
    enrolled: bool
    identity: SpiffeId
    waypoint: Waypoint | None = None  # for traffic addressed to the Pod IP

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServicePort:
    """A Service port and its target port (number or container-port name)."""

    port: int
    target_port: int | str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ready backend address for a Service port."""

    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Service:
    """A Service with its resolved endpoints per service port."""

    name: str
    namespace: str
    vip: str | None
    ports: tuple[ServicePort, ...]
    endpoints: Mapping[int, tuple[Endpoint, ...]]
    waypoint: Waypoint | None = None

    @property
    def hostname(self) -> str:
        """``<name>.<namespace>.svc.cluster.local``."""
        return f"{self.name}.{self.namespace}.svc.cluster.local"


@dataclass(frozen=True, slots=True)
class MeshState:
    """An immutable snapshot of mesh.yaml; replaced as a whole on reload."""

    trust_domain: str
    workloads: tuple[Workload, ...] = ()
    services: tuple[Service, ...] = ()
    policies: tuple[Policy, ...] = ()
    by_ip: Mapping[str, Workload] = field(default_factory=dict)
    by_name: Mapping[tuple[str, str], Service] = field(default_factory=dict)
    by_vip: Mapping[str, Service] = field(default_factory=dict)

    @property
    def authorizer(self) -> Authorizer:
        """Authorization over this snapshot's policies."""
        return Authorizer(self.policies)

    def workload_by_ip(self, ip: str) -> Workload | None:
        """The Pod owning an IP, if any."""
        return self.by_ip.get(ip)

    def service(self, name: str, namespace: str) -> Service | None:
        """A Service by name."""
        return self.by_name.get((namespace, name))

    def service_by_vip(self, ip: str) -> Service | None:
        """A Service by cluster IP."""
        return self.by_vip.get(ip)

    def waypoint_identities(self, workload: Workload) -> frozenset[SpiffeId]:
        """Identities of the waypoints traffic to ``workload`` may come through: its own, and
        those of the Services it is an endpoint of."""
        waypoints = [workload.waypoint] if workload.waypoint else []
        waypoints += [
            s.waypoint
            for s in self.services
            if s.waypoint is not None
            and any(e.ip == workload.ip for eps in s.endpoints.values() for e in eps)
        ]
        return frozenset(i.identity for w in waypoints for i in w.instances)

    def node_workloads(self, node: str) -> list[Workload]:
        """Enrolled Pods scheduled on a node."""
        return [w for w in self.workloads if w.node == node and w.enrolled]

    def nodes(self) -> set[str]:
        """Every node named by a Pod."""
        return {w.node for w in self.workloads if w.node}


def load_mesh(path: str | Path, trust_domain: str = "cluster.local") -> MeshState:
    """Read and compile a mesh.yaml file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    return parse_mesh(docs, trust_domain)


def _flatten(docs: list[Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, Mapping):
            raise ConfigError(f"every YAML document must be a mapping, got {type(doc).__name__}")
        if doc.get("kind") == "List" or ("items" in doc and "kind" not in doc):
            out.extend(_flatten(list(doc.get("items") or [])))
        else:
            out.append(doc)
    return out


def parse_mesh(docs: list[Any], trust_domain: str = "cluster.local") -> MeshState:
    """Compile already-parsed YAML documents into a MeshState."""
    objs = _flatten(docs)
    namespaces: dict[str, Mapping[str, str]] = {}
    pods, services, slices, policies, gateways = [], [], [], [], []
    for obj in objs:
        kind = obj.get("kind")
        if kind == "Namespace":
            meta = obj.get("metadata") or {}
            namespaces[str(meta.get("name"))] = dict(meta.get("labels") or {})
        elif kind == "Pod" and _is_workload(obj):
            pods.append(obj)
        elif kind == "Service":
            services.append(obj)
        elif kind == "EndpointSlice":
            slices.append(obj)
        elif kind == "Gateway":
            gateways.append(obj)
        elif kind == "AuthorizationPolicy":
            policy = compile_policy(obj)
            if policy is not None:
                policies.append(policy)
    workloads = [_workload(p, namespaces, trust_domain) for p in pods]
    waypoints = WaypointIndex(gateways, services, workloads)
    workloads = [_with_waypoint(w, waypoints, namespaces) for w in workloads]
    by_ip: dict[str, Workload] = {}
    for w in workloads:
        if w.ip in by_ip:
            raise ConfigError(f"Pod {w.key}: status.podIP {w.ip} is also used by {by_ip[w.ip].key}")
        by_ip[w.ip] = w
    by_service: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for s in slices:  # once, not per Service: a cluster has thousands of each
        meta = s.get("metadata") or {}
        name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if name is not None:
            key = (str(meta.get("namespace") or "default"), str(name))
            by_service.setdefault(key, []).append(s)
    compiled = [_service(s, by_service, workloads, pods, namespaces, waypoints) for s in services]
    return MeshState(
        trust_domain=trust_domain,
        workloads=tuple(workloads),
        services=tuple(compiled),
        policies=tuple(policies),
        by_ip=by_ip,
        by_name={(s.namespace, s.name): s for s in compiled},
        by_vip={s.vip: s for s in compiled if s.vip},
    )


def _meta(obj: Mapping[str, Any]) -> tuple[str, str, dict[str, str]]:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ConfigError(f"{obj.get('kind')}: metadata.name is required")
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return str(name), str(meta.get("namespace") or "default"), labels


def _ip(value: Any, where: str) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError as exc:
        raise ConfigError(f"{where}: {value!r} is not an IP address") from exc


def _is_workload(pod: Mapping[str, Any]) -> bool:
    """Whether a Pod is a mesh workload at all, as a cluster has Pods: not one on the node's
    network (its IP is the node's, shared with every other such Pod), not one that has finished
    (its IP may already be another Pod's), not one still pending without an IP. Any of these
    would otherwise fail the whole state (a duplicate or missing IP)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("hostNetwork") or status.get("phase") in FINISHED_PHASES:
        return False
    return bool(status.get("podIP")) or status.get("phase") != "Pending"


def _workload(
    obj: Mapping[str, Any], namespaces: Mapping[str, Mapping[str, str]], td: str
) -> Workload:
    name, ns, labels = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    where = f"Pod {ns}/{name}"
    if not status.get("podIP"):
        raise ConfigError(f"{where}: status.podIP is required")
    ns_labels = namespaces.get(ns, {})
    mode = labels.get(DATAPLANE_MODE, ns_labels.get(DATAPLANE_MODE))
    sa = str(spec.get("serviceAccountName") or "default")
    return Workload(
        name=name,
        namespace=ns,
        service_account=sa,
        node=str(spec.get("nodeName") or ""),
        ip=_ip(status["podIP"], f"{where}: status.podIP"),
        labels=labels,
        enrolled=mode == "ambient",
        identity=SpiffeId(td, ns, sa),
    )


def _with_waypoint(
    w: Workload, waypoints: WaypointIndex, namespaces: Mapping[str, Mapping[str, str]]
) -> Workload:
    where = f"Pod {w.key}"
    waypoint = waypoints.lookup(w.labels, namespaces.get(w.namespace, {}), w.namespace, where)
    if waypoint is None or not waypoint.serves_workloads or waypoint.is_instance(w):
        return w
    return dataclasses.replace(w, waypoint=waypoint)


def _service(
    obj: Mapping[str, Any],
    slices: Mapping[tuple[str, str], list[Mapping[str, Any]]],
    workloads: list[Workload],
    pods: list[Mapping[str, Any]],
    namespaces: Mapping[str, Mapping[str, str]],
    waypoints: WaypointIndex,
) -> Service:
    name, ns, labels = _meta(obj)
    spec = obj.get("spec") or {}
    where = f"Service {ns}/{name}"
    ports = []
    for i, raw in enumerate(spec.get("ports") or []):
        if "port" not in raw:
            raise ConfigError(f"{where}: spec.ports[{i}].port is required")
        target = raw.get("targetPort", raw["port"])
        ports.append(
            ServicePort(
                port=int(raw["port"]),
                target_port=int(target) if str(target).isdigit() else str(target),
                name=str(raw.get("name") or ""),
            )
        )
    vip = spec.get("clusterIP")
    vip = None if vip in (None, "", "None") else _ip(vip, f"{where}: spec.clusterIP")
    mine = slices.get((ns, name), [])
    endpoints: dict[int, tuple[Endpoint, ...]] = {}
    for sp in ports:
        if mine:
            endpoints[sp.port] = _slice_endpoints(sp, mine)
        else:
            endpoints[sp.port] = _selector_endpoints(sp, spec.get("selector"), ns, workloads, pods)
    waypoint = waypoints.lookup(labels, namespaces.get(ns, {}), ns, where)
    if waypoint is not None and (
        not waypoint.serves_services or (waypoint.namespace, waypoint.name) == (ns, name)
    ):
        waypoint = None  # a workload-only waypoint, or the waypoint's own Service
    return Service(name, ns, vip, tuple(ports), endpoints, waypoint)


def _slice_endpoints(sp: ServicePort, slices: list[Mapping[str, Any]]) -> tuple[Endpoint, ...]:
    out: list[Endpoint] = []
    for s in slices:
        slice_ports = s.get("ports") or []
        port: int | None = None
        for p in slice_ports:
            if str(p.get("name") or "") == sp.name:
                port = int(p["port"])
        if port is None and isinstance(sp.target_port, int) and not slice_ports:
            port = sp.target_port
        if port is None:
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready", True) is False:
                continue
            out.extend(Endpoint(str(ip), port) for ip in ep.get("addresses") or [])
    return tuple(out)


def _selector_endpoints(
    sp: ServicePort,
    selector: Any,
    ns: str,
    workloads: list[Workload],
    pods: list[Mapping[str, Any]],
) -> tuple[Endpoint, ...]:
    if not selector:
        return ()
    out = []
    for w, pod in zip(workloads, pods, strict=True):
        if w.namespace != ns or any(w.labels.get(k) != v for k, v in selector.items()):
            continue
        port = sp.target_port
        if isinstance(port, str):
            port = _named_port(pod, port) or 0
        if port:
            out.append(Endpoint(w.ip, port))
    return tuple(out)


def _named_port(pod: Mapping[str, Any], name: str) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == name:
                return int(p["containerPort"])
    return None
