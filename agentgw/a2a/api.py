"""The A2ABackend kind (``agents.ambient.dev/v1alpha1``), validated at load."""

from __future__ import annotations

from pydantic import Field, model_validator

from agentgw.unique import check_unique
from gateway.config.models import Metadata, Model

GROUP = "agents.ambient.dev"
KIND = "A2ABackend"
VERSIONS = ["v1alpha1"]


class Agent(Model):
    """``spec.agents[]``: an agent served at ``<path>/<name>/``, reached at ``url``."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    url: str = Field(pattern=r"^https?://[^\s]+$")

    @model_validator(mode="after")
    def _not_reserved(self) -> Agent:
        if self.name == "agents":
            raise ValueError("name: 'agents' is the catalog's path")
        return self


class A2ABackendSpec(Model):
    """``spec``: the agents, and the timeouts of calls to them."""

    agents: list[Agent] = Field(min_length=1, max_length=256)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    idle_timeout_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _unique(self) -> A2ABackendSpec:
        check_unique("agents", (agent.name for agent in self.agents))
        return self


class A2ABackend(Model):
    """``agents.ambient.dev/v1alpha1`` A2ABackend."""

    metadata: Metadata
    spec: A2ABackendSpec
