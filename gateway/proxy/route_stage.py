"""Route + filters: the stage that turns a request head into a rule and a weighted backendRef.

It runs the pre-route stages a Gateway or listener has attached (they may set headers that
matching then sees), matches the head against the listener port's router, applies the rule's
request filters, chooses a backendRef by weight (a session sticks to one when the rule has
``sessionPersistence``) and applies that backendRef's filters. Any of these may answer the request
itself: the exchange then sends that answer and no later stage runs.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from gateway.lb.consistent_hash import cookie_value
from gateway.request import error_response

if TYPE_CHECKING:
    from gateway.proxy.exchange import Exchange
    from gateway.snapshot import BackendChoice, CompiledRule, SessionAffinity
    from gateway.stages import PreRouteStage


def pre_route_stages(exchange: Exchange) -> tuple[PreRouteStage, ...]:
    """The stages attached to the listener this request arrived on (usually none)."""
    port_stages = exchange.snapshot.pre_route.get(exchange.head.listener_port)
    if port_stages is None:
        return ()
    return port_stages.for_host(exchange.head.host)


def run_pre_route(exchange: Exchange, stages: tuple[PreRouteStage, ...]) -> bool:
    """Run pre-route stages in order; False when one answered the request."""
    exchange.forward = None  # a stage may edit headers: the head is serialised from the fields
    for stage in stages:
        answer = stage.apply(exchange)
        if answer is not None:
            exchange.answer(answer, "-")
            return False
    return True


def route(exchange: Exchange) -> bool:
    """Match, filter and choose a backendRef; False when the request was answered here."""
    head = exchange.head
    router = exchange.snapshot.routers.get(head.listener_port)
    rule = router.match(head) if router is not None else None
    if rule is None:
        exchange.answer(
            error_response(404, f"no route matches {head.method} {head.authority}{head.path}"),
            "NR",
        )
        return False
    exchange.rule = exchange.record.rule = rule
    if rule.edits_head:
        choice = _filter_and_choose(exchange, rule)
        if choice is None:
            return False
    else:
        choice = rule.choose()
        if choice is None or choice.backend is None:
            _no_backend(exchange, rule, choice)
            return False
    exchange.choice = choice
    exchange.backend = exchange.record.backend = choice.backend
    if choice.request_filters:
        exchange.forward = None  # the head is edited: serialise it from its fields
        for request_filter in choice.request_filters:
            answer = request_filter.apply(head)
            if answer is not None:
                exchange.answer(answer, "-")
                return False
    return True


def _filter_and_choose(exchange: Exchange, rule: CompiledRule) -> BackendChoice | None:
    """The rule's request filters and session persistence, then a backendRef (None: answered)."""
    head = exchange.head
    exchange.forward = None  # the head is edited: serialise it from its fields
    for request_filter in rule.request_filters:
        answer = request_filter.apply(head)
        if answer is not None:
            exchange.answer(answer, "-")
            return None
    if rule.affinity is None:
        choice = rule.choose()
    else:
        # A session sticks to one backendRef too: choose by weight with the session as seed.
        session = apply_affinity(exchange, rule.affinity)
        choice = rule.choose(random.Random(session)) if len(rule.choices) > 1 else rule.choose()
    if choice is None or choice.backend is None:
        _no_backend(exchange, rule, choice)
        return None
    return choice


def _no_backend(exchange: Exchange, rule: CompiledRule, choice: BackendChoice | None) -> None:
    """500: every weight is 0, or the chosen backendRef is invalid."""
    if choice is None:
        message = f"no backend: {rule_name(rule)} has no backendRef with weight > 0"
    else:
        message = choice.error or f"invalid backendRef in {rule_name(rule)}"
    exchange.answer(error_response(500, message), "-")


def run_body_filters(exchange: Exchange) -> bool:
    """The rule's then the backendRef's body filters, once the body is here; False if answered."""
    rule, choice = exchange.rule, exchange.choice
    assert rule is not None and choice is not None
    exchange.forward = None
    for body_filter in rule.body_filters + choice.body_filters:
        answer = body_filter.apply(exchange)
        if answer is not None:
            exchange.answer(answer, "-")
            return False
    return True


def apply_affinity(exchange: Exchange, affinity: SessionAffinity) -> str:
    """The session key; a new session gets one, set on the request and the response."""
    head = exchange.head
    if affinity.type == "Header":
        value = head.get(affinity.name.lower())
        if value is None:
            value = f"{random.getrandbits(64):016x}"
            head.set_header(affinity.name, value)
            exchange.extra_response = (affinity.name, value)
        return value
    value = cookie_value(head, affinity.name)
    if value is not None:
        return value
    # A new session: the balancer hashes this request on the fresh cookie, as on later ones.
    value = f"{random.getrandbits(64):016x}"
    existing = head.get("cookie")
    pair = f"{affinity.name}={value}"
    head.set_header("cookie", f"{existing}; {pair}" if existing else pair)
    cookie = f"{pair}; Path={affinity.path}; HttpOnly"
    if affinity.max_age is not None:
        cookie += f"; Max-Age={affinity.max_age}"
    exchange.extra_response = ("set-cookie", cookie)
    return value


def rule_name(rule: CompiledRule) -> str:
    """``HTTPRoute ns/name rule N``, for messages."""
    ref = rule.ref
    return f"{ref.kind} {ref.namespace}/{ref.name} rule {ref.rule_index}"
