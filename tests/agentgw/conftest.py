"""Fixtures of the agent gateway's tests: the LLM gateway, its provider stand-ins, simulators."""

from tests.fixtures.llm_gateway import start_llm
from tests.fixtures.sim import sim_factory

__all__ = ["sim_factory", "start_llm"]
