"""Reading Kubernetes YAML (several documents, several files) into a validated ResourceSet.

Field validation is strict, as ``kubectl apply`` does it by default: a field repeated in one
mapping (any kind), or a field the schema does not know (Gateway API kinds and the kinds plugins
register; core kinds keep what a cluster adds), makes that object *rejected*: it is left out,
the rest of the configuration applies, and its status says why (``Accepted=False``,
``InvalidField``, naming the file, the object and the field path), so ``ambient check`` exits 1
and the gateway logs it. A typo such as ``pth:`` for ``path:`` must not turn a route into a
catch-all.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.backends.lb_annotations import policy_from_annotations
from gateway.config.errors import ConfigError, validation_messages
from gateway.config.gc_pause import paused_gc
from gateway.config.kinds import is_cluster_scoped, is_quiet_raw_kind, kind_spec
from gateway.config.models import (
    GATEWAY_GROUP,
    BackendTlsPolicy,
    EndpointSlice,
    Gateway,
    GrpcRoute,
    HttpRoute,
    Namespace,
    ReferenceGrant,
    Secret,
    Service,
    unknown_fields,
)
from gateway.config.resources import SERVICE_NAME_LABEL, Loaded, Rejected, ResourceSet

log = logging.getLogger(__name__)

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_Loader):  # type: ignore[misc, valid-type]
    """The safe loader, noting each mapping that repeats a key (a plain loader keeps the last)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[tuple[yaml.MappingNode, str]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Fewer keys than pairs: a key repeated, or a merge (<<) overridden. ``flatten_mapping``
        # deletes the merge keys from this very list and puts the merged pairs in a new one, so
        # ``own`` ends up the mapping's own pairs either way: a repeat among them is the error.
        own = node.value
        mapping = super().construct_mapping(node, deep=deep)
        if len(mapping) < len(node.value):
            seen: set[Any] = set()
            for key, _ in own:
                if key.value in seen:
                    self.repeated.append((node, str(key.value)))
                seen.add(key.value)
        return mapping


def _documents(text: str) -> list[tuple[Any, list[str]]]:
    """Each YAML document with the paths of the fields it repeats (``spec.rules[0].path``)."""
    loader = _StrictLoader(text)
    out: list[tuple[Any, list[str]]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            loader.repeated = []
            document = loader.construct_document(node)
            repeats = [_join(_path_to(node, target), key) for target, key in loader.repeated]
            out.append((document, repeats))
    finally:
        loader.dispose()
    return out


def _path_to(root: yaml.Node, target: yaml.Node) -> str:
    """The field path from ``root`` to ``target`` (found by identity; "" for the root)."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if isinstance(node, yaml.MappingNode):
            stack += [(value, _join(path, str(key.value))) for key, value in node.value]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
    return "?"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load_files(paths: list[str]) -> ResourceSet:
    """Load and validate every document of every file; raises ConfigError."""
    resources = ResourceSet()
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
        resources.merge(load_text(text, path))
    return resources


def load_text(text: str, source: str) -> ResourceSet:
    """Load and validate the documents in one YAML text; ``source`` names it in messages."""
    with paused_gc():
        return _load_text(text, source)


def _load_text(text: str, source: str) -> ResourceSet:
    try:
        documents = _documents(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError([f"{where}: invalid YAML: {exc.problem or exc.context}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {exc}"]) from exc
    resources = ResourceSet()
    problems: list[str] = []
    for index, (document, repeats) in enumerate(_expand_lists(documents)):
        if document is None:
            continue
        try:
            _add(resources, document, source, index, repeats)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return resources


def load_objects(objects: Iterable[Mapping[str, Any]], source: str) -> ResourceSet:
    """Validate objects read from the Kubernetes API, as ``load_text`` validates documents.

    An object that fails validation is rejected on its own (its status says why) instead of
    failing the whole set: in a cluster, one bad object must not stop the others applying.
    """
    resources = ResourceSet()
    with paused_gc():
        for index, document in enumerate(objects):
            try:
                _add(resources, document, source, index, [])
            except ConfigError as exc:
                metadata = document.get("metadata") or {}
                namespace = str(metadata.get("namespace") or "")
                name = str(metadata.get("name") or "<unnamed>")
                message = "; ".join(exc.problems) + " (not applied)"
                kind = str(document.get("kind"))
                resources.rejected.append(Rejected(kind, namespace, name, source, message))
    return resources


def _expand_lists(documents: list[tuple[Any, list[str]]]) -> list[tuple[Any, list[str]]]:
    """Inline the items of ``kind: List`` documents, as kubectl does (each item with the
    fields it repeats)."""
    out: list[tuple[Any, list[str]]] = []
    for document, repeats in documents:
        if isinstance(document, dict) and document.get("kind") == "List":
            for i, item in enumerate(document.get("items") or []):
                prefix = f"items[{i}]."
                out.append((item, [r[len(prefix) :] for r in repeats if r.startswith(prefix)]))
        else:
            out.append((document, repeats))
    return out


def _add(
    resources: ResourceSet, document: Any, source: str, index: int, repeats: list[str]
) -> None:
    """Validate one document and file it in ``resources`` (or among the rejected)."""
    if not isinstance(document, dict):
        raise ConfigError(
            [f"{source}: document {index + 1}: expected a mapping (a Kubernetes object)"]
        )
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise ConfigError([f"{source}: document {index + 1}: apiVersion: required string"])
    if not isinstance(kind, str) or not kind:
        raise ConfigError([f"{source}: document {index + 1}: kind: required string"])
    group, _, version = api_version.rpartition("/")
    metadata = document.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    scoped = not is_cluster_scoped(group, kind)
    namespace = str(metadata.get("namespace") or "default") if scoped else ""
    name = str(metadata.get("name") or "<unnamed>")
    label = f"{kind} {namespace}/{name}" if scoped else f"{kind} {name}"

    known = kind_spec(group, kind)
    if repeats:
        _reject(resources, kind, namespace, name, source, label, repeats, "duplicate field")
        return
    if known is None:
        if not is_quiet_raw_kind(group, kind):
            log.warning(
                "%s: %s (%s): kind not used by the gateway, kept raw", source, label, api_version
            )
        _file_raw(resources, group, kind, namespace, name, source, document, label)
        return
    versions, model = known.versions, known.model
    if version not in versions:
        raise ConfigError(
            [
                f"{source}: {label}: apiVersion: {api_version!r} is not served "
                f"(expected one of {', '.join(sorted(versions))})"
            ]
        )
    try:
        obj = model.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(validation_messages(exc, f"{source}: {label}")) from exc
    if group == GATEWAY_GROUP or not known.core:
        unknown = list(unknown_fields(obj))
        if unknown:
            _reject(resources, kind, namespace, name, source, label, unknown, "unknown field")
            return
    _file_raw(resources, group, kind, namespace, name, source, document, label)
    resources.typed_objects.setdefault((group, kind), {})[(namespace, name)] = obj
    if isinstance(obj, Gateway):
        resources.gateways.append(obj)
    elif isinstance(obj, HttpRoute):
        resources.routes.append(obj)
    elif isinstance(obj, GrpcRoute):
        resources.grpc_routes.append(obj)
    elif isinstance(obj, ReferenceGrant):
        resources.grants.append(obj)
    elif isinstance(obj, BackendTlsPolicy):
        resources.backend_tls_policies.append(obj)
    elif isinstance(obj, Service):
        _check_service_annotations(obj, source, label)
        resources.services[(namespace, name)] = obj
    elif isinstance(obj, EndpointSlice):
        service = obj.metadata.labels.get(SERVICE_NAME_LABEL)
        if service:
            resources.slices.setdefault((namespace, service), []).append(obj)
        else:
            log.warning("%s: %s: no %s label, ignored", source, label, SERVICE_NAME_LABEL)
    elif isinstance(obj, Namespace):
        resources.namespaces[name] = obj
    elif isinstance(obj, Secret):
        resources.secrets[(namespace, name)] = obj


def _reject(
    resources: ResourceSet,
    kind: str,
    namespace: str,
    name: str,
    source: str,
    label: str,
    paths: list[str],
    problem: str,
) -> None:
    """Leave the object out; its status will say which fields (the rest of the config applies)."""
    message = "; ".join(f"{source}: {label}: {path}: {problem}" for path in paths)
    resources.rejected.append(Rejected(kind, namespace, name, source, f"{message} (not applied)"))


def _file_raw(
    resources: ResourceSet,
    group: str,
    kind: str,
    namespace: str,
    name: str,
    source: str,
    document: Mapping[str, Any],
    label: str,
) -> None:
    """Keep the raw object reachable through ``find``/``list``."""
    objects = resources.raw.setdefault((group, kind), {})
    if (namespace, name) in objects:
        raise ConfigError(
            [f"{source}: {label}: duplicate of the object in {objects[(namespace, name)].source}"]
        )
    objects[(namespace, name)] = Loaded(source, document)


def _check_service_annotations(service: Service, source: str, label: str) -> None:
    """The gateway's load-balancing annotations must parse."""
    try:
        policy_from_annotations(service.metadata.annotations)
    except ValueError as exc:
        raise ConfigError([f"{source}: {label}: {exc}"]) from exc
