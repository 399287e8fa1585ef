"""The agent gateway's registrations (``ambient.plugins`` entry point ``agentgw``).

The LLMBackend kind (``agents.ambient.dev/v1alpha1``, validated at load) and its backend kind,
answered in the gateway by a responder app; the ``ambient_llm_*`` and GenAI metrics. The provider
client, provider health, key budgets and metrics are process state (``agentgw.llm``); the client
is made when the process starts serving and closed when it stops. The admin process makes the
budget table (``agentgw.buckets``: LLM key budgets and MCP tool calls per minute) and the
tool-call ledger (``agentgw.toolcalls``) every serving process shares before they start, and
removes them when the gateway stops.

The MCPBackend kind (``agentgw.mcp``): MCP servers federated behind one endpoint, answered by a
responder app; its upstream client is process state like the LLM client. The A2ABackend kind
(``agentgw.a2a``): A2A agents served through the gateway, sharing those upstream connections.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from agentgw.a2a import api as a2a_api
from agentgw.a2a.backend import make_factory as make_a2a_factory
from agentgw.a2a.metrics import A2aMetrics
from agentgw.buckets import ENV_VAR as BUDGETS_VAR
from agentgw.buckets import SharedTable
from agentgw.llm.api import GROUP, KIND, VERSIONS, LLMBackend
from agentgw.llm.backend import make_factory
from agentgw.llm.upstream import LlmState
from agentgw.mcp import api as mcp_api
from agentgw.mcp.backend import make_factory as make_mcp_factory
from agentgw.mcp.state import McpState
from agentgw.mcp.status import mcp_report
from agentgw.toolcalls import ENV_VAR as LEDGER_VAR
from agentgw.toolcalls import ToolCallLedger
from gateway.plugins import AdminContext, PluginApi


def register(api: PluginApi) -> None:
    """Everything the agent gateway adds to the gateway."""
    tool_calls = api.state("agentgw.toolcalls", ToolCallLedger)
    state = api.state("agentgw.llm", lambda: LlmState(genai=api.genai(), tool_calls=tool_calls))
    api.resource_kind(GROUP, KIND, VERSIONS, LLMBackend)
    api.backend_kind(GROUP, KIND, make_factory(state))
    api.metrics("agentgw.llm", state.metrics)
    mcp = api.state("agentgw.mcp", lambda: McpState(tool_calls=tool_calls, buckets=state.budgets))
    api.resource_kind(mcp_api.GROUP, mcp_api.KIND, mcp_api.VERSIONS, mcp_api.MCPBackend)
    api.backend_kind(mcp_api.GROUP, mcp_api.KIND, make_mcp_factory(mcp))
    api.metrics("agentgw.mcp", mcp.metrics)
    api.report("mcp", mcp_report)
    a2a_metrics = api.state("agentgw.a2a", A2aMetrics)
    api.resource_kind(a2a_api.GROUP, a2a_api.KIND, a2a_api.VERSIONS, a2a_api.A2ABackend)
    api.backend_kind(a2a_api.GROUP, a2a_api.KIND, make_a2a_factory(mcp, a2a_metrics))
    api.metrics("agentgw.a2a", a2a_metrics)
    # Files every serving process maps: the budget table and the tool-call ledger.
    shared = ((BUDGETS_VAR, SharedTable.create), (LEDGER_VAR, tool_calls.create))
    made: list[tuple[str, str]] = []

    async def admin_start(context: AdminContext) -> None:
        for var, create in shared:
            path = os.path.join(tempfile.gettempdir(), f"ambient-{var.lower()}-{os.getpid()}")
            create(path)
            made.append((var, path))
            os.environ[var] = path  # workers spawned after this inherit it

    async def admin_stop() -> None:
        for var, path in made:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if os.environ.get(var) == path:
                del os.environ[var]
        made.clear()

    async def start() -> None:
        state.budgets.attach(os.environ.get(BUDGETS_VAR))
        tool_calls.attach(os.environ.get(LEDGER_VAR))
        await state.start()

    async def stop() -> None:
        tool_calls.detach()

    api.on_admin_start(admin_start)
    api.on_admin_stop(admin_stop)
    api.on_start(start)
    api.on_start(mcp.start)
    api.on_stop(state.stop)
    api.on_stop(mcp.stop)
    api.on_stop(stop)
