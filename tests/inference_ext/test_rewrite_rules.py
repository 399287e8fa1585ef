"""InferenceModelRewrite without sockets: the in-place splice of the body's model, the sticky
bucket assignment (the 1,000-session property), the spec's precedence as compile builds it, the
weight overrides, and the errors bad resources get (named, nothing else broken)."""

from __future__ import annotations

import random

import orjson
import pytest

from gateway.compile import compile_snapshot
from gateway.config import ConfigError, load_text
from inference_ext.pool import InferencePoolBackend, Pools
from inference_ext.request import parse_body
from inference_ext.rewrite import RewriteError, RewriteState, replace_model
from inference_ext.rewrite.rules import weighted_index
from inference_ext.rewrite.sticky import BUCKETS, assign, bucket
from tests.fixtures.inference import (
    gateway_doc,
    pod_docs,
    pool_doc,
    pool_ref,
    pools,  # noqa: F401  (fixture)
    rewrite_doc,
    route_doc,
)
from tests.fixtures.route_config import head, match


@pytest.fixture(autouse=True)
def _kinds(pools: Pools) -> None:  # noqa: F811
    """Every test here needs the inference kinds registered."""


# -- the splice ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"llama","x":1}', b'{"model":"NEW","x":1}'),
        (  # odd whitespace everywhere, the key last
            b' {\n\t"stream" :true ,\r\n  "model"\t:\n "llama"   }\n',
            b' {\n\t"stream" :true ,\r\n  "model"\t:\n "NEW"   }\n',
        ),
        (  # nested "model" keys and "model" as a value stay; escapes before the key are skipped
            b'{"messages":[{"role":"user","content":"say \\"model\\": \\\\","model":"x"}],'
            b'"tools":{"model":"y"},"note":"model","model":"llama"}',
            b'{"messages":[{"role":"user","content":"say \\"model\\": \\\\","model":"x"}],'
            b'"tools":{"model":"y"},"note":"model","model":"NEW"}',
        ),
        (  # unicode, raw and escaped; the key itself spelled with an escape
            '{"messages":[{"content":"h\u00e9 \u2603 \\u00e9"}],'
            '"mod\\u0065l":"ll\\u0061ma"}'.encode(),
            '{"messages":[{"content":"h\u00e9 \u2603 \\u00e9"}],"mod\\u0065l":"NEW"}'.encode(),
        ),
    ],
)
def test_only_the_top_level_model_value_changes(body: bytes, expected: bytes) -> None:
    assert parse_body(body)[0] == "llama"
    assert replace_model(body, "NEW") == expected


def test_a_target_name_is_written_as_a_json_string() -> None:
    body = b'{"model": "llama", "prompt": "\xc3\xa9"}'
    out = replace_model(body, 'v2-\u00e9"\\')
    assert orjson.loads(out) == {"model": 'v2-\u00e9"\\', "prompt": "\u00e9"}
    assert out.endswith(b', "prompt": "\xc3\xa9"}')


# -- sticky assignment -----------------------------------------------------------------------------

SESSIONS = [f"session-{i}" for i in range(1000)]


def versions(weights: list[int]) -> list[int | None]:
    return [assign(bucket("default/llama", s), weights) for s in SESSIONS]


def test_raising_the_canary_moves_only_stable_sessions_and_the_right_share() -> None:
    before = versions([90, 10])  # [stable, canary]
    after = versions([50, 50])
    assert abs(before.count(1) / len(SESSIONS) - 0.10) <= 0.03
    assert all(a == 1 for b, a in zip(before, after, strict=True) if b == 1)  # canary stays
    moved = sum(b != a for b, a in zip(before, after, strict=True))
    assert abs(moved / len(SESSIONS) - 0.40) <= 0.03
    assert all((b, a) == (0, 1) for b, a in zip(before, after, strict=True) if b != a)


def test_three_targets_moving_weight_between_neighbours_moves_no_one_else() -> None:
    before = versions([60, 30, 10])
    after = versions([60, 10, 30])
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert changed and set(changed) == {(1, 2)}
    assert abs(len(changed) / len(SESSIONS) - 0.20) <= 0.03


def test_a_session_bucket_is_stable_and_in_range_and_zero_weight_owns_none() -> None:
    assert bucket("default/llama", "alice") == bucket("default/llama", "alice")
    assert all(0 <= bucket("default/llama", s) < BUCKETS for s in SESSIONS)
    assert set(versions([0, 5, 0])) == {1}
    assert set(versions([0, 0])) == {None}  # all zero: no target, the model is kept


def test_weighted_random_never_draws_a_zero_weight_and_none_when_all_are_zero() -> None:
    rng = random.Random(3)
    drawn = [weighted_index(rng, [3, 0, 1]) for _ in range(2000)]
    assert set(drawn) == {0, 2}
    assert abs(drawn.count(2) / 2000 - 0.25) <= 0.04
    assert weighted_index(rng, [0, 0]) is None


# -- precedence, as compile builds it --------------------------------------------------------------


def pool_text(*extra: str) -> str:
    return (
        gateway_doc(80)
        + pod_docs("llama", ["10.0.0.1"])
        + pool_doc("llama", "llama", [8000])
        + "".join(extra)
        + route_doc(f"  - backendRefs: [{pool_ref('llama')}]\n")
    )


def backend(text: str) -> InferencePoolBackend:
    snapshot = compile_snapshot(load_text(text, "rewrite.yaml"), 1)
    rule = match(snapshot, head("/v1/chat/completions", method="POST"))
    assert rule is not None
    found = rule.choices[0].backend
    assert isinstance(found, InferencePoolBackend)
    return found


