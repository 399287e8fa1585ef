"""One tool call by the ``mcp`` 2.x ``Client`` (run in ``.venv-mcp2``, not imported).

``python client_call.py URL MODE TOOL ARGUMENTS [cancel] [log=LEVEL]``: calls ``TOOL`` with
``ARGUMENTS`` (JSON) and prints a JSON line as each progress notification or log message arrives
(``{"progress": n}``, ``{"log": data}``), then one for the result (``{"text": ...}``) or the error
(``{"error": {"code", "message"}}``). With ``cancel`` the client abandons the call at its first
progress notification (a stateless client cancels by closing the call's stream) and prints
``{"cancelled": true}``; ``log=LEVEL`` opts in to log messages at LEVEL (none without it).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp import Client
from mcp.shared.exceptions import MCPError


def say(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


async def main(url: str, mode: str, tool: str, arguments: str, *extra: str) -> None:
    cancel = "cancel" in extra
    level = next((e.removeprefix("log=") for e in extra if e.startswith("log=")), None)

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        say({"log": params.data})

    async with Client(
        url, mode=mode, read_timeout_seconds=10, logging_callback=log, log_level=level
    ) as client:
        with anyio.CancelScope() as scope:

            async def progress(value: float, total: float | None, message: str | None) -> None:
                say({"progress": value})
                if cancel:
                    scope.cancel()

            try:
                result = await client.call_tool(
                    tool, json.loads(arguments), progress_callback=progress
                )
                say({"text": getattr(result.content[0], "text", None)})
            except MCPError as error:
                say({"error": {"code": error.code, "message": error.message}})
        if scope.cancelled_caught:
            say({"cancelled": True})


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
