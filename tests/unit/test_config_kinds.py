"""Typed resource kinds registered by plugins: validated at load like the core kinds."""

from __future__ import annotations

import logging

import pytest

from gateway.config import ConfigError, ResourceSet, load_text
from gateway.config.kinds import note_raw_kind, register_resource_kind
from gateway.config.models import Service
from tests.fixtures.plugin import GROUP, StaticBackendResource
from tests.fixtures.plugins import plugin_sandbox, test_plugin  # noqa: F401  (fixtures)

STATIC = """
apiVersion: test.ambient.dev/{version}
kind: StaticBackend
metadata: {{name: {name}, namespace: {namespace}}}
spec: {spec}
"""


def static(
    spec: str = "{address: 127.0.0.1, port: 9000}",
    *,
    name: str = "echo",
    namespace: str = "apps",
    version: str = "v1alpha1",
) -> str:
    return STATIC.format(version=version, name=name, namespace=namespace, spec=spec)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(text, "static.yaml")
    return str(info.value)


@pytest.mark.usefixtures("test_plugin")
def test_registered_kind_is_validated_and_indexed_by_namespace_and_name() -> None:
    resources = load_text(static() + "---" + static(name="other", namespace="default"), "s.yaml")
    model = resources.typed(GROUP, "StaticBackend", "apps", "echo")
    assert isinstance(model, StaticBackendResource)
    assert (model.spec.address, model.spec.port) == ("127.0.0.1", 9000)
    assert resources.typed(GROUP, "StaticBackend", "default", "echo") is None
    assert [m.metadata.name for m in resources.typed_list(GROUP, "StaticBackend")] == [
        "echo",
        "other",
    ]
    assert len(resources.typed_list(GROUP, "StaticBackend", "apps")) == 1
    # The raw object stays reachable the way unregistered kinds are.
    raw = resources.find(GROUP, "StaticBackend", "apps", "echo")
    assert raw is not None and raw["spec"]["port"] == 9000


@pytest.mark.usefixtures("test_plugin")
def test_validation_error_names_file_object_and_field_path() -> None:
    assert error_of(static("{address: 127.0.0.1, port: 70000}")) == (
        "static.yaml: StaticBackend apps/echo: spec.port: "
        "Input should be less than or equal to 65535"
    )
    assert error_of(static("{port: 80}")) == (
        "static.yaml: StaticBackend apps/echo: spec.address: required field is missing"
    )


@pytest.mark.usefixtures("test_plugin")
def test_unserved_version_is_refused() -> None:
    assert error_of(static(version="v9")) == (
        "static.yaml: StaticBackend apps/echo: apiVersion: 'test.ambient.dev/v9' is not served "
        "(expected one of v1alpha1)"
    )


@pytest.mark.usefixtures("test_plugin")
def test_unknown_fields_reject_the_object_like_gateway_api_kinds() -> None:
    resources = load_text(static("{address: 127.0.0.1, port: 9000, weight: 3}"), "s.yaml")
    assert resources.typed("test.ambient.dev", "StaticBackend", "apps", "echo") is None
    assert [r.message for r in resources.rejected] == [
        "s.yaml: StaticBackend apps/echo: spec.weight: unknown field (not applied)"
    ]


@pytest.mark.usefixtures("test_plugin")
def test_duplicate_objects_are_refused_within_and_across_files() -> None:
    assert "duplicate of the object in static.yaml" in error_of(static() + "---" + static())
    resources = ResourceSet()
    resources.merge(load_text(static(), "a.yaml"))
    with pytest.raises(ConfigError, match=r"b.yaml: StaticBackend apps/echo: duplicate .* a.yaml"):
        resources.merge(load_text(static(), "b.yaml"))


@pytest.mark.usefixtures("test_plugin")
def test_typed_objects_survive_a_merge() -> None:
    resources = ResourceSet()
    resources.merge(load_text(static(), "a.yaml"))
    resources.merge(load_text(static(name="two"), "b.yaml"))
    assert resources.typed(GROUP, "StaticBackend", "apps", "two") is not None
    assert resources.typed(GROUP, "StaticBackend", "apps", "echo") is not None


def test_core_kinds_are_reachable_typed_too() -> None:
    resources = load_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop}\n"
        "spec: {ports: [{name: http, port: 80}]}\n",
        "s.yaml",
    )
    assert isinstance(resources.typed("", "Service", "shop", "s"), Service)


@pytest.mark.usefixtures("plugin_sandbox")
def test_registering_a_kind_twice_or_a_core_kind_is_refused() -> None:
    register_resource_kind("dup.example.dev", "Thing", ["v1"], StaticBackendResource)
    with pytest.raises(ValueError, match=r"dup\.example\.dev/Thing is already registered"):
        register_resource_kind("dup.example.dev", "Thing", ["v2"], StaticBackendResource)
    with pytest.raises(ValueError, match="core/Service is already registered"):
        register_resource_kind("", "Service", ["v1"], StaticBackendResource)
    with pytest.raises(ValueError, match="no served versions"):
        register_resource_kind("dup.example.dev", "Other", [], StaticBackendResource)


@pytest.mark.usefixtures("plugin_sandbox")
def test_cluster_scoped_kind_has_no_namespace() -> None:
    register_resource_kind(
        "scope.example.dev", "StaticBackend", ["v1"], StaticBackendResource, cluster_scoped=True
    )
    text = (
        "apiVersion: scope.example.dev/v1\nkind: StaticBackend\nmetadata: {name: a}\n"
        "spec: {address: 10.0.0.1, port: 80}\n"
    )
    assert load_text(text, "c.yaml").typed("scope.example.dev", "StaticBackend", "", "a")


@pytest.mark.usefixtures("plugin_sandbox")
def test_raw_kind_read_by_a_factory_loads_without_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "apiVersion: raw.example.dev/v1\nkind: Pool\nmetadata: {name: p}\n"
    with caplog.at_level(logging.WARNING, logger="gateway.config.loader"):
        load_text(text, "p.yaml")
    assert "kind not used by the gateway" in caplog.text
    caplog.clear()
    note_raw_kind("raw.example.dev", "Pool")
    with caplog.at_level(logging.WARNING, logger="gateway.config.loader"):
        assert load_text(text, "p.yaml").find("raw.example.dev", "Pool", "default", "p")
    assert caplog.text == ""
