"""HTTPRoute vs GRPCRoute on one listener with intersecting hostnames: exactly one is accepted.

GRPCRoute's spec says an implementation MUST accept only one of the two (the oldest by
creationTimestamp, then namespace/name) and MUST NOT merge them. Routes are settled per listener
in that order: a route keeps the listener unless an already kept route of the other kind shares
a hostname with it. A route that keeps none of its listeners for a parentRef is not Accepted
there (reason ``Conflicted``).
"""

from __future__ import annotations

from gateway.compile.attach import Attachment, Binding
from gateway.compile.hostnames import overlaps
from gateway.compile.status import accepted

CONFLICTED = "Conflicted"


def settle_conflicts(attachments: list[Attachment]) -> bool:
    """Drop the bindings that lose a conflict, and update the Accepted conditions; False when
    no listener was contested (then no attachment changed)."""
    contested = {id(b.state) for a in attachments if a.kind == "GRPCRoute" for b in a.bindings}
    if not contested:
        return False  # no GRPCRoute bound anywhere: nothing to settle (the common, fast case)
    per_listener: dict[int, list[tuple[Attachment, Binding]]] = {}
    for attachment in attachments:
        for binding in attachment.bindings:
            if id(binding.state) in contested:
                per_listener.setdefault(id(binding.state), []).append((attachment, binding))
    for entries in per_listener.values():
        kinds = {a.kind for a, _ in entries}
        if len(kinds) > 1:
            _settle_listener(entries)
    for attachment in attachments:
        if attachment.conflicts and not attachment.bindings:
            attachment.condition = accepted(CONFLICTED, "; ".join(attachment.conflicts))
    return True


def _settle_listener(entries: list[tuple[Attachment, Binding]]) -> None:
    """Keep routes oldest first; drop a binding that overlaps a kept route of the other kind."""
    kept: list[tuple[Attachment, Binding]] = []
    for attachment, binding in sorted(entries, key=lambda e: (e[0].age, e[0].name_key)):
        winner = next(
            (
                other
                for other, other_binding in kept
                if other.kind != attachment.kind
                and any(
                    overlaps(mine, theirs)
                    for mine in binding.hostnames
                    for theirs in other_binding.hostnames
                )
            ),
            None,
        )
        if winner is None:
            kept.append((attachment, binding))
            continue
        attachment.bindings.remove(binding)
        attachment.conflicts.append(
            f"{winner.kind} {winner.name_key} (older, or first by namespace/name) already "
            f"serves an intersecting hostname on listener {binding.state.label}; "
            f"HTTPRoutes and GRPCRoutes are not merged"
        )
