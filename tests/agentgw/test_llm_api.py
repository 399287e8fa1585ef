"""The LLMBackend kind is validated at load: errors name the file, the object and the field."""

from __future__ import annotations

import pytest

from agentgw.llm.api import LLMBackend
from agentgw.llm.catalog import compile_catalog
from gateway.config import ConfigError, load_text
from gateway.plugins import load_plugins
from tests.fixtures.llm_gateway import AGENTGW_PLUGIN

BACKEND = """
apiVersion: agents.ambient.dev/v1alpha1
kind: LLMBackend
metadata: {{name: models}}
spec:
  providers:
  - {{name: openai, type: OpenAI, url: "https://api.openai.com/v1"}}
  - {{name: claude, type: Anthropic, url: "https://api.anthropic.com"}}
  models: {models}
  virtualModels: {virtual}
"""
MODELS = """
  - {name: gpt-4o-mini, provider: openai}
  - {name: "claude-*", provider: claude}
  - {name: llama, provider: openai, model: llama-3-8b}"""
VIRTUAL = """
  - {name: smart, weighted: [{model: gpt-4o-mini, weight: 80}, {model: claude-sonnet, weight: 20}]}
  - {name: reliable, failover: [[gpt-4o-mini], [llama]]}"""


@pytest.fixture(autouse=True)
def plugin(plugin_sandbox: None) -> None:
    load_plugins([AGENTGW_PLUGIN])


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text, "llm.yaml")
    return str(info.value)


def test_a_valid_backend_loads_and_resolves_exact_wildcard_rename_and_virtual() -> None:
    resources = load_text(BACKEND.format(models=MODELS, virtual=VIRTUAL), "llm.yaml")
    backend = resources.typed("agents.ambient.dev", "LLMBackend", "default", "models")
    assert isinstance(backend, LLMBackend)
    catalog = compile_catalog(backend.spec, {}, {})
    assert catalog.listed == ("gpt-4o-mini", "llama", "smart", "reliable")

    def plain(model: str) -> tuple[str, str]:
        groups = catalog.resolve(model)
        assert groups is not None
        ((target,),) = groups
        return target.provider.name, target.model

    assert plain("gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert plain("claude-opus-4") == ("claude", "claude-opus-4")
    assert plain("llama") == ("openai", "llama-3-8b")
    assert catalog.resolve("gpt-4") is None
    reliable = catalog.resolve("reliable")
    assert reliable is not None
    assert [[t.model for t in group] for group in reliable] == [["gpt-4o-mini"], ["llama-3-8b"]]


def test_a_model_naming_an_unknown_provider_is_refused() -> None:
    models = MODELS + "\n  - {name: gemini, provider: google}"
    message = error_of(BACKEND.format(models=models, virtual="[]"))
    assert message.startswith("llm.yaml: LLMBackend default/models: spec")
    assert "models[3].provider: 'google' is not a provider" in message


def test_a_virtual_model_naming_an_unknown_model_is_refused() -> None:
    virtual = "[{name: smart, failover: [[gpt-4o-mini], [mistral]]}]"
    message = error_of(BACKEND.format(models=MODELS, virtual=virtual))
    assert "virtualModels[0] 'smart': model 'mistral' is not in models" in message


def test_a_provider_needs_exactly_one_of_url_and_backend_ref() -> None:
    text = BACKEND.format(models=MODELS, virtual="[]").replace(
        ', url: "https://api.openai.com/v1"', ""
    )
    assert "exactly one of url and backendRef is required" in error_of(text)


def test_an_unknown_provider_type_is_refused_naming_the_field() -> None:
    text = BACKEND.format(models=MODELS, virtual="[]").replace("type: OpenAI", "type: Gemini")
    assert "spec.providers[0].type: Input should be 'OpenAI' or 'Anthropic'" in error_of(text)
