"""Names that must be unique within a list of a resource's spec (targets, agents, keys)."""

from __future__ import annotations

from collections.abc import Iterable


def check_unique(field: str, names: Iterable[str], hint: str = "") -> None:
    """ValueError naming the first entry of ``field`` whose name an earlier entry has too:
    ``<field>[<i>].name: '<name>' is used twice``, then ``hint``."""
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(f"{field}[{i}].name: {name!r} is used twice{hint}")
        seen.add(name)
