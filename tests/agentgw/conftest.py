"""Fixtures of the agent gateway's tests: the LLM and MCP gateways, their upstream stand-ins
(MCP servers, A2A agents), simulators, the mcp 2.x environment."""

from tests.fixtures.a2a_agents import a2a_agents
from tests.fixtures.llm_gateway import start_llm
from tests.fixtures.mcp2_env import mcp2, spawn_mcp2
from tests.fixtures.mcp_gateway import start_mcp
from tests.fixtures.mcp_servers import mcp_servers
from tests.fixtures.petstore import petstore
from tests.fixtures.sim import sim_factory

__all__ = [
    "a2a_agents",
    "mcp2",
    "mcp_servers",
    "petstore",
    "sim_factory",
    "spawn_mcp2",
    "start_llm",
    "start_mcp",
]
