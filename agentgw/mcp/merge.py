"""Many upstreams' answers made into one: ``initialize`` results and list pages.

Pure functions over decoded results; :mod:`agentgw.mcp.federation` does the fan-out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agentgw.mcp.names import Naming

OMITTED_META = "dev.ambient/omitted"  # what a merged list left out, and why

# List method -> (the result's array, the field holding each item's identity, is it a URI).
LISTS: dict[str, tuple[str, str, bool]] = {
    "tools/list": ("tools", "name", False),
    "prompts/list": ("prompts", "name", False),
    "resources/list": ("resources", "uri", True),
    "resources/templates/list": ("resourceTemplates", "uriTemplate", True),
}


def merge_initialize(
    server_name: str, requested: str, results: Iterable[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    """One InitializeResult: the oldest version any upstream chose (the client's when they
    all agree), the union of capabilities, each upstream's instructions under its name."""
    versions: list[str] = []
    capabilities: dict[str, Any] = {}
    instructions: list[str] = []
    for target, result in results:
        version = result.get("protocolVersion")
        if isinstance(version, str):
            versions.append(version)
        caps = result.get("capabilities")
        if isinstance(caps, dict):
            _union(capabilities, caps)
        text = result.get("instructions")
        if isinstance(text, str) and text:
            instructions.append(f"[{target}] {text}")
    merged: dict[str, Any] = {
        "protocolVersion": min(versions) if versions else requested,
        "capabilities": capabilities,
        "serverInfo": {"name": server_name, "version": "ambient-gateway"},
    }
    if instructions:
        merged["instructions"] = "\n".join(instructions)
    return merged


def _union(into: dict[str, Any], caps: dict[str, Any]) -> None:
    for key, value in caps.items():
        if isinstance(value, dict):
            current = into.get(key)
            if not isinstance(current, dict):
                current = into[key] = {}
            _union(current, value)
        elif isinstance(value, bool):
            into[key] = bool(into.get(key)) or value
        else:
            into.setdefault(key, value)


@dataclass(slots=True)
class MergedList:
    """A merged list: the items as the client sees them, who owns each, what was left out."""

    items: list[dict[str, Any]] = field(default_factory=list)
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)  # client key -> owner
    omitted: list[str] = field(default_factory=list)


Allowed = Callable[[str, str, str], bool]  # (target, upstream identity, client's) -> visible


def merge_list(
    method: str,
    naming: Naming,
    pages: Iterable[tuple[str, list[dict[str, Any]]]],
    allowed: Allowed | None = None,
) -> MergedList:
    """The items of every target (in target order) renamed for the client; an item whose
    name breaks the naming rule, or collides with an earlier one, is left out and named in
    ``omitted``; one ``allowed`` refuses is left out silently."""
    _, key, is_uri = LISTS[method]
    merged = MergedList()
    noun = method.split("/")[0].rstrip("s")
    for target, items in pages:
        for item in items:
            original = item.get(key)
            if not isinstance(original, str):
                merged.omitted.append(f"{target}: a {noun} without {key!r}")
                continue
            exposed = (
                naming.expose_uri(target, original) if is_uri else naming.expose(target, original)
            )
            if exposed is None:
                merged.omitted.append(
                    f"{target}: {noun} {original!r}: the prefixed name breaks the "
                    "1-128 [A-Za-z0-9_.-] rule"
                )
                continue
            if allowed is not None and not allowed(target, original, exposed):
                continue
            if exposed in merged.owners:
                first = merged.owners[exposed][0]
                merged.omitted.append(
                    f"{target}: {noun} {original!r} duplicates the one of target {first}"
                )
                continue
            merged.owners[exposed] = (target, original)
            merged.items.append({**item, key: exposed})
    return merged
