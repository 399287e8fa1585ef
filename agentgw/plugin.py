"""The agent gateway's registrations (``ambient.plugins`` entry point ``agentgw``).

The LLMBackend kind (``agents.ambient.dev/v1alpha1``, validated at load) and its backend kind,
answered in the gateway by a responder app; the ``ambient_llm_*`` and GenAI metrics. The provider
client, provider health, key budgets and metrics are process state (``agentgw.llm``); the client
is made when the process starts serving and closed when it stops.
"""

from __future__ import annotations

from agentgw.llm.api import GROUP, KIND, VERSIONS, LLMBackend
from agentgw.llm.backend import make_factory
from agentgw.llm.upstream import LlmState
from gateway.plugins import PluginApi


def register(api: PluginApi) -> None:
    """Everything the agent gateway adds to the gateway."""
    state = api.state("agentgw.llm", LlmState)
    api.resource_kind(GROUP, KIND, VERSIONS, LLMBackend)
    api.backend_kind(GROUP, KIND, make_factory(state))
    api.metrics("agentgw.llm", state.metrics)
    api.on_start(state.start)
    api.on_stop(state.stop)
