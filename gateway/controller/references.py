"""The Secrets and ConfigMaps that something references: the only ones the controller reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.config.models import GATEWAY_GROUP

Obj = dict[str, Any]
Ref = tuple[str, str, str]  # (kind, namespace, name)


_REFERRING = frozenset({"Gateway", "BackendTLSPolicy", "ReferenceGrant"})


def _group_kind(obj: Obj) -> tuple[str, str]:
    return str(obj.get("apiVersion", "")).rpartition("/")[0], str(obj.get("kind", ""))


def _granted(grants: list[Obj], from_ns: str, from_kind: str, to: Ref) -> bool:
    """A ReferenceGrant in the target's namespace lets ``from_kind`` in ``from_ns`` refer to it."""
    kind, namespace, name = to
    for grant in grants:
        if (grant.get("metadata") or {}).get("namespace") != namespace:
            continue
        spec = grant.get("spec") or {}
        sources = spec.get("from") or []
        targets = spec.get("to") or []
        if any(
            f.get("group") == GATEWAY_GROUP
            and f.get("kind") == from_kind
            and f.get("namespace") == from_ns
            for f in sources
        ) and any(
            (t.get("group") or "") == "" and t.get("kind") == kind and t.get("name") in (None, name)
            for t in targets
        ):
            return True
    return False


def referenced(objects: Iterable[Obj]) -> set[Ref]:
    """Secrets named by Gateway listeners' certificateRefs (another namespace's only when a
    ReferenceGrant allows it), and ConfigMaps named by BackendTLSPolicies' caCertificateRefs."""
    # Only these kinds refer to or permit referring to Secrets and ConfigMaps; checking the kind
    # first skips the 10,000s of routes and slices cheaply (this runs on every recompile).
    objects = [o for o in objects if o.get("kind") in _REFERRING]
    grants = [o for o in objects if _group_kind(o) == (GATEWAY_GROUP, "ReferenceGrant")]
    out: set[Ref] = set()
    for obj in objects:
        group_kind = _group_kind(obj)
        namespace = str((obj.get("metadata") or {}).get("namespace") or "default")
        spec = obj.get("spec") or {}
        if group_kind == (GATEWAY_GROUP, "Gateway"):
            for listener in spec.get("listeners") or []:
                for ref in ((listener or {}).get("tls") or {}).get("certificateRefs") or []:
                    if (ref.get("group") or "") != "" or (ref.get("kind") or "Secret") != "Secret":
                        continue
                    target = ("Secret", ref.get("namespace") or namespace, str(ref.get("name")))
                    if target[1] == namespace or _granted(grants, namespace, "Gateway", target):
                        out.add(target)
        elif group_kind == (GATEWAY_GROUP, "BackendTLSPolicy"):
            validation = spec.get("validation") or {}
            for ref in validation.get("caCertificateRefs") or []:
                if (ref.get("group") or "") == "" and ref.get("kind") == "ConfigMap":
                    out.add(("ConfigMap", namespace, str(ref.get("name"))))
    return out
