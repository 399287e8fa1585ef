"""stdio targets: an MCP server as a child process, one per session, newline-delimited JSON.

The child is a :class:`~agentgw.mcp.channel.Channel` named in the session id. stderr lines go
to the log. A child is killed with its session (DELETE), when it has been idle for
``idle_kill`` seconds, and when the gateway stops; one that died is started again on the next
request, no sooner than its back-off (doubling up to a minute). Children get only ``HOME``,
``LOGNAME``, ``PATH``, ``SHELL``, ``TERM``, ``USER`` of the gateway's environment, plus the
target's ``env``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agentgw.http1 import Http1Pool
from agentgw.mcp.channel import Channel, Channels, ChannelUpstream
from agentgw.mcp.upstream import UpstreamError

log = logging.getLogger("agentgw.mcp.stdio")

_INHERITED = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")
_MAX_LINE = 4 << 20


@dataclass(frozen=True, slots=True)
class StdioUpstream(ChannelUpstream):
    """A stdio target: the command that starts its server; children are ``channels``."""

    name: str
    command: str
    args: tuple[str, ...]
    env: Mapping[str, str]
    idle_timeout: float
    channels: Channels
    idle_kill: float = 1800.0

    @property
    def url(self) -> str:
        return f"stdio:{self.command}"

    async def _open(self, pool: Http1Pool) -> tuple[str, Channel]:
        self.channels.check_backoff(self.name)
        await self.channels.reap(self.name, self.idle_kill)
        environment = {k: os.environ[k] for k in _INHERITED if k in os.environ} | dict(self.env)
        try:
            process = await asyncio.create_subprocess_exec(
                self.command,
                *self.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment,
                limit=_MAX_LINE,
            )
        except OSError as exc:
            raise UpstreamError(self.name, f"cannot start {self.command}: {exc}") from exc

        async def send(message: dict[str, Any]) -> None:
            assert process.stdin is not None
            try:
                process.stdin.write(orjson.dumps(message) + b"\n")
                await process.stdin.drain()
            except (ConnectionError, OSError) as exc:
                raise UpstreamError(self.name, f"the server's stdin is closed: {exc}") from exc

        async def kill() -> None:
            if process.returncode is None:
                process.kill()
            with contextlib.suppress(ProcessLookupError):
                await process.wait()

        name = f"{self.name}-{secrets.token_hex(8)}"
        channel = Channel(self.name, send, kill)
        channel.tasks = [
            asyncio.create_task(self._read(name, channel, process)),
            asyncio.create_task(self._stderr(process)),
        ]
        self.channels.running[name] = channel
        log.info("mcp stdio %s: started %s (pid %d)", self.name, self.command, process.pid)
        return name, channel

    async def _read(self, name: str, channel: Channel, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.warning("mcp stdio %s: not JSON on stdout: %.200r", self.name, line)
                    continue
                if isinstance(message, dict):
                    channel.deliver(message)
        except (ValueError, OSError) as exc:
            log.warning("mcp stdio %s: reading stdout: %s", self.name, exc)
        code = await process.wait()
        if self.channels.running.get(name) is channel:
            log.warning("mcp stdio %s: the server exited with %s", self.name, code)
        self.channels.died(name, channel)
        channel.failed(f"the server exited with {code}")

    async def _stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        with contextlib.suppress(ValueError, OSError):
            while line := await process.stderr.readline():
                log.info("mcp stdio %s: %s", self.name, line.decode(errors="replace").rstrip())
