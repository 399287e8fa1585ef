"""The LLMBackend kind (``agents.ambient.dev/v1alpha1``), validated at load.

Cross references are checked here so a mistake is refused with the file, object and field:
every model names a declared provider, every virtual model's member names a model, provider
names and model names are unique.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agentgw.client_keys import ApiKey, SecretKeyRef, unique_names
from gateway.config.models import Metadata, Model

GROUP = "agents.ambient.dev"
KIND = "LLMBackend"
VERSIONS = ["v1alpha1"]

ProviderType = Literal["OpenAI", "Anthropic"]


class ProviderBackendRef(Model):
    """A provider reached through a backend of the gateway (an InferencePool)."""

    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1)
    port: int | None = None


class Provider(Model):
    """``spec.providers[]``: where requests for a provider's models go, and its key."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    type: ProviderType
    url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    backend_ref: ProviderBackendRef | None = None
    api_key_secret_ref: SecretKeyRef | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _one_destination(self) -> Provider:
        if (self.url is None) == (self.backend_ref is None):
            raise ValueError("exactly one of url and backendRef is required")
        return self


class Price(Model):
    """What a model costs, in USD per million tokens (cached input: input read from the
    provider's prompt cache; the input price when not given)."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    cached_input_per_million: float | None = Field(default=None, ge=0)


class ConfigMapKeyRef(Model):
    """A key of a ``v1`` ConfigMap in the LLMBackend's namespace."""

    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class Pricing(Model):
    """``spec.pricing``: a price table shared by backends, in a ConfigMap key holding YAML or
    JSON ``{<provider's model name>: {inputPerMillion, cachedInputPerMillion,
    outputPerMillion}}`` (a name may end in ``*``). A model entry's own ``price`` wins."""

    config_map_ref: ConfigMapKeyRef


class ModelEntry(Model):
    """``spec.models[]``: a model name clients use (``claude-*`` ends in a wildcard)."""

    name: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1)  # the provider's name for it
    price: Price | None = None

    @model_validator(mode="after")
    def _wildcard(self) -> ModelEntry:
        if "*" in self.name[:-1]:
            raise ValueError("name: '*' is only allowed as the last character")
        if self.name.endswith("*") and self.model is not None:
            raise ValueError("model: a wildcard name passes the model through; no rename")
        return self


class WeightedMember(Model):
    """One member of a weighted virtual model."""

    model: str = Field(min_length=1)
    weight: int = Field(ge=0, le=1_000_000)


class VirtualModel(Model):
    """``spec.virtualModels[]``: a weighted split or priority groups over models."""

    name: str = Field(min_length=1)
    weighted: list[WeightedMember] | None = Field(default=None, min_length=1)
    failover: list[list[str]] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> VirtualModel:
        if (self.weighted is None) == (self.failover is None):
            raise ValueError("exactly one of weighted and failover is required")
        if self.weighted is not None and sum(m.weight for m in self.weighted) == 0:
            raise ValueError("weighted: the weights add up to 0")
        if self.failover is not None and any(not group for group in self.failover):
            raise ValueError("failover: a priority group is empty")
        return self


class Budgets(Model):
    """A client key's budgets (enforced per process)."""

    tokens_per_minute: int | None = Field(default=None, gt=0)
    requests_per_minute: int | None = Field(default=None, gt=0)


class ClientKey(ApiKey):
    """``spec.keys[]``: an API key clients present, from a Secret, and its budgets."""

    budgets: Budgets = Field(default_factory=Budgets)


class LLMBackendSpec(Model):
    """``spec``: providers, models, virtual models, client keys."""

    providers: list[Provider] = Field(min_length=1, max_length=64)
    models: list[ModelEntry] = Field(min_length=1, max_length=1024)
    virtual_models: list[VirtualModel] = Field(default_factory=list, max_length=256)
    keys: list[ClientKey] = Field(default_factory=list, max_length=1024)
    pricing: Pricing | None = None

    @model_validator(mode="after")
    def _references(self) -> LLMBackendSpec:
        providers = [p.name for p in self.providers]
        _unique("providers", providers)
        unique_names("keys", self.keys)
        _unique("models", [m.name for m in self.models] + [v.name for v in self.virtual_models])
        for i, entry in enumerate(self.models):
            if entry.provider not in providers:
                raise ValueError(
                    f"models[{i}].provider: {entry.provider!r} is not a provider "
                    f"(declared: {', '.join(providers)})"
                )
        for i, virtual in enumerate(self.virtual_models):
            members = [m.model for m in virtual.weighted or ()]
            members += [name for group in virtual.failover or () for name in group]
            for name in members:
                if not any(_matches(m.name, name) for m in self.models):
                    raise ValueError(
                        f"virtualModels[{i}] {virtual.name!r}: model {name!r} is not in models"
                    )
        return self


class LLMBackend(Model):
    """``agents.ambient.dev/v1alpha1`` LLMBackend."""

    metadata: Metadata
    spec: LLMBackendSpec


def _unique(field: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{field}: the name {name!r} is used twice")
        seen.add(name)


def _matches(pattern: str, name: str) -> bool:
    """A model entry's name against a client's model: exact, or a trailing-``*`` prefix."""
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return pattern == name
