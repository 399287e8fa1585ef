"""Which kinds the controller watches: what file mode reads, and what plugins register."""

from __future__ import annotations

from gateway.config.kinds import kind_spec, read_raw_kinds, registered_resource_kinds

# Read only when a listener or a policy references one (``gateway.controller.references``).
REFERENCED_KINDS = frozenset({("", "Secret"), ("", "ConfigMap")})


def watched_kinds() -> dict[tuple[str, str], frozenset[str]]:
    """(group, kind) -> the versions the loader validates (empty: any served version)."""
    out: dict[tuple[str, str], frozenset[str]] = {}
    for group, kind in registered_resource_kinds():
        spec = kind_spec(group, kind)
        assert spec is not None
        out[(group, kind)] = spec.versions
    for group, kind in read_raw_kinds():
        out.setdefault((group, kind), frozenset())
    return out


def listed_kinds() -> dict[tuple[str, str], frozenset[str]]:
    """The watched kinds read whole (every object of the kind)."""
    return {k: v for k, v in watched_kinds().items() if k not in REFERENCED_KINDS}
