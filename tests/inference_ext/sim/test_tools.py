"""Tool-call arguments satisfy the function's JSON schema (the subset functions use)."""

from __future__ import annotations

import random

from inference_ext.sim.tools import arguments_for

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 12},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 3},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "alerts": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        "where": {
            "type": "object",
            "properties": {"lat": {"type": ["number", "null"]}},
            "required": ["lat"],
        },
        "optional": {"type": "string"},
    },
    "required": ["city", "unit", "days", "ratio", "alerts", "tags", "where"],
}


def test_required_properties_get_values_of_their_types_within_bounds() -> None:
    for seed in range(50):
        args = arguments_for(WEATHER, random.Random(seed))
        assert set(args) == set(WEATHER["required"])
        assert isinstance(args["city"], str) and len(args["city"]) >= 12
        assert args["unit"] in ("c", "f")
        assert isinstance(args["days"], int) and 1 <= args["days"] <= 3
        assert isinstance(args["ratio"], float) and 0 < args["ratio"] <= 1
        assert isinstance(args["alerts"], bool)
        assert len(args["tags"]) == 2 and all(isinstance(tag, str) for tag in args["tags"])
        assert isinstance(args["where"]["lat"], float)


def test_the_same_rng_state_gives_the_same_arguments() -> None:
    assert arguments_for(WEATHER, random.Random(5)) == arguments_for(WEATHER, random.Random(5))


def test_no_or_odd_parameters_give_an_object() -> None:
    rng = random.Random(0)
    assert arguments_for(None, rng) == {}
    assert arguments_for({}, rng) == {}
    assert arguments_for({"type": "string"}, rng) == {}
    ref = {"type": "object", "properties": {"x": {"$ref": "#/$defs/X"}}, "required": ["x"]}
    assert arguments_for(ref, rng) == {"x": {}}
