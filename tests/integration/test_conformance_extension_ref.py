"""Conformance: an ExtensionRef nobody can resolve answers 500 and is never skipped (§1.5.6)."""

from __future__ import annotations

import pytest

from tests.fixtures.conformance import backend_of, deploy, route_doc

ROUTES = route_doc(
    "extension",
    """
- matches: [{path: {type: PathPrefix, value: /rule-level}}]
  filters:
    - type: ExtensionRef
      extensionRef: {group: filters.example.com, kind: Unknown, name: f}
  backendRefs: [{name: v1, port: 80}]
- matches: [{path: {type: PathPrefix, value: /after-header-filter}}]
  filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-A, value: a}]}
    - type: ExtensionRef
      extensionRef: {group: filters.example.com, kind: Unknown, name: f}
  backendRefs: [{name: v1, port: 80}]
- matches: [{path: {type: PathPrefix, value: /backend-level}}]
  backendRefs:
    - name: v1
      port: 80
      filters:
        - type: ExtensionRef
          extensionRef: {group: filters.example.com, kind: Unknown, name: f}
- matches: [{path: {type: PathPrefix, value: /}}]
  backendRefs: [{name: v2, port: 80}]
""",
)


@pytest.mark.parametrize("path", ["/rule-level", "/after-header-filter", "/backend-level/x"])
async def test_unresolvable_extension_ref_answers_500(
    echo_factory, gateway_factory, free_port: int, path: str
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.get(path)
        other = await dep.client.get("/elsewhere")
        reached = dep.requests_to("v1")
    assert (response.status_code, backend_of(response)) == (500, None)
    assert reached == 0
    assert backend_of(other) == "v2"  # the route's other rules keep serving
