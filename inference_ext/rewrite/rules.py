"""A pool's InferenceModelRewrites compiled, and the per-request choice of a target model.

Precedence (the spec's): a rule whose ``matches`` name the incoming model exactly beats a
match-all rule (empty ``matches``); among rules of the same kind, the oldest resource
(``metadata.creationTimestamp``, then name) first, then list order within it. A target is chosen
by the session's bucket (:mod:`inference_ext.rewrite.sticky`) when the rewrite names a session
key and the request carries it, else at random by weight. ``x-gateway-model-name-rewrite``
forces one of the matching rule's targets (any of them, weight 0 included); without a matching
rule it sets the model (as the upstream EPP does). When every weight is 0 the model is kept.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import msgspec

from gateway.lb.consistent_hash import cookie_value
from gateway.request import RequestHead
from inference_ext.api import SESSION_KEY_ANNOTATION, InferenceModelRewrite
from inference_ext.request import MODEL_REWRITE_HEADER
from inference_ext.rewrite.state import RewriteState
from inference_ext.rewrite.sticky import assign, bucket


class RewriteError(ValueError):
    """A request whose rewrite header cannot be honoured: 400, the message names the header."""


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Where a request's session key is: ``header:<name>``, ``cookie:<name>``, ``body:<field>``."""

    source: str
    name: str
    # body: a decoder of that one top-level field (the rest of the body is skipped, not built)
    _decode: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, value: str) -> SessionKey:
        """The annotation's value (validated at load)."""
        source, _, name = value.partition(":")
        name = name.strip()
        if source == "header":
            return cls(source, name.lower())
        if source == "cookie":
            return cls(source, name)
        struct = msgspec.defstruct(
            "SessionField", [("value", object, None)], rename={"value": name}
        )
        return cls(source, name, msgspec.json.Decoder(struct).decode)

    def of(self, head: RequestHead, body: bytes) -> str | None:
        """The request's session key, or None when it carries none (or not as a string)."""
        if self.source == "header":
            return head.get(self.name) or None
        if self.source == "cookie":
            return cookie_value(head, self.name) or None
        try:
            value = self._decode(body).value
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return value if isinstance(value, str) and value else None

    def __str__(self) -> str:
        return f"{self.source}:{self.name}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule of one InferenceModelRewrite."""

    rewrite: str  # "namespace/name"
    index: int  # in the resource's rules
    models: tuple[str, ...]  # empty: every model
    targets: tuple[str, ...]
    weights: tuple[int, ...]
    session: SessionKey | None


@dataclass(frozen=True, slots=True)
class Decision:
    """The model a request is sent as, and why."""

    rewrite: str  # the InferenceModelRewrite ("" when only the header set the model)
    incoming: str
    target: str
    session: str | None
    forced: bool  # by x-gateway-model-name-rewrite


@dataclass(frozen=True, slots=True)
class PoolRewrites:
    """The rules that apply to one pool's requests, in precedence order."""

    rules: tuple[Rule, ...] = ()
    exact: Mapping[str, Rule] = field(default_factory=dict)
    fallback: Rule | None = None

    def rule_for(self, model: str) -> Rule | None:
        """The rule for an incoming model: exact first, then the first match-all."""
        rule = self.exact.get(model)
        return rule if rule is not None else self.fallback

    def decide(
        self,
        model: str,
        head: RequestHead,
        body: bytes,
        state: RewriteState,
        rng: random.Random,
    ) -> Decision | None:
        """The target for this request (None: send it as it is); RewriteError for a forcing
        header that names no target of the matching rule."""
        forced = head.get(MODEL_REWRITE_HEADER)
        if forced is not None:
            forced = forced.strip()
            if not forced:
                raise RewriteError(f"{MODEL_REWRITE_HEADER}: must name a model, got an empty value")
        rule = self.rule_for(model)
        if rule is None:
            return Decision("", model, forced, None, True) if forced else None
        session = rule.session.of(head, body) if rule.session is not None else None
        if forced is not None:
            if forced not in rule.targets:
                raise RewriteError(
                    f"{MODEL_REWRITE_HEADER}: {forced!r} is not a target of "
                    f"InferenceModelRewrite {rule.rewrite} for model {model!r} "
                    f"(targets: {', '.join(rule.targets)})"
                )
            return Decision(rule.rewrite, model, forced, session, True)
        weights = effective_weights(rule, model, state)
        if session is not None:
            index = assign(bucket(rule.rewrite, session), weights)
        else:
            index = weighted_index(rng, weights)
        if index is None:
            return None
        return Decision(rule.rewrite, model, rule.targets[index], session, False)

    def describe(self, state: RewriteState) -> list[dict[str, Any]]:
        """The rules for /config_dump, with the weights that apply now."""
        return [
            {
                "rewrite": rule.rewrite,
                "rule": rule.index,
                "models": list(rule.models) or "*",
                "targets": dict(zip(rule.targets, rule.weights, strict=True)),
                "overrides": {
                    model: dict(
                        zip(rule.targets, effective_weights(rule, model, state), strict=True)
                    )
                    for model in state.weights().get(rule.rewrite, {})
                    if rule is self.rule_for(model)
                },
                "sessionKey": str(rule.session) if rule.session else None,
            }
            for rule in self.rules
        ]


def effective_weights(rule: Rule, model: str, state: RewriteState) -> tuple[int, ...]:
    """The rule's weights for ``model``: the override's when one is set (a target it does not
    name gets 0), else the resource's."""
    override = state.override(rule.rewrite, model)
    if override is None:
        return rule.weights
    return tuple(override.get(target, 0) for target in rule.targets)


def weighted_index(rng: random.Random, weights: Sequence[int]) -> int | None:
    """A random index, each with probability weight / total; None when every weight is 0."""
    edges = list(accumulate(weights))
    if not edges or edges[-1] <= 0:
        return None
    return bisect_right(edges, rng.randrange(edges[-1]))


def pool_rewrites(resources: Iterable[InferenceModelRewrite], pool: str) -> PoolRewrites:
    """The rules of the rewrites whose ``poolRef`` names ``pool`` (same namespace), compiled."""
    ordered = sorted(
        (r for r in resources if r.spec.pool_ref.name == pool),
        key=lambda r: (str(r.metadata.creation_timestamp or ""), r.metadata.name),
    )
    exact: dict[str, Rule] = {}
    everything: list[Rule] = []
    fallbacks: list[Rule] = []
    for resource in ordered:
        meta = resource.metadata
        annotation = meta.annotations.get(SESSION_KEY_ANNOTATION)
        session = SessionKey.parse(annotation) if annotation else None
        for index, spec in enumerate(resource.spec.rules):
            targets = tuple(t.model_rewrite for t in spec.targets)
            weights = tuple(1 if t.weight is None else t.weight for t in spec.targets)
            models = tuple(m.model.value for m in spec.matches)
            rule = Rule(f"{meta.namespace}/{meta.name}", index, models, targets, weights, session)
            everything.append(rule)
            if models:
                for model in models:
                    exact.setdefault(model, rule)
            else:
                fallbacks.append(rule)
    everything.sort(key=lambda r: not r.models)  # stable: exact rules first, then match-all
    return PoolRewrites(tuple(everything), exact, fallbacks[0] if fallbacks else None)
