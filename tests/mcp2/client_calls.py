"""Tool calls in a row by the ``mcp`` 2.x ``Client`` (run in ``.venv-mcp2``, not imported).

``python client_calls.py URL MODE CALLS``: lists the tools, then calls each ``[tool, arguments]``
of ``CALLS`` (JSON) in turn; prints one JSON object: the tool names, what completes ``A`` as
``modern_greet``'s ``who``, per call its first text block,
isError and progress (or ``{"error": {"code", "message"}}``), and the questions the client's
elicitation callback was asked (it accepts with ``{"ok": true}``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import mcp_types as types
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError


async def main(url: str, mode: str, calls: str) -> dict[str, Any]:
    report: dict[str, Any] = {"asked": [], "calls": []}

    async def elicit(
        context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult:
        report["asked"].append(params.message)
        return types.ElicitResult(action="accept", content={"ok": True})

    async with Client(
        url, mode=mode, elicitation_callback=elicit, read_timeout_seconds=10
    ) as client:
        report["tools"] = sorted(tool.name for tool in (await client.list_tools()).tools)
        ref = types.PromptReference(type="ref/prompt", name="modern_greet")
        try:
            done = await client.complete(ref, {"name": "who", "value": "A"})
            report["completed"] = done.completion.values
        except MCPError as error:
            report["completed"] = {"error": {"code": error.code, "message": error.message}}
        for tool, arguments in json.loads(calls):
            progress: list[float] = []

            async def on_progress(
                value: float, total: float | None, message: str | None, seen: list[float] = progress
            ) -> None:
                seen.append(value)

            try:
                result = await client.call_tool(tool, arguments, progress_callback=on_progress)
            except MCPError as error:
                report["calls"].append({"error": {"code": error.code, "message": error.message}})
                continue
            text = getattr(result.content[0], "text", None)
            report["calls"].append({"text": text, "isError": result.is_error, "progress": progress})
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
