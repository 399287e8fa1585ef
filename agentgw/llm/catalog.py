"""An LLMBackend compiled into what a request reads: providers, model routes, virtual models.

Resolution order for a client's ``model``: an exact model name, an exact virtual model name, then
the wildcard entries in the order they were written (the first match wins; the name is passed
through). A resolved request is a list of priority groups of :class:`Target`: a plain model is
one group of one target, a weighted virtual model the member its weights drew then the others
(each a group of one: the split holds while they serve, and a failing member fails over to the
rest), a failover virtual model one group per priority.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentgw.llm.api import LLMBackendSpec, Price, ProviderType
from agentgw.llm.usage import Usage


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """A provider as a request uses it; ``api_key`` never leaves the gateway."""

    name: str
    type: ProviderType
    url: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    pool: Any = field(default=None, compare=False)  # a gateway Backend, for a backendRef
    pool_name: str = ""

    def describe(self) -> dict[str, Any]:
        where = {"backendRef": self.pool_name} if self.pool is not None else {"url": self.url}
        return {"name": self.name, "type": self.type, **where, "key": bool(self.api_key)}


@dataclass(frozen=True, slots=True)
class Rate:
    """A model's price in USD per million tokens."""

    input: float
    output: float
    cached_input: float

    def cost(self, usage: Usage) -> float:
        """The USD cost of an answer's tokens."""
        cached = min(usage.cached, usage.input)
        fresh = usage.input - cached
        return (fresh * self.input + cached * self.cached_input + usage.output * self.output) / 1e6


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Prices by the provider's model name: exact names, then ``*``-ended prefixes in order."""

    exact: Mapping[str, Rate] = field(default_factory=dict)
    prefixes: tuple[tuple[str, Rate], ...] = ()

    def get(self, model: str) -> Rate | None:
        rate = self.exact.get(model)
        if rate is None:
            rate = next((r for prefix, r in self.prefixes if model.startswith(prefix)), None)
        return rate


@dataclass(frozen=True, slots=True)
class Target:
    """One model on one provider: the name the client used and the provider's name for it."""

    provider: ProviderConfig
    model: str
    price: Rate | None = None

    def cost(self, usage: Usage) -> float:
        """The USD cost of an answer's tokens (0 without a price)."""
        return 0.0 if self.price is None else self.price.cost(usage)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    provider: str
    model: str | None
    price: Rate | None = None

    def target(
        self, providers: Mapping[str, ProviderConfig], asked: str, prices: PriceTable
    ) -> Target:
        model = self.model or asked
        return Target(providers[self.provider], model, self.price or prices.get(model))


@dataclass(frozen=True, slots=True)
class _Virtual:
    name: str
    weighted: tuple[tuple[str, int], ...] = ()
    failover: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Catalog:
    """The lookup tables of one LLMBackend."""

    providers: Mapping[str, ProviderConfig]
    exact: Mapping[str, _Entry]
    wildcards: tuple[_Entry, ...]
    virtual: Mapping[str, _Virtual]
    listed: tuple[str, ...]  # /v1/models, in the order written
    prices: PriceTable = field(default_factory=PriceTable)

    def resolve(self, model: str, rng: random.Random | None = None) -> list[list[Target]] | None:
        """The priority groups serving ``model``, or None when no entry names it."""
        virtual = self.virtual.get(model)
        if virtual is not None:
            if virtual.weighted:
                names = [name for name, _ in virtual.weighted]
                weights = [weight for _, weight in virtual.weighted]
                chosen = (rng or random).choices(names, weights)[0]
                # The drawn member first; should it fail, the others (weight 0: fallback only).
                ordered = [chosen] + [name for name in names if name != chosen]
                groups = [[t] for t in map(self._plain, ordered) if t]
                return groups or None
            groups = [[t for t in map(self._plain, group) if t] for group in virtual.failover]
            return [g for g in groups if g] or None
        target = self._plain(model)
        return [[target]] if target else None

    def _plain(self, model: str) -> Target | None:
        entry = self.exact.get(model)
        if entry is None:
            entry = next((w for w in self.wildcards if model.startswith(w.name[:-1])), None)
        return entry.target(self.providers, model, self.prices) if entry else None

    def describe(self) -> dict[str, Any]:
        return {
            "providers": [p.describe() for p in self.providers.values()],
            "models": list(self.listed),
        }


def rate(price: Price) -> Rate:
    """A model's price as a request uses it."""
    cached = price.cached_input_per_million
    return Rate(
        price.input_per_million,
        price.output_per_million,
        price.input_per_million if cached is None else cached,
    )


def price_table(prices: Mapping[str, Price]) -> PriceTable:
    """The lookup table of a ``spec.pricing`` ConfigMap's prices."""
    exact = {name: rate(p) for name, p in prices.items() if not name.endswith("*")}
    prefixes = tuple((name[:-1], rate(p)) for name, p in prices.items() if name.endswith("*"))
    return PriceTable(exact, prefixes)


def compile_catalog(
    spec: LLMBackendSpec,
    keys: Mapping[str, str],
    pools: Mapping[str, tuple[str, Any]],
    prices: PriceTable | None = None,
) -> Catalog:
    """The tables for ``spec``; ``keys`` maps provider name to its API key (when it has one),
    ``pools`` a provider reached through a backendRef to (its name, its gateway backend),
    ``prices`` the ``spec.pricing`` table."""
    providers = {
        p.name: ProviderConfig(
            p.name,
            p.type,
            (p.url or "").rstrip("/"),
            keys.get(p.name),
            p.timeout_seconds,
            pools.get(p.name, ("", None))[1],
            pools.get(p.name, ("", None))[0],
        )
        for p in spec.providers
    }
    entries = [
        _Entry(m.name, m.provider, m.model, rate(m.price) if m.price else None) for m in spec.models
    ]
    virtual = {
        v.name: _Virtual(
            v.name,
            tuple((m.model, m.weight) for m in v.weighted or ()),
            tuple(tuple(group) for group in v.failover or ()),
        )
        for v in spec.virtual_models
    }
    listed = [e.name for e in entries if not e.name.endswith("*")] + list(virtual)
    return Catalog(
        providers,
        {e.name: e for e in entries if not e.name.endswith("*")},
        tuple(e for e in entries if e.name.endswith("*")),
        virtual,
        tuple(listed),
        prices or PriceTable(),
    )
