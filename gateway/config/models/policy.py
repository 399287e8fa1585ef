"""Policy attachment (GEP-713): the target reference of a policy, for plugin policy models.

A policy is namespace-local to its targets: ``LocalPolicyTargetReferenceWithSectionName`` has no
namespace field. For a Gateway target, ``sectionName`` names one listener.
"""

from __future__ import annotations

from pydantic import Field

from gateway.config.models.base import Model


class PolicyTargetRef(Model):
    """``spec.targetRefs[]``: group, kind and name of an object in the policy's namespace."""

    group: str = Field(max_length=253)
    kind: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)
    section_name: str | None = Field(default=None, min_length=1, max_length=253)
