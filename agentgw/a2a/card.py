"""Agent cards rewritten so every URL a client would follow points at the gateway.

Both shapes: v0.3's ``url`` and ``additionalInterfaces[].url``, v1.0's
``supportedInterfaces[].url``. A signed card's signatures no longer hold once rewritten: they
are dropped rather than passed on broken.
"""

from __future__ import annotations

from typing import Any

CARD_PATHS = ("/.well-known/agent-card.json", "/.well-known/agent.json")


def rewrite(card: dict[str, Any], url: str) -> dict[str, Any]:
    """``card`` with its interface URLs replaced by ``url`` (the agent at the gateway)."""
    out = dict(card)
    if "url" in out:
        out["url"] = url
    for key in ("additionalInterfaces", "supportedInterfaces"):
        interfaces = out.get(key)
        if isinstance(interfaces, list):
            out[key] = [
                {**interface, "url": url} if isinstance(interface, dict) else interface
                for interface in interfaces
            ]
    out.pop("signatures", None)
    return out
