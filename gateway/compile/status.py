"""Route and listener conditions, and the human table ``ambient check`` prints."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.compile.refs import Problem
from gateway.config.resources import Rejected
from gateway.snapshot import Condition, ParentStatus, RouteStatus


def accepted(reason: str = "Accepted", message: str = "") -> Condition:
    """Accepted=True, or Accepted=False with a reason when ``reason`` is not ``Accepted``."""
    return Condition("Accepted", "True" if reason == "Accepted" else "False", reason, message)


def resolved_refs(problems: list[Problem]) -> Condition:
    """ResolvedRefs=True, or False with the first problem's reason and every message."""
    if not problems:
        return Condition("ResolvedRefs", "True", "ResolvedRefs")
    return Condition("ResolvedRefs", "False", problems[0][0], "; ".join(m for _, m in problems))


def partially_invalid(messages: list[str]) -> Condition:
    """PartiallyInvalid=True: some rules were dropped."""
    return Condition(
        "PartiallyInvalid", "True", "UnsupportedValue", "Dropped Rule: " + "; ".join(messages)
    )


def rejected_status(rejected: Rejected) -> RouteStatus:
    """The status of an object left out at load: Accepted=False, InvalidField, and why."""
    condition = Condition("Accepted", "False", "InvalidField", rejected.message)
    return RouteStatus(
        rejected.kind, rejected.namespace, rejected.name, (ParentStatus("-", (condition,)),)
    )


def format_status(statuses: Iterable[RouteStatus]) -> str:
    """A table: a line per object and parent; conditions as ``Type=Status(Reason): message``."""
    rows: list[tuple[str, str, str]] = []
    for status in statuses:
        who = f"{status.kind} {status.namespace}/{status.name}"
        if not status.parents:
            rows.append((who, "-", "no parents"))
        for parent in status.parents:
            conditions = "  ".join(
                f"{c.type}={c.status}({c.reason})" + (f": {c.message}" if c.message else "")
                for c in parent.conditions
            )
            rows.append((who, parent.parent, conditions))
    if not rows:
        return "no routes"
    rows.insert(0, ("OBJECT", "PARENT", "CONDITIONS"))
    width_who = max(len(r[0]) for r in rows)
    width_parent = max(len(r[1]) for r in rows)
    return "\n".join(
        f"{who:<{width_who}}  {parent:<{width_parent}}  {text}" for who, parent, text in rows
    )
