"""An ``mcp`` 2.x ``MCPServer`` upstream (run in ``.venv-mcp2``, not imported).

``python server_tools.py FD``: serves Streamable HTTP at ``/mcp`` on the listening socket ``FD``
(bound by the test before this starts, so clients wait in its backlog) until killed. Tools:
``add``; ``count`` (progress, one notification a step); ``confirm`` (asks the user). A prompt
``greet`` whose ``who`` completes from a few names.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import Completion, CompletionArgument
from pydantic import BaseModel

server = MCPServer("modern", instructions="Sums and counts (mcp 2.x).")


class Approval(BaseModel):
    ok: bool


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool()
async def count(steps: int, ctx: Context) -> str:
    """Count to ``steps``, reporting progress."""
    for step in range(steps):
        await ctx.report_progress(step + 1, steps)
    return f"counted to {steps}"


@server.tool()
async def confirm(question: str, ctx: Context) -> str:
    """Ask the user to confirm."""
    answer = await ctx.elicit(question, Approval)
    approved = answer.action == "accept" and answer.data.ok
    return "confirmed" if approved else f"not confirmed: {answer.action}"


@server.prompt()
def greet(who: str) -> str:
    """A greeting."""
    return f"Hello {who}"


@server.completion()
async def names(ref: object, argument: CompletionArgument, context: object) -> Completion:
    """Complete ``greet``'s ``who`` from a few names."""
    known = ["Ada", "Alan", "Grace"]
    return Completion(values=[name for name in known if name.startswith(argument.value)])


async def main(fd: int) -> None:
    # Behind the gateway the Host is the gateway's upstream address, not a browser's.
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = server.streamable_http_app(transport_security=security)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[socket.socket(fileno=fd)])


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
