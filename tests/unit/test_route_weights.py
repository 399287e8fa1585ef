"""Run-time weight overrides of named route rules: applied at once, re-applied to every snapshot
compiled later (a reload), removed on None; rules without one keep their compiled weights."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import ConfigError
from gateway.reload import ConfigReloader, build_snapshot
from gateway.route_weights import ROUTE_WEIGHTS
from gateway.snapshot import CompiledRule, SnapshotHolder
from tests.fixtures.route_config import GATEWAY, compile_yaml, head, match, route_yaml

RULES = """
- name: versions
  matches: [{path: {type: PathPrefix, value: /v1}}]
  backendRefs: [{name: v1, port: 8080, weight: 100}, {name: v2, port: 8080, weight: 0}]
- matches: [{path: {type: PathPrefix, value: /other}}]
  backendRefs: [{name: v1, port: 8080, weight: 1}, {name: v2, port: 8080, weight: 1}]
"""
ROUTE = route_yaml("llm-route", RULES)


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    for route, rules in ROUTE_WEIGHTS.overrides().items():
        for rule in rules:
            ROUTE_WEIGHTS.set(route, rule, None)


def split(rule: CompiledRule, n: int = 100) -> Counter[str]:
    return Counter(c.name for c in (rule.choose() for _ in range(n)) if c is not None)  # type: ignore[misc]


def versions(snapshot_rule: CompiledRule | None) -> CompiledRule:
    assert snapshot_rule is not None
    return snapshot_rule


def test_an_override_applies_at_once_and_none_restores_the_compiled_weights() -> None:
    rule = versions(match(compile_yaml(ROUTE), head("/v1/chat")))
    assert split(rule) == Counter({"v1": 100}) and rule.override is None
    ROUTE_WEIGHTS.set("default/llm-route", "versions", {"v1": 75, "v2": 25})
    assert rule.override == (75, 25)
    assert split(rule) == Counter({"v1": 75, "v2": 25})
    ROUTE_WEIGHTS.set("default/llm-route", "versions", {"v2": 1})  # v1 not named: 0
    assert split(rule) == Counter({"v2": 100})
    ROUTE_WEIGHTS.set("default/llm-route", "versions", None)
    assert rule.override is None and split(rule) == Counter({"v1": 100})
    assert ROUTE_WEIGHTS.overrides() == {}


async def test_an_override_is_re_applied_to_the_snapshot_a_reload_compiles(tmp_path: Path) -> None:
    from tests.fixtures.route_config import BACKENDS

    path = tmp_path / "gw.yaml"
    path.write_text(GATEWAY + "---\n" + ROUTE + BACKENDS)
    holder = SnapshotHolder(build_snapshot([str(path)], version=1))
    ROUTE_WEIGHTS.set("default/llm-route", "versions", {"v1": 50, "v2": 50})
    before = versions(match(holder.current, head("/v1/x")))
    assert split(before) == Counter({"v1": 50, "v2": 50})
    # The reload changes the rule (a third backendRef); the override still says who gets what.
    path.write_text(
        GATEWAY
        + "---\n"
        + ROUTE.replace("weight: 0}]", "weight: 0}, {name: v3, port: 8080, weight: 5}]", 1)
        + BACKENDS
    )
    assert await ConfigReloader([str(path)], holder, report=False).reload("test")
    after = versions(match(holder.current, head("/v1/x")))
    assert after is not before and len(after.choices) == 3
    assert after.override == (50, 50, 0) and split(after) == Counter({"v1": 50, "v2": 50})
    ROUTE_WEIGHTS.set("default/llm-route", "versions", {"v3": 1})
    assert split(after) == Counter({"v3": 100})


def test_rules_without_an_override_are_untouched() -> None:
    snapshot = compile_yaml(ROUTE)
    other = versions(match(snapshot, head("/other")))
    fields = (other._cumulative, other._sequence)
    ROUTE_WEIGHTS.set("default/llm-route", "versions", {"v2": 1})
    assert other.override is None and (other._cumulative, other._sequence) == fields
    assert fields == ((1, 2), (0, 1))
    # An override of a rule no route has changes nothing either, and applies when one appears.
    ROUTE_WEIGHTS.set("default/llm-route", "missing", {"v2": 1})
    assert split(other, 10) == Counter({"v1": 5, "v2": 5})


def test_bad_weights_name_the_backend_ref() -> None:
    with pytest.raises(ValueError, match=r"route default/llm-route rule 'versions'.*'v2'.*-1"):
        ROUTE_WEIGHTS.set("default/llm-route", "versions", {"v1": 1, "v2": -1})
    with pytest.raises(ValueError, match=r"backendRef 'v1'.*True"):
        ROUTE_WEIGHTS.set("default/llm-route", "versions", {"v1": True})
    assert ROUTE_WEIGHTS.get("default/llm-route", "versions") is None


@pytest.mark.parametrize("name", ["Versions", "-v", "a_b", ""])
def test_a_rule_name_must_be_a_section_name(name: str) -> None:
    with pytest.raises(ConfigError, match=r"rules\[0\]\.name|rules.0.name"):
        rule = f"- name: '{name}'\n  backendRefs: [{{name: v1, port: 8080}}]"
        compile_yaml(route_yaml("r", rule))


def test_an_override_taps_tapless_backend_refs_while_it_lasts() -> None:
    snapshot = compile_yaml(ROUTE)
    rule, other = match(snapshot, head("/v1/x")), match(snapshot, head("/other"))
    assert rule is not None and other is not None
    assert all(c.plain and c.taps == () for c in rule.choices)  # Services: no tap of their own
    ROUTE_WEIGHTS.set("default/llm-route", "versions", {"v1": 1})
    assert all(c.taps == (ROUTE_WEIGHTS.sample,) and not c.plain for c in rule.choices)
    assert all(c.plain and c.taps == () for c in other.choices)
    ROUTE_WEIGHTS.set("default/llm-route", "versions", None)
    assert all(c.plain and c.verbatim and c.taps == () for c in rule.choices)
