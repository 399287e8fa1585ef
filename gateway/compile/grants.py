"""ReferenceGrant checks: every field must match exactly."""

from __future__ import annotations

from gateway.config.models import ReferenceGrant


class GrantIndex:
    """ReferenceGrants by the namespace they live in (the target's namespace)."""

    __slots__ = ("_by_namespace",)

    def __init__(self, grants: list[ReferenceGrant]) -> None:
        self._by_namespace: dict[str, list[ReferenceGrant]] = {}
        for grant in grants:
            self._by_namespace.setdefault(grant.metadata.namespace, []).append(grant)

    def permits(
        self,
        from_group: str,
        from_kind: str,
        from_namespace: str,
        to_group: str,
        to_kind: str,
        to_namespace: str,
        to_name: str,
    ) -> bool:
        """Whether a reference from an object to another namespace's object is granted."""
        if from_namespace == to_namespace:
            return True
        for grant in self._by_namespace.get(to_namespace, ()):
            source = any(
                f.group == from_group and f.kind == from_kind and f.namespace == from_namespace
                for f in grant.spec.from_
            )
            if source and any(
                t.group == to_group and t.kind == to_kind and t.name in (None, to_name)
                for t in grant.spec.to
            ):
                return True
        return False
