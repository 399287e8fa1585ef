"""MCPBackend: many MCP servers federated behind one Streamable HTTP endpoint in the gateway."""
