"""A PromQL instant query (``GET /api/v1/query``) reduced to one number, as Flagger's
MetricTemplate does: a scalar, or a vector's first sample; nothing is no data."""

from __future__ import annotations

import math

import httpx


class QueryError(Exception):
    """The query could not be answered; the message says why."""


async def instant_query(
    client: httpx.AsyncClient, address: str, query: str, timeout: float = 5.0
) -> float | None:
    """The query's value now; None when it returns no sample; QueryError otherwise."""
    url = address.rstrip("/") + "/api/v1/query"
    try:
        response = await client.get(url, params={"query": query}, timeout=timeout)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise QueryError(f"{url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200 or body.get("status") != "success":
        raise QueryError(f"{url}: {response.status_code} {body.get('error', 'not success')}")
    data = body.get("data", {})
    result = data.get("result")
    try:
        if data.get("resultType") == "scalar":
            value = float(result[1])
        elif data.get("resultType") == "vector":
            if not result:
                return None
            value = float(result[0]["value"][1])
        else:
            raise QueryError(f"{url}: result type {data.get('resultType')!r} is not one number")
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise QueryError(f"{url}: malformed result: {exc}") from exc
    return value if math.isfinite(value) else None
