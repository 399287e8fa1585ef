"""deploy/: every manifest parses into the ``kubernetes`` package's models without losing a
field, the CRDs are what the generator writes and accept our examples, RBAC grants exactly what
the controller uses, and everything applies to the API server double (tests/fixtures/kube_api.py,
a stand-in for kube-apiserver)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes import client, utils

from gateway.cli import build_parser
from gateway.controller.crds import crd_kinds, plural, render
from gateway.controller.rbac import cluster_rules, lease_rules
from gateway.plugins import load_plugins
from mesh.ca.root_publisher import RBAC_RULES as ROOT_RBAC_RULES
from mesh.ca.root_publisher import ROOT_CONFIG_MAP
from mesh.state.cluster import MESH_KINDS
from tests.fixtures.kube_api import KubeApiServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Obj = dict[str, Any]


@pytest.fixture(autouse=True)
def _plugins(plugin_sandbox: None) -> None:
    """The installed plugins' kinds (inference) are part of what deploy/ serves."""
    load_plugins()


def _documents(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifests() -> list[Path]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return [DEPLOY / name for name in kustomization["resources"]]


def _all() -> list[Obj]:
    return [doc for path in _manifests() for doc in _documents(path)]


def _examples() -> list[Obj]:
    """deploy/examples/: applied by hand after deploy/ (README "In a cluster")."""
    return [
        doc for path in sorted((DEPLOY / "examples").glob("*.yaml")) for doc in _documents(path)
    ]


BUILT_IN_GROUPS = frozenset(
    {"", "apps", "policy", "rbac.authorization.k8s.io", "apiextensions.k8s.io"}
)


def _model_name(doc: Obj) -> str:
    """The client model of a built-in object (``V1Deployment``), "" for a custom resource."""
    group, _, version = doc["apiVersion"].rpartition("/")
    return f"{version.capitalize()}{doc['kind']}" if group in BUILT_IN_GROUPS else ""


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def test_kustomization_lists_every_manifest() -> None:
    listed = {p.resolve() for p in _manifests()}
    present = {
        p.resolve()
        for p in DEPLOY.rglob("*.yaml")
        if p.name != "kustomization.yaml" and "examples" not in p.parts
    }
    assert listed == present


def test_every_built_in_object_parses_into_the_client_models_without_losing_a_field() -> None:
    api = client.ApiClient()
    checked = 0
    for doc in _all() + _examples():
        if not _model_name(doc):
            continue  # a custom resource: checked against its CRD below
        model = api.deserialize(json.dumps(doc), _model_name(doc), "application/json")
        assert _without_empty(api.sanitize_for_serialization(model)) == _without_empty(doc), (
            f"{doc['kind']} {doc['metadata']['name']}: a field the {_model_name(doc)} model "
            "does not know"
        )
        checked += 1
    assert checked >= 10


def test_crds_are_what_the_generator_writes() -> None:
    rendered = render()
    on_disk = {p.name: p.read_text() for p in (DEPLOY / "crds").glob("*.yaml")}
    assert rendered == on_disk, "run: python -m gateway.controller.crds deploy/crds"
    names = {d["spec"]["names"]["kind"] for t in rendered.values() for d in yaml.safe_load_all(t)}
    wanted = {"GatewayClass", "Gateway", "HTTPRoute", "InferencePool", "InferenceRollout"}
    assert wanted | {"AuthorizationPolicy"} <= names
    assert len(names) == len({kind for _, kind in crd_kinds()})


def _openapi(schema: Any) -> Any:
    """The CRD's OpenAPI schema as JSON Schema (``nullable`` -> also null)."""
    if isinstance(schema, dict):
        out = {k: _openapi(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if schema.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_openapi(v) for v in schema]
    return schema


def test_the_examples_validate_against_the_generated_crd_schemas() -> None:
    schemas: dict[tuple[str, str, str], Obj] = {}
    for text in render().values():
        for crd in yaml.safe_load_all(text):
            for version in crd["spec"]["versions"]:
                key = (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"])
                schemas[key] = _openapi(version["schema"]["openAPIV3Schema"])
    validated: list[str] = []
    examples = [*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("mesh/*.yaml")]
    for path in [*examples, *(DEPLOY / "examples").glob("*.yaml")]:
        for doc in _documents(path):
            group, _, version = doc["apiVersion"].rpartition("/")
            schema = schemas.get((group, version, doc["kind"]))
            if schema is not None:
                jsonschema.validate(doc, schema)
                validated.append(doc["kind"])
    assert len(validated) >= 10 and "AuthorizationPolicy" in validated
    policy = schemas[("security.istio.io", "v1", "AuthorizationPolicy")]
    with pytest.raises(jsonschema.ValidationError, match="'MAYBE' is not one of"):
        jsonschema.validate({"spec": {"action": "MAYBE"}}, policy)


def _rules(kind: str, name: str) -> set[tuple[str, str, tuple[str, ...]]]:
    (role,) = [d for d in _all() if d["kind"] == kind and d["metadata"]["name"] == name]
    return {
        (group, resource, tuple(rule["verbs"]))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


def test_rbac_grants_exactly_what_the_controller_reads_and_writes() -> None:
    assert _rules("ClusterRole", "ambient-gateway") == cluster_rules()
    assert _rules("Role", "ambient-gateway-leader") == lease_rules()


def test_rbac_grants_the_mesh_exactly_the_kinds_it_watches_and_token_reviews() -> None:
    reads = {(group, plural(kind), ("get", "list", "watch")) for group, kind in MESH_KINDS}
    assert _rules("ClusterRole", "ztunnel") == reads
    review = ("authentication.k8s.io", "tokenreviews", ("create",))
    publish = {(group, resource, verbs) for group, resource, verbs, _ in ROOT_RBAC_RULES}
    assert _rules("ClusterRole", "ambient-ca") == reads | {review} | publish
    (ca_role,) = [
        d for d in _all() if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "ambient-ca"
    ]
    named = {
        (group, resource, tuple(rule["verbs"]), tuple(rule.get("resourceNames") or ()))
        for rule in ca_role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        if resource == "configmaps"
    }
    assert named == set(ROOT_RBAC_RULES)  # update only the root's ConfigMap, by name
    bindings = [d for d in _all() if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert {(b["roleRef"]["name"], b["subjects"][0]["name"]) for b in bindings} == {
        ("ambient-gateway", "ambient-gateway"),
        ("ambient-gateway-leader", "ambient-gateway"),
        ("ambient-ca", "ambient-ca"),
        ("ztunnel", "ztunnel"),
    }


def _workload(kind: str, name: str) -> Obj:
    (found,) = [d for d in _all() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _args(workload: Obj) -> list[str]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    env = {"$(POD_NAMESPACE)": "ambient-system", "$(NODE_NAME)": "node-a"}
    out = []
    for arg in container["args"]:
        for var, value in env.items():
            arg = arg.replace(var, value)
        out.append(arg)
    return out


def test_every_workload_runs_a_valid_ambient_command_as_its_service_account() -> None:
    parser, _ = build_parser()
    gateway = parser.parse_args(_args(_workload("Deployment", "ambient-gateway")))
    assert gateway.in_cluster and gateway.lease_namespace == "ambient-system"
    ca = parser.parse_args(_args(_workload("Deployment", "ambient-ca")))
    assert ca.in_cluster and ca.ztunnel_service_account == ["ambient-system/ztunnel"]
    ztunnel = parser.parse_args(_args(_workload("DaemonSet", "ztunnel")))
    assert ztunnel.in_cluster and ztunnel.node == "node-a" and ztunnel.file is None
    assert ztunnel.in_pod_capture  # it captures its node's enrolled Pods itself
    (container,) = _workload("Deployment", "ambient-gateway")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz/ready"
    daemon = _workload("DaemonSet", "ztunnel")["spec"]["template"]["spec"]
    assert daemon["hostNetwork"] is True
    assert daemon["hostPID"] is True  # in-pod capture finds Pods' namespaces in /proc
    assert "NET_ADMIN" in daemon["containers"][0]["securityContext"]["capabilities"]["add"]
    accounts = {d["metadata"]["name"] for d in _all() if d["kind"] == "ServiceAccount"}
    for kind, name in (
        ("Deployment", "ambient-gateway"),
        ("Deployment", "ambient-ca"),
        ("DaemonSet", "ztunnel"),
    ):
        assert _workload(kind, name)["spec"]["template"]["spec"]["serviceAccountName"] in accounts


def test_everything_applies_to_the_api_server(
    kube_api: KubeApiServer, kube: client.ApiClient
) -> None:
    docs = _all()
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    for crd in crds:
        utils.create_from_dict(kube, crd)
    custom = client.CustomObjectsApi(kube)
    served = {(c["spec"]["group"], c["spec"]["names"]["kind"]): c for c in crds}
    for doc in [d for d in docs if d["kind"] != "CustomResourceDefinition"] + _examples():
        group, _, version = doc["apiVersion"].rpartition("/")
        if (group, doc["kind"]) in served:
            crd = served[(group, doc["kind"])]
            plural = crd["spec"]["names"]["plural"]
            if crd["spec"]["scope"] == "Cluster":
                custom.create_cluster_custom_object(group, version, plural, doc)
            else:
                namespace = doc["metadata"]["namespace"]
                custom.create_namespaced_custom_object(group, version, namespace, plural, doc)
        else:
            utils.create_from_dict(kube, doc)
    assert kube_api.get("apps", "deployments", "ambient-system", "ambient-gateway")
    assert kube_api.get("apps", "daemonsets", "ambient-system", "ztunnel")
    assert kube_api.get("gateway.networking.k8s.io", "gatewayclasses", "", "ambient")
    assert kube_api.get("apps", "deployments", "demo", "waypoint")  # deploy/examples too
    assert kube_api.get("security.istio.io", "authorizationpolicies", "demo", "no-admin")
    pools = custom.list_cluster_custom_object("inference.networking.k8s.io", "v1", "inferencepools")
    assert pools["items"] == []  # the generated CRD made the kind served


def test_the_waypoint_example_runs_an_in_cluster_waypoint_of_its_gateway() -> None:
    docs = _documents(DEPLOY / "examples" / "waypoint.yaml")

    def one(kind: str, name: str) -> Obj:
        (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return found

    deployment = one("Deployment", "waypoint")
    args = build_parser()[0].parse_args(_args(deployment))
    assert args.in_cluster and args.node == "node-a" and args.waypoint == "demo/waypoint"
    assert args.lease_namespace == "ambient-system"  # the gateway's Lease: one status writer
    pod = deployment["spec"]["template"]
    gateway_name = pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"]
    waypoint = one("Gateway", gateway_name)
    assert f"{waypoint['metadata']['namespace']}/{gateway_name}" == args.waypoint
    waypoint_class = one("GatewayClass", waypoint["spec"]["gatewayClassName"])
    assert waypoint_class["metadata"]["name"] == "istio-waypoint"
    assert waypoint_class["spec"]["controllerName"] == "ambient.dev/gateway-controller"
    account = pod["spec"]["serviceAccountName"]
    assert one("ServiceAccount", account)["metadata"]["namespace"] == "demo"
    bindings = {(d["kind"], d["roleRef"]["name"]) for d in docs if d["kind"].endswith("Binding")}
    assert bindings == {
        ("ClusterRoleBinding", "ambient-gateway"),
        ("RoleBinding", "ambient-gateway-leader"),
    }
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["ca-root"]["configMap"]["name"] == ROOT_CONFIG_MAP  # the CA publishes it
