"""The server capabilities the ``mcp`` 2.x ``Client`` learns (run in ``.venv-mcp2``).

``python client_capabilities.py URL``: connects in ``legacy`` mode (initialize) and in ``auto``
mode (``server/discover``); prints ``{mode: capabilities}`` as JSON (wire names, no nulls).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from mcp import Client


async def capabilities(url: str, mode: str) -> dict[str, Any]:
    async with Client(url, mode=mode) as client:
        return client.server_capabilities.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(url: str) -> dict[str, Any]:
    return {mode: await capabilities(url, mode) for mode in ("legacy", "auto")}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
