"""A small MCP tool server for examples/mcp-tools.yaml: FastMCP over Streamable HTTP at /mcp.

``python examples/mcp_server.py --port 9051 --name weather`` serves the tools ``forecast`` and
``echo``; ``--name files`` serves ``read`` and ``echo`` instead.
"""

from __future__ import annotations

import argparse

from mcp.server.fastmcp import FastMCP


def build(name: str, port: int) -> FastMCP:
    """The server ``name`` (weather or files) on 127.0.0.1:``port``."""
    server = FastMCP(name, host="127.0.0.1", port=port, log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Echo a text, naming the server."""
        return f"{name}: {text}"

    if name == "weather":

        @server.tool()
        def forecast(city: str) -> str:
            """The forecast of a city."""
            return f"sunny in {city}"

    else:

        @server.tool()
        def read(path: str) -> str:
            """Read a (pretend) file."""
            return f"contents of {path}"

    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", choices=["weather", "files"], required=True)
    args = parser.parse_args()
    build(args.name, args.port).run("streamable-http")