def target_of(backend: InferencePoolBackend, model: str, **headers: str) -> str | None:
    request = head("/v1/chat/completions", method="POST", headers=headers)
    decision = backend.rewrites.decide(model, request, b"{}", RewriteState(), random.Random(0))
    return decision.target if decision is not None else None


def test_exact_beats_match_all_then_the_oldest_resource_then_list_order() -> None:
    old = rewrite_doc(
        "old",
        "llama",
        [((), [("fallback-old", None)]), (("llama",), [("old-2nd", None)]),
         (("llama",), [("old-3rd", None)])],
        created="2025-01-01T00:00:00Z",
    )  # fmt: skip
    new = rewrite_doc(
        "new",
        "llama",
        [(("llama",), [("new-1st", None)]), (("mistral",), [("new-mistral", None)]),
         ((), [("fallback-new", None)])],
        created="2026-01-01T00:00:00Z",
    )  # fmt: skip
    elsewhere = rewrite_doc("elsewhere", "another-pool", [((), [("never", None)])])
    found = backend(pool_text(new, elsewhere, old))
    assert target_of(found, "llama") == "old-2nd"  # exact, oldest resource, first in its list
    assert target_of(found, "mistral") == "new-mistral"  # the only exact match
    assert target_of(found, "qwen") == "fallback-old"  # the oldest match-all
    dumped = found.describe()["rewrites"]
    assert [(r["rewrite"], r["rule"]) for r in dumped][:3] == [
        ("default/old", 1),
        ("default/old", 2),
        ("default/new", 0),
    ]
    assert dumped[-1]["models"] == "*" and dumped[-1]["targets"] == {"fallback-new": 1}


def test_the_forcing_header_takes_any_target_of_the_rule_and_refuses_others() -> None:
    doc = rewrite_doc("canary", "llama", [(("llama",), [("v1", 1), ("v2", 0)])])
    found = backend(pool_text(doc))
    assert target_of(found, "llama", **{"x-gateway-model-name-rewrite": "v2"}) == "v2"
    with pytest.raises(RewriteError) as caught:
        target_of(found, "llama", **{"x-gateway-model-name-rewrite": "v3"})
    message = str(caught.value)
    assert "x-gateway-model-name-rewrite" in message and "'v3'" in message
    assert "default/canary" in message and "v1, v2" in message
    # No rule for the model: the header sets it, as the upstream EPP does.
    assert target_of(found, "qwen", **{"x-gateway-model-name-rewrite": "qwen-2"}) == "qwen-2"


def test_a_rewrite_of_a_missing_pool_is_not_resolved_naming_it() -> None:
    doc = rewrite_doc("lost", "no-such-pool", [((), [("v1", None)])])
    snapshot = compile_snapshot(load_text(pool_text(doc), "rewrite.yaml"), 1)
    (status,) = [s for s in snapshot.statuses if s.kind == "InferenceModelRewrite"]
    ((parent),) = status.parents
    resolved = {c.type: c for c in parent.conditions}["ResolvedRefs"]
    assert (resolved.status, resolved.reason) == ("False", "PoolNotFound")
    assert "InferencePool default/no-such-pool not found" in resolved.message
    assert not status.valid


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (rewrite_doc("r", "p", [((), [("a", 1), ("b", None)])]), "set it on every target or on"),
        (rewrite_doc("r", "p", [((), [("a", -1)])]), "spec.rules[0].targets[0].weight"),
        (rewrite_doc("r", "p", [((), [("a", 1), ("a", 2)])]), "each target once"),
        (rewrite_doc("r", "p", [((), [])]), "spec.rules[0].targets"),
        (
            rewrite_doc("r", "p", [(("x",), [("a", 1)])]).replace("Exact", "Prefix"),
            "spec.rules[0].matches[0].model.type",
        ),
        (
            rewrite_doc("r", "p", [((), [("a", 1)])], session_key="query:x"),
            "inference.ambient.dev/session-key]: expected header:<name>",
        ),
    ],
)
def test_bad_rewrites_are_refused_naming_the_object_and_field(document: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(document, "rewrite.yaml")
    assert problem in str(caught.value)
    assert "rewrite.yaml: InferenceModelRewrite default/r" in str(caught.value)


# -- weight overrides ------------------------------------------------------------------------------


def test_weight_overrides_replace_the_rules_weights_until_removed() -> None:
    doc = rewrite_doc("canary", "llama", [(("llama",), [("v1", 1), ("v2", 0)])])
    found = backend(pool_text(doc))
    state = found.rewrite_state
    state.set_weights("default/canary", "llama", {"v2": 1})  # v1 unnamed: 0
    assert state.weights() == {"default/canary": {"llama": {"v2": 1}}}
    assert {target_of_state(found, state) for _ in range(20)} == {"v2"}
    assert found.describe()["rewrites"][0]["overrides"] == {"llama": {"v1": 0, "v2": 1}}
    state.set_weights("default/canary", "llama", None)
    assert state.weights() == {}
    assert {target_of_state(found, state) for _ in range(20)} == {"v1"}
    with pytest.raises(ValueError, match="the weight of target 'v2' must be an integer of 0"):
        state.set_weights("default/canary", "llama", {"v2": -1})


def target_of_state(backend: InferencePoolBackend, state: RewriteState) -> str | None:
    request = head("/v1/chat/completions", method="POST")
    decision = backend.rewrites.decide("llama", request, b"{}", state, random.Random())
    return decision.target if decision is not None else None
