"""Agent cards rewritten so every URL a client would follow points at the gateway.

Both shapes: v0.3's ``url`` and ``additionalInterfaces[].url``, v1.0's
``supportedInterfaces[].url``. A signed card's signatures no longer hold once rewritten: they
are dropped rather than passed on broken.
"""

from __future__ import annotations

from typing import Any

import orjson

from agentgw.http1 import Http1Pool, Origin

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


async def fetch_card(
    pool: Http1Pool, base_url: str, path: str, connect_timeout: float, idle_timeout: float
) -> dict[str, Any] | None:
    """The agent's card at ``path`` under ``base_url``; None when it answers anything but 200
    with a JSON object. An unreachable agent raises :class:`agentgw.http1.HttpError`."""
    response = await pool.request(
        "GET",
        Origin.of(base_url.rstrip("/") + path),
        {"accept": "application/json"},
        b"",
        connect_timeout,
        idle_timeout,
    )
    body = await response.read()
    response.close()
    if response.status != 200:
        return None
    try:
        card = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return card if isinstance(card, dict) else None
