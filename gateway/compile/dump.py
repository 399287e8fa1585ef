"""The JSON view of a compiled snapshot served at /config_dump."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.backends.base import Backend
from gateway.compile.rules import RuleResult
from gateway.config.models import GrpcRoute, HttpRoute
from gateway.snapshot import BackendChoice, CompiledRule, Condition, Mirror, RouteStatus


class DumpWriter:
    """Builds JSON views; each backend's describe() is computed once per compile."""

    __slots__ = ("_backends",)

    def __init__(self) -> None:
        self._backends: dict[int, tuple[Backend, dict[str, Any]]] = {}

    def route(
        self, route: HttpRoute | GrpcRoute, results: list[RuleResult], kind: str = "HTTPRoute"
    ) -> dict[str, Any]:
        """One route (HTTPRoute or GRPCRoute) with its compiled (or dropped) rules."""
        meta = route.metadata
        stamp = meta.creation_timestamp
        return {
            "kind": kind,
            "namespace": meta.namespace,
            "name": meta.name,
            "hostnames": list(route.spec.hostnames),
            "creationTimestamp": stamp.isoformat() if stamp else None,
            "rules": [self._rule(r) for r in results],
        }

    def backend(self, backend: Backend) -> dict[str, Any]:
        """A backend's describe()."""
        cached = self._backends.get(id(backend))
        if cached is None:
            cached = (backend, dict(backend.describe()))
            self._backends[id(backend)] = cached
        return cached[1]

    def value(self, value: Any) -> Any:
        """Filters and policies (frozen dataclasses) as plain JSON values."""
        if value is None or isinstance(value, str | int | float):
            return value
        if isinstance(value, tuple | list):
            return [self.value(v) for v in value]
        if isinstance(value, frozenset | set):
            return sorted(self.value(v) for v in value)
        if isinstance(value, Mirror):
            return {"fraction": value.fraction, "backend": self.backend(value.backend)}
        if isinstance(value, Mapping):
            return {str(k): self.value(v) for k, v in value.items()}
        names = getattr(type(value), "__dataclass_fields__", None)
        if names is not None:
            out: dict[str, Any] = {"type": type(value).__name__}
            for name in names:
                if not name.startswith("_"):
                    out[name] = self.value(getattr(value, name))
            return out
        describe = getattr(value, "describe", None)
        return dict(describe()) if callable(describe) else repr(value)

    def _rule(self, result: RuleResult) -> dict[str, Any]:
        if result.rule is None:
            assert result.invalid is not None
            return {
                "index": result.index,
                "dropped": {"reason": result.invalid.reason, "message": result.invalid.message},
            }
        rule: CompiledRule = result.rule
        return {
            "index": result.index,
            "name": rule.ref.rule_name,
            "matches": [e.describe() for e in result.entries],
            "requestFilters": self.value(rule.request_filters),
            "responseFilters": self.value(rule.response_filters),
            "mirrors": self.value(rule.mirrors),
            "backends": [self._choice(c) for c in rule.choices],
            "timeouts": self.value(rule.timeouts),
            "retry": self.value(rule.retry),
            "sessionPersistence": self.value(rule.affinity),
        }

    def _choice(self, choice: BackendChoice) -> dict[str, Any]:
        return {
            "weight": choice.weight,
            "backend": self.backend(choice.backend) if choice.backend is not None else None,
            "error": choice.error,
            "requestFilters": self.value(choice.request_filters),
            "responseFilters": self.value(choice.response_filters),
            "mirrors": self.value(choice.mirrors),
        }


def status_view(status: RouteStatus) -> dict[str, Any]:
    """A route (or Gateway) status as JSON."""
    return {
        "kind": status.kind,
        "namespace": status.namespace,
        "name": status.name,
        "parents": [
            {"parent": p.parent, "conditions": [condition_view(c) for c in p.conditions]}
            for p in status.parents
        ],
    }


def condition_view(condition: Condition) -> dict[str, str]:
    """A condition as JSON."""
    return {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": condition.message,
    }
