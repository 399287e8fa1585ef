"""CustomResourceDefinitions for the kinds the gateway reads, generated from its models.

``python -m gateway.controller.crds DIR`` writes one file per API group into DIR (``--check``:
exit 1 when a file differs from what would be written). The OpenAPI v3 schema of each version
is the pydantic model's JSON schema made *structural* as the API server requires: references
inlined, ``Optional`` as ``nullable``, ``int | str`` as ``x-kubernetes-int-or-string``, other
unions and untyped fields as ``x-kubernetes-preserve-unknown-fields``. A kind a plugin publishes
run-time statuses for (``PluginApi.status_kind``) has its status model's schema; the others'
status is any object. The mesh's AuthorizationPolicy (read raw) gets a CRD from its API model,
for clusters without Istio.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from cluster.resources import version_rank
from gateway.config.kinds import is_cluster_scoped, kind_spec, registered_resource_kinds
from gateway.config.models import GATEWAY_GROUP
from gateway.plugins import status_kinds
from mesh.rbac.api import AUTHZ_GROUP, AUTHZ_VERSIONS, AuthorizationPolicy

# Groups the cluster already serves: no CRDs for them.
BUILT_IN_GROUPS = frozenset({"", "discovery.k8s.io"})
# Kinds read raw, not registered with a model, that still need a CRD: (versions, API model).
_RAW_KINDS: dict[tuple[str, str], tuple[tuple[str, ...], type[BaseModel]]] = {
    (AUTHZ_GROUP, "AuthorizationPolicy"): (AUTHZ_VERSIONS, AuthorizationPolicy),
}
# Keywords a structural schema may keep as they are.
_KEPT = (
    "description",
    "enum",
    "format",
    "maximum",
    "minimum",
    "maxLength",
    "minLength",
    "maxItems",
    "minItems",
    "pattern",
    "required",
)
_FORMATS = frozenset({"date-time", "int32", "int64", "byte", "uri", "hostname"})

# GatewayClass is read raw (only ``spec.controllerName`` matters): its schema is written here.
_GATEWAY_CLASS: dict[str, Any] = {
    "type": "object",
    "required": ["controllerName"],
    "properties": {
        "controllerName": {"type": "string", "minLength": 1, "maxLength": 253},
        "description": {"type": "string", "maxLength": 64},
        "parametersRef": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}


def plural(kind: str) -> str:
    """The resource name of a kind: lower case, English plural (``BackendTLSPolicy`` ->
    ``backendtlspolicies``, ``Gateway`` -> ``gateways``)."""
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    if lower.endswith("s"):
        return lower + "es"
    return lower + "s"


def structural(schema: Any, defs: dict[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """A pydantic JSON schema node as a Kubernetes structural schema node."""
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:  # a recursive type: accept what is there
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        merged = {**defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs, seen | {name})
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return _union(schema, schema[union], defs, seen)
    out: dict[str, Any] = {k: schema[k] for k in _KEPT if k in schema}
    if "format" in out and out["format"] not in _FORMATS:
        del out["format"]
    if "const" in schema:
        out["enum"] = [schema["const"]]
    kind = schema.get("type")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind is None:
        return {**out, "x-kubernetes-preserve-unknown-fields": True}
    out["type"] = kind
    if kind == "object":
        properties = schema.get("properties")
        if properties:
            out["properties"] = {k: structural(v, defs, seen) for k, v in properties.items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not properties:
            out["additionalProperties"] = structural(extra, defs, seen)
        elif not properties:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = structural(schema.get("items", {}), defs, seen)
    return out


def _union(
    schema: dict[str, Any], options: list[Any], defs: dict[str, Any], seen: frozenset[str]
) -> dict[str, Any]:
    kept = {k: schema[k] for k in ("description",) if k in schema}
    real = [o for o in options if o.get("type") != "null"]
    nullable = len(real) < len(options)
    if len(real) == 1:
        out = {**structural(real[0], defs, seen), **kept}
    elif {o.get("type") for o in real} == {"integer", "string"}:
        out = {**kept, "x-kubernetes-int-or-string": True}
    else:
        out = {**kept, "x-kubernetes-preserve-unknown-fields": True}
    if nullable:
        out["nullable"] = True
    return out


def _spec_schema(group: str, kind: str) -> dict[str, Any]:
    """The whole object's schema: apiVersion, kind, metadata, the model's fields, status."""
    properties: dict[str, Any]
    if (group, kind) == (GATEWAY_GROUP, "GatewayClass"):
        properties = {"spec": _GATEWAY_CLASS}
        required = ["spec"]
    else:
        raw = _RAW_KINDS.get((group, kind))
        spec = kind_spec(group, kind)
        assert raw is not None or spec is not None
        model = raw[1] if raw is not None else spec.model  # type: ignore[union-attr]
        schema = model.model_json_schema(by_alias=True, mode="validation")
        defs = schema.get("$defs", {})
        properties = {
            k: structural(v, defs)
            for k, v in schema.get("properties", {}).items()
            if k not in ("apiVersion", "kind", "metadata", "status")
        }
        required = [r for r in schema.get("required", []) if r in properties]
    body: dict[str, Any] = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            **properties,
            "status": _status_schema(group, kind),
        },
    }
    if required:
        body["required"] = required
    return body


def _status_schema(group: str, kind: str) -> dict[str, Any]:
    model = status_kinds().get((group, kind))
    if model is None:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    return dict(structural(schema, schema.get("$defs", {})))


def crd(group: str, kind: str, versions: list[str], cluster_scoped: bool) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind, serving ``versions`` (the most stable stored)."""
    name = plural(kind)
    storage = max(versions, key=version_rank)
    schema = _spec_schema(group, kind)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{name}.{group}",
            "annotations": {"ambient.dev/generated-by": "python -m gateway.controller.crds"},
        },
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": name,
                "singular": kind.lower(),
            },
            "scope": "Cluster" if cluster_scoped else "Namespaced",
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": version == storage,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
                for version in sorted(versions, key=version_rank, reverse=True)
            ],
        },
    }


def crd_kinds() -> dict[tuple[str, str], tuple[list[str], bool]]:
    """(group, kind) -> (versions, cluster-scoped) of every kind that needs a CRD."""
    out: dict[tuple[str, str], tuple[list[str], bool]] = {
        (GATEWAY_GROUP, "GatewayClass"): (["v1", "v1beta1"], True)
    }
    for (group, kind), (versions, _) in _RAW_KINDS.items():
        out[(group, kind)] = (sorted(versions), False)
    for group, kind in registered_resource_kinds():
        if group in BUILT_IN_GROUPS:
            continue
        spec = kind_spec(group, kind)
        assert spec is not None
        out[(group, kind)] = (sorted(spec.versions), is_cluster_scoped(group, kind))
    return out


def render() -> dict[str, str]:
    """File name -> YAML text: one file per group, its CRDs by kind."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for (group, kind), (versions, cluster_scoped) in sorted(crd_kinds().items()):
        by_group.setdefault(group, []).append(crd(group, kind, versions, cluster_scoped))
    header = "# Generated by `python -m gateway.controller.crds deploy/crds`: do not edit.\n"
    return {
        f"{group}.yaml": header
        + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=100)
        for group, docs in sorted(by_group.items())
    }


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the CRD files."""
    from gateway.plugins import load_plugins

    parser = argparse.ArgumentParser(prog="python -m gateway.controller.crds")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    load_plugins()
    stale = []
    for name, text in render().items():
        path = args.directory / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            args.directory.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
