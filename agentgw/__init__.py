"""The agent gateway: LLM providers behind one OpenAI- and Anthropic-compatible front (``llm``)."""
