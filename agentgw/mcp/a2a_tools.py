"""A2A targets: an A2A agent offered as MCP tools.

The agent's card (read once, at the first ``tools/list``) gives one tool per skill; the tool
``send_message`` is always there. A call sends the ``text`` argument to the agent as an A2A v1.0
``SendMessage`` (JSON-RPC) and answers with the texts the agent sent back: a message's parts,
or a task's artifacts and status message; a task that failed or was rejected, and a JSON-RPC
error, make an error result.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentgw.a2a.card import CARD_PATHS, fetch_card
from agentgw.http1 import Http1Pool, HttpError, Origin
from agentgw.mcp.local import text_result

_INPUT = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "What to tell the agent."}},
    "required": ["text"],
}
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_FAILED = {"TASK_STATE_FAILED", "TASK_STATE_REJECTED", "failed", "rejected"}


@dataclass(slots=True)
class A2aToolServer:
    """The tools of one A2A agent at ``url``."""

    url: str
    connect_timeout: float
    idle_timeout: float
    skills: list[dict[str, Any]] | None = None  # from the card, once read
    listed: list[dict[str, Any]] = field(default_factory=list)

    def tools(self) -> list[dict[str, Any]]:
        send = {
            "name": "send_message",
            "description": "Send a message to the agent and return its answer.",
            "inputSchema": _INPUT,
        }
        return [send, *self.listed]

    async def load(self, pool: Http1Pool) -> None:
        """Read the card's skills (once; an unreadable card leaves only send_message)."""
        if self.skills is not None:
            return
        self.skills = []
        try:
            found = await fetch_card(
                pool, self.url, CARD_PATHS[0], self.connect_timeout, self.idle_timeout
            )
        except HttpError:
            found = None
        card = found or {}
        for skill in card.get("skills") or []:
            if not isinstance(skill, dict) or not skill.get("id"):
                continue
            name = _NOT_NAME.sub("_", str(skill["id"]))[:100]
            if name == "send_message":
                continue
            self.skills.append(skill)
            description = skill.get("description") or skill.get("name") or name
            self.listed.append({"name": name, "description": description, "inputSchema": _INPUT})

    async def call(self, pool: Http1Pool, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        text = arguments.get("text")
        if not isinstance(text, str):
            return text_result("text: expected a string", error=True)
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {
                "message": {
                    "role": "ROLE_USER",
                    "messageId": str(uuid.uuid4()),
                    "parts": [{"text": text}],
                }
            },
        }
        headers = {"content-type": "application/json", "a2a-version": "1.0"}
        try:
            response = await pool.request(
                "POST",
                Origin.of(self.url),
                headers,
                orjson.dumps(request),
                self.connect_timeout,
                self.idle_timeout,
            )
            body = await response.read()
            response.close()
            answer = orjson.loads(body)
        except (HttpError, orjson.JSONDecodeError) as exc:
            return text_result(f"agent at {self.url}: {exc}", error=True)
        if not isinstance(answer, dict):
            return text_result("the agent's answer is not JSON-RPC", error=True)
        error = answer.get("error")
        if isinstance(error, dict):
            return text_result(f"agent error {error.get('code')}: {error.get('message')}", True)
        return _texts(answer.get("result"))


def _texts(result: Any) -> dict[str, Any]:
    """The texts of a SendMessage result (a message or a task)."""
    if not isinstance(result, dict):
        return text_result("the agent's answer has no result", error=True)
    message = result.get("message")
    if isinstance(message, dict):
        return text_result("\n".join(_parts(message)))
    task = result.get("task")
    if not isinstance(task, dict):
        return text_result("the agent's answer is neither a message nor a task", error=True)
    texts = [t for artifact in task.get("artifacts") or [] for t in _parts(artifact)]
    status = task.get("status") or {}
    texts += _parts(status.get("message") or {})
    state = status.get("state", "")
    return text_result("\n".join(texts) or str(state), error=state in _FAILED, structured=task)


def _parts(holder: dict[str, Any]) -> list[str]:
    return [p["text"] for p in holder.get("parts") or [] if isinstance(p, dict) and "text" in p]
