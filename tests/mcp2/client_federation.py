"""The ``mcp`` 2.x ``Client`` against a federated gateway (run in ``.venv-mcp2``, not imported).

``python client_federation.py URL MODE``: connects with ``Client(URL, mode=MODE)`` over an HTTP
client that records each exchange, then lists the tools (every page), calls a tool of each
target, a tool that reports progress and logs, a tool that asks the client's model and then its
user, a tool that does not exist, reads a resource and gets a prompt; prints what it saw as one
JSON object. A failed step is recorded as ``{"error": {"code", "message"}}``, not raised.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

Report = dict[str, Any]


def summary(result: Any) -> Any:
    """What a test asserts about a result: the text of its first content block and isError."""
    if isinstance(result, types.CallToolResult):
        first = result.content[0]
        return {"text": getattr(first, "text", None), "isError": result.is_error}
    return result


async def step(report: Report, name: str, run: Callable[[], Awaitable[Any]]) -> None:
    try:
        report[name] = summary(await run())
    except MCPError as error:
        report[name] = {"error": {"code": error.code, "message": error.message}}


async def main(url: str, mode: str) -> Report:
    report: Report = {"http": [], "asked": [], "logs": []}

    async def exchanged(response: httpx2.Response) -> None:
        headers = response.request.headers
        report["http"].append(
            [
                response.request.method,
                headers.get("mcp-method"),
                headers.get("mcp-name"),
                response.status_code,
            ]
        )

    async def sample(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        report["asked"].append(["sampling", str(context.request_id)])
        content = params.messages[0].content
        asked = getattr(content, "text", "?")
        answer = types.TextContent(type="text", text=f"steps for {asked}")
        return types.CreateMessageResult(role="assistant", content=answer, model="m")

    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        report["asked"].append(["elicitation", str(context.request_id)])
        return types.ElicitResult(action="accept", content={"ok": True})

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        report["logs"].append(params.data)

    http = httpx2.AsyncClient(event_hooks={"response": [exchanged]}, timeout=10)
    async with (
        http,
        Client(
            streamable_http_client(url, http_client=http),
            mode=mode,
            sampling_callback=sample,
            elicitation_callback=elicit,
            logging_callback=log,
            log_level="info",
            read_timeout_seconds=10,
        ) as client,
    ):
        report["protocolVersion"] = client.protocol_version
        report["serverInfo"] = client.server_info.name if client.server_info else None
        discovered = client.session.discover_result
        report["discovered"] = discovered.supported_versions if discovered else None

        async def tools() -> list[str]:
            names: list[str] = []
            cursor: str | None = None
            while True:
                page = await client.list_tools(cursor=cursor)
                names += [tool.name for tool in page.tools]
                if (cursor := page.next_cursor) is None:
                    return sorted(names)

        progress: list[list[float | None]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append([value, total])

        async def slow() -> Any:
            done = await client.call_tool(
                "weather_slow", {"steps": 2}, progress_callback=on_progress
            )
            return summary(done) | {"progress": progress}

        async def resource() -> Any:
            listed = await client.list_resources()
            uris = sorted(str(r.uri) for r in listed.resources)
            read = await client.read_resource(next(u for u in uris if "today" in u))
            return {"uris": uris, "text": getattr(read.contents[0], "text", None)}

        async def prompt() -> Any:
            got = await client.get_prompt("weather_greet", {"who": "Ada"})
            return getattr(got.messages[0].content, "text", None)

        async def grow() -> Any:
            await client.call_tool("weather_grow", {})
            return "weather_grown" in await tools()

        await step(report, "tools", tools)
        await step(report, "forecast", lambda: client.call_tool("weather_forecast", {"city": "Oi"}))
        await step(report, "echo", lambda: client.call_tool("files_echo", {"text": "hi"}))
        await step(report, "slow", slow)
        await step(report, "plan", lambda: client.call_tool("weather_plan", {"goal": "tea"}))
        await step(report, "unknown", lambda: client.call_tool("nowhere_tool", {}))
        await step(report, "resource", resource)
        await step(report, "prompt", prompt)
        await step(report, "grow", grow)
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
