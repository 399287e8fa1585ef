"""The LLMBackend backend kind: a backendRef resolves to the backend's responder app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
import yaml

from agentgw.client_keys import compile_keys
from agentgw.llm.api import (
    GROUP,
    KIND,
    ConfigMapKeyRef,
    LLMBackend,
    Price,
    ProviderBackendRef,
)
from agentgw.llm.app import LlmApp
from agentgw.llm.catalog import PriceTable, compile_catalog, price_table
from agentgw.llm.upstream import LlmState
from agentgw.resolving import AppBackend, config_map_value, resource_of, secret_value
from gateway.backends.base import (
    Backend,
    BackendRef,
    BackendResolveError,
    Destination,
    ResolveContext,
    resolve_backend,
)


class LlmBackend(AppBackend):
    """A backend answered in the gateway by an :class:`LlmApp`."""

    __slots__ = ()
    responder: LlmApp

    def describe(self) -> Mapping[str, Any]:
        return {
            "kind": KIND,
            **self.responder.catalog.describe(),
            "clientKeys": len(self.responder.keys),
            "backingOff": self.responder.state.health.describe(),
        }


def make_factory(state: LlmState) -> Any:
    """The backend factory; every app shares ``state`` (the client, provider health)."""

    def resolve(ref: BackendRef, ctx: ResolveContext) -> Backend:
        model = resource_of(ctx, GROUP, KIND, LLMBackend, ref)
        where = f"{KIND} {ref.namespace}/{ref.name}"
        spec = model.spec
        provider_keys: dict[str, str] = {}
        pools: dict[str, tuple[str, Any]] = {}
        for i, provider in enumerate(spec.providers):
            if provider.backend_ref is not None:
                pools[provider.name] = _pool(ctx, ref.namespace, provider.backend_ref, where, i)
            if provider.api_key_secret_ref is not None:
                key_ref = provider.api_key_secret_ref
                secret = secret_value(
                    ctx, ref.namespace, key_ref.name, key_ref.key, where, f"providers[{i}]"
                )
                provider_keys[provider.name] = secret.decode().strip()
        budgets = {
            i: (key.budgets.requests_per_minute, key.budgets.tokens_per_minute)
            for i, key in enumerate(spec.keys)
        }
        keys = compile_keys(ctx, ref.namespace, spec.keys, where, "keys", budgets)
        prices = None
        if spec.pricing is not None:
            prices = _prices(ctx, ref.namespace, spec.pricing.config_map_ref, where)
        catalog = compile_catalog(spec, provider_keys, pools, prices)
        app = LlmApp(f"{ref.namespace}/{ref.name}", catalog, state, keys)
        host = f"{ref.name}.{ref.namespace}.llm"
        return LlmBackend(Destination(ref.name, ref.namespace, host, KIND), app)

    return resolve


def _pool(
    ctx: ResolveContext, namespace: str, pool: ProviderBackendRef, where: str, i: int
) -> tuple[str, Any]:
    """The gateway backend a provider's backendRef names (resolved by its own kind)."""
    target = BackendRef(pool.group, pool.kind, pool.name, namespace, pool.port)
    try:
        backend = resolve_backend(target, ctx)
    except BackendResolveError as exc:
        raise BackendResolveError(
            exc.reason, f"{where}: providers[{i}].backendRef: {exc.message}"
        ) from exc
    if getattr(backend, "responder", None) is not None:
        raise BackendResolveError(
            "InvalidKind",
            f"{where}: providers[{i}].backendRef: {pool.kind} {pool.name} answers in the gateway",
        )
    return f"{pool.kind} {namespace}/{pool.name}", backend


def _prices(ctx: ResolveContext, namespace: str, ref: ConfigMapKeyRef, where: str) -> PriceTable:
    """The price table in a ConfigMap key (YAML or JSON), each price validated."""
    name = f"spec.pricing: ConfigMap {namespace}/{ref.name}"
    text = config_map_value(ctx, namespace, ref.name, ref.key, where, "spec.pricing")
    try:
        table = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BackendResolveError(
            "BackendNotFound", f"{where}: {name} key {ref.key!r} is not YAML or JSON: {exc}"
        ) from exc
    if not isinstance(table, dict):
        raise BackendResolveError(
            "BackendNotFound", f"{where}: {name} key {ref.key!r}: a map of model to price expected"
        )
    prices: dict[str, Price] = {}
    for model, price in table.items():
        try:
            prices[str(model)] = Price.model_validate(price)
        except pydantic.ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'price'}: {e['msg']}" for e in exc.errors()
            )
            raise BackendResolveError(
                "BackendNotFound", f"{where}: {name} key {ref.key!r}: model {model!r}: {problem}"
            ) from exc
    return price_table(prices)
