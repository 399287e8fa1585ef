"""Fixtures of the agent gateway's tests: the LLM gateway and its provider stand-ins."""

from tests.fixtures.llm_gateway import start_llm

__all__ = ["start_llm"]
