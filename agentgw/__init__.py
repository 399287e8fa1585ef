"""The agent gateway: LLM providers behind one OpenAI- and Anthropic-compatible front (``llm``),
MCP servers federated behind one endpoint (``mcp``) and A2A agents served through it (``a2a``)."""
