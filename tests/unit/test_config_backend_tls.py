"""BackendTLSPolicy at the config edge: v1 and v1alpha3 load; what the API server rejects fails
with the object and the field path."""

from __future__ import annotations

import textwrap

import pytest

from gateway.config import ConfigError, load_text
from tests.fixtures.backend_tls import policy_yaml


def problems(text: str) -> list[str]:
    """The loader's messages for ``text`` (which must be refused)."""
    with pytest.raises(ConfigError) as caught:
        load_text(textwrap.dedent(text), "policy.yaml")
    return caught.value.problems


@pytest.mark.parametrize("version", ["v1", "v1alpha3"])
def test_policy_loads_in_both_served_versions(version: str) -> None:
    text = policy_yaml(
        "p",
        "echo",
        "echo.test",
        section="https",
        sans=(("Hostname", "*.echo.test"), ("URI", "spiffe://td/ns/default/sa/echo")),
        api_version=version,
    )
    (policy,) = load_text(text, "policy.yaml").backend_tls_policies
    assert policy.metadata.name == "p"
    (target,) = policy.spec.target_refs
    assert (target.group, target.kind, target.name, target.section_name) == (
        "",
        "Service",
        "echo",
        "https",
    )
    validation = policy.spec.validation
    assert validation.hostname == "echo.test"
    assert [(r.kind, r.name) for r in validation.ca_certificate_refs] == [("ConfigMap", "ca")]
    assert [(s.type, s.value) for s in validation.subject_alt_names] == [
        ("Hostname", "*.echo.test"),
        ("URI", "spiffe://td/ns/default/sa/echo"),
    ]


def test_well_known_ca_certificates_keeps_its_spelling() -> None:
    text = policy_yaml("p", "echo", "echo.test", ca=None, well_known="System")
    (policy,) = load_text(text, "policy.yaml").backend_tls_policies
    assert policy.spec.validation.well_known_ca_certificates == "System"


def test_unserved_version_is_refused() -> None:
    (message,) = problems(policy_yaml("p", "echo", "echo.test", api_version="v1beta1"))
    assert message.startswith("policy.yaml: BackendTLSPolicy default/p: apiVersion:")
    assert "v1, v1alpha3" in message


def test_hostname_is_required_and_precise() -> None:
    missing = policy_yaml("p", "echo", "echo.test").replace("    hostname: echo.test\n", "")
    assert problems(missing) == [
        "policy.yaml: BackendTLSPolicy default/p: spec.validation.hostname: "
        "required field is missing"
    ]
    (wildcard,) = problems(policy_yaml("p", "echo", "'*.echo.test'"))
    assert "spec.validation.hostname: '*.echo.test': must be a precise hostname" in wildcard


def test_trust_source_is_one_of_ca_refs_or_well_known() -> None:
    (both,) = problems(policy_yaml("p", "echo", "echo.test", well_known="System"))
    assert both == (
        "policy.yaml: BackendTLSPolicy default/p: spec.validation: "
        "must not contain both caCertificateRefs and wellKnownCACertificates"
    )
    (neither,) = problems(policy_yaml("p", "echo", "echo.test", ca=None))
    assert neither.endswith(
        "spec.validation: must specify either caCertificateRefs or wellKnownCACertificates"
    )
    (pattern,) = problems(policy_yaml("p", "echo", "echo.test", ca=None, well_known="Mine"))
    assert "spec.validation.wellKnownCACertificates: 'Mine': must be System" in pattern


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{type: Hostname}", "subjectAltNames[0]: hostname: required when type is Hostname"),
        (
            "{type: Hostname, hostname: a.test, uri: 'spiffe://a/b'}",
            "subjectAltNames[0]: uri: must not be set when type is Hostname",
        ),
        ("{type: URI}", "subjectAltNames[0]: uri: required when type is URI"),
        (
            "{type: URI, uri: 'spiffe://a/b', hostname: a.test}",
            "subjectAltNames[0]: hostname: must not be set when type is URI",
        ),
        ("{type: URI, uri: 'not a uri'}", "subjectAltNames[0]: uri: 'not a uri' is not an"),
        ("{type: IPAddress, hostname: a.test}", "subjectAltNames[0]: type: 'IPAddress' is not"),
        ("{type: Hostname, hostname: 'Bad_Host'}", "subjectAltNames[0]: 'Bad_Host' is not a"),
    ],
)
def test_subject_alt_name_fields_fit_their_type(entry: str, expected: str) -> None:
    text = policy_yaml("p", "echo", "echo.test") + f"    subjectAltNames: [{entry}]\n"
    (message,) = problems(text)
    assert message.startswith("policy.yaml: BackendTLSPolicy default/p: spec.validation.")
    assert expected in message


def test_target_refs_must_be_distinct() -> None:
    base = policy_yaml("p", "echo", "echo.test")
    same = base.replace(
        'targetRefs: [{group: "", kind: Service, name: echo}]',
        'targetRefs: [{group: "", kind: Service, name: echo}, '
        '{group: "", kind: Service, name: echo, sectionName: https}]',
    )
    (unnamed,) = problems(same)
    assert "spec.targetRefs: Service echo: sectionName must be specified" in unnamed
    twice = base.replace(
        'targetRefs: [{group: "", kind: Service, name: echo}]',
        'targetRefs: [{group: "", kind: Service, name: echo, sectionName: a}, '
        '{group: "", kind: Service, name: echo, sectionName: a}]',
    )
    (duplicate,) = problems(twice)
    assert "spec.targetRefs: Service echo: sectionName must be unique" in duplicate
    empty = base.replace('[{group: "", kind: Service, name: echo}]', "[]")
    (none,) = problems(empty)
    assert "spec.targetRefs: List should have at least 1 item" in none


def test_target_ref_group_is_required_as_in_the_crd() -> None:
    text = policy_yaml("p", "echo", "echo.test").replace(
        '{group: "", kind: Service', "{kind: Service"
    )
    assert problems(text) == [
        "policy.yaml: BackendTLSPolicy default/p: spec.targetRefs[0].group: "
        "required field is missing"
    ]


def test_config_maps_are_kept_raw_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca}\ndata: {ca.crt: x}\n"
    resources = load_text(text, "cm.yaml")
    assert resources.find("", "ConfigMap", "default", "ca") is not None
    assert "kept raw" not in caplog.text
