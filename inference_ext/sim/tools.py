"""Tool-call arguments: a value valid for a function's JSON schema, drawn from the request's RNG.

The subset a function schema usually uses: ``type`` (object, array, string, integer, number,
boolean, null, or a list of them), ``properties`` with ``required`` (only required properties
are filled), ``items``, ``enum``, ``const``, ``anyOf`` / ``oneOf`` (the first alternative),
``minimum`` / ``maximum`` (and the exclusive forms), ``minLength`` / ``maxLength``,
``minItems`` / ``maxItems``. ``$ref`` is not followed (such a property gets an empty object).
"""

from __future__ import annotations

import math
import random
from typing import Any

WORDS = ("alpha", "bravo", "delta", "kilo", "lima", "oscar", "sierra", "tango", "zulu")
_MAX_DEPTH = 8


def arguments_for(schema: object, rng: random.Random) -> dict[str, Any]:
    """Arguments for a function whose ``parameters`` are ``schema`` (always a JSON object)."""
    value = _value(schema, rng, 0) if isinstance(schema, dict) and schema else {}
    return value if isinstance(value, dict) else {}


def _type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if kinds else ("null" if kind else None)
    if kind is None and "properties" in schema:
        return "object"
    return kind if isinstance(kind, str) else None


def _value(schema: object, rng: random.Random, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return {}
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _value(options[0], rng, depth + 1)
    if "$ref" in schema:
        return {}
    kind = _type(schema)
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
        return {name: _value(properties.get(name, {}), rng, depth + 1) for name in names}
    if kind == "array":
        fewest = _int(schema.get("minItems"), 1)
        most = max(fewest, _int(schema.get("maxItems"), max(fewest, 2)))
        count = rng.randint(fewest, most)
        return [_value(schema.get("items", {}), rng, depth + 1) for _ in range(count)]
    if kind == "integer":
        low = _bound(schema, "minimum", "exclusiveMinimum", 0, 1)
        high = _bound(schema, "maximum", "exclusiveMaximum", low + 100, -1)
        return rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))
    if kind == "number":
        low = _bound(schema, "minimum", "exclusiveMinimum", 0.0, 0.01)
        high = _bound(schema, "maximum", "exclusiveMaximum", low + 100.0, -0.01)
        value = round(rng.uniform(low, high), 2)
        return value if low <= value <= high else low  # rounding left a narrow range
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng)


def _int(value: object, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _bound(
    schema: dict[str, Any], inclusive: str, exclusive: str, default: float, step: float
) -> float:
    value = schema.get(inclusive)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    value = schema.get(exclusive)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value + step
    return default


def _string(schema: dict[str, Any], rng: random.Random) -> str:
    text = rng.choice(WORDS)
    low = _int(schema.get("minLength"), 0)
    high = _int(schema.get("maxLength"), max(low, len(text)))
    while len(text) < low:
        text += rng.choice(WORDS)
    return text[: max(low, high)]
