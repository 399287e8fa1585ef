"""Compile: ``Snapshot.responders`` lists the ASGI app of every responder backend a served rule
may choose, each app once."""

from __future__ import annotations

from typing import Any

from tests.fixtures.responders import GROUP, KIND
from tests.fixtures.route_config import compile_yaml


async def app_one(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app (never called here)."""


async def app_two(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Another one."""


def asgi_app(name: str, app: str) -> str:
    return f"""
    apiVersion: {GROUP}/v1alpha1
    kind: {KIND}
    metadata: {{name: {name}, namespace: default}}
    spec: {{app: {app}}}
    """


def route(name: str, parent: str, *backends: str) -> str:
    refs = ", ".join(f"{{group: {GROUP}, kind: {KIND}, name: {b}}}" for b in backends)
    return f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: {name}, namespace: default}}
    spec:
      parentRefs: [{{name: {parent}}}]
      rules: [{{backendRefs: [{refs}]}}]
    """


def test_each_app_of_a_served_rule_is_listed_once(responder_plugin: dict[str, Any]) -> None:
    responder_plugin.update({"one": app_one, "two": app_two})
    snapshot = compile_yaml(
        asgi_app("a", "one"),
        asgi_app("b", "one"),  # another backend, the same app object
        asgi_app("c", "two"),
        route("r1", "gw", "a", "b"),
        route("r2", "gw", "a"),
        route("unattached", "no-such-gateway", "c"),  # no listener serves it: not started
    )
    assert snapshot.responders == (app_one,)


def test_a_snapshot_without_responders_lists_none(responder_plugin: dict[str, Any]) -> None:
    assert compile_yaml().responders == ()
