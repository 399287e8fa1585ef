"""OpenAPI targets: each operation of an OpenAPI 3 document becomes a tool.

A tool is named by the operation's ``operationId`` (else ``<method>_<path>``, cut to the name
rule); its input schema has a property per path, query and header parameter and ``body`` for a
JSON request body, required as the document says; ``$ref`` within the document are resolved.
A call becomes the HTTP request to ``baseURL``: path parameters substituted, query and header
parameters set, ``body`` sent as JSON; the answer's body is the tool's text (and its structured
content when it is a JSON object), an HTTP error status makes it an error result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from agentgw.http1 import Http1Pool, HttpError, Origin
from agentgw.mcp.local import text_result

METHODS = ("get", "put", "post", "delete", "patch")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_DEPTH = 32


class OpenApiError(ValueError):
    """A document that cannot be made into tools; the message names where."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: its HTTP method, path template and where each argument goes."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...]  # (name, in: path | query | header)
    tool: dict[str, Any]


@dataclass(slots=True)
class OpenApiServer:
    """The tools of one OpenAPI document, called at ``base_url``."""

    document: dict[str, Any]
    base_url: str
    connect_timeout: float
    idle_timeout: float
    operations: dict[str, Operation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        paths = self.document.get("paths")
        if not isinstance(paths, dict):
            raise OpenApiError("the document has no 'paths' object")
        for path, item in paths.items():
            if not isinstance(item, dict):
                continue
            shared = item.get("parameters") or []
            for method in METHODS:
                operation = item.get(method)
                if isinstance(operation, dict):
                    self._add(method, path, operation, shared)

    def _add(self, method: str, path: str, op: dict[str, Any], shared: list[Any]) -> None:
        raw = op.get("operationId") or f"{method}_{path}"
        name = _NOT_NAME.sub("_", str(raw)).strip("_")[:100] or method
        if name in self.operations:
            raise OpenApiError(f"paths.{path}.{method}: the tool name {name!r} is used twice")
        properties: dict[str, Any] = {}
        required: list[str] = []
        params: list[tuple[str, str]] = []
        for param in [*shared, *(op.get("parameters") or [])]:
            param = self._resolve(param)
            where = param.get("in")
            if where not in ("path", "query", "header") or not param.get("name"):
                continue
            pname = str(param["name"])
            prop = self._resolve(param.get("schema") or {"type": "string"})
            if param.get("description"):
                prop = {**prop, "description": param["description"]}
            properties[pname] = prop
            params.append((pname, where))
            if param.get("required") or where == "path":
                required.append(pname)
        body = self._resolve(op.get("requestBody") or {})
        json_body = (body.get("content") or {}).get("application/json")
        if isinstance(json_body, dict):
            properties["body"] = self._resolve(json_body.get("schema") or {})
            if body.get("required"):
                required.append("body")
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        description = op.get("summary") or op.get("description") or f"{method.upper()} {path}"
        tool = {"name": name, "description": description, "inputSchema": schema}
        self.operations[name] = Operation(method.upper(), path, tuple(params), tool)

    def _resolve(self, value: Any, depth: int = 0) -> Any:
        """``value`` with local ``$ref``s replaced by what they point at."""
        if depth > _MAX_DEPTH:
            raise OpenApiError("$ref nesting is deeper than 32")
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str):
                return self._resolve(self._pointer(ref), depth + 1)
            return {k: self._resolve(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v, depth + 1) for v in value]
        return value

    def _pointer(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise OpenApiError(f"$ref {ref!r}: only references within the document are followed")
        node: Any = self.document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise OpenApiError(f"$ref {ref!r} points at nothing")
            node = node[part]
        return node

    async def load(self, pool: Http1Pool) -> None:
        """Nothing to fetch: the document was read at compile."""

    def tools(self) -> list[dict[str, Any]]:
        return [operation.tool for operation in self.operations.values()]

    async def call(self, pool: Http1Pool, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        operation = self.operations[name]
        path = operation.path
        query: list[tuple[str, str]] = []
        headers = {"accept": "application/json"}
        for pname, where in operation.params:
            if pname not in arguments:
                continue
            value = _text(arguments[pname])
            if where == "path":
                path = path.replace("{" + pname + "}", quote(value, safe=""))
            elif where == "query":
                query.append((pname, value))
            else:
                headers[pname.lower()] = value
        body = b""
        if "body" in arguments:
            body = orjson.dumps(arguments["body"])
            headers["content-type"] = "application/json"
        url = self.base_url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        try:
            response = await pool.request(
                operation.method,
                Origin.of(url),
                headers,
                body,
                self.connect_timeout,
                self.idle_timeout,
            )
            answer = await response.read()
            response.close()
        except HttpError as exc:
            return text_result(f"{operation.method} {url}: {exc}", error=True)
        text = answer.decode(errors="replace")
        structured = None
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                structured = orjson.loads(answer)
            except orjson.JSONDecodeError:
                structured = None
        if response.status >= 400:
            return text_result(f"HTTP {response.status}: {text}", error=True)
        return text_result(text, structured=structured)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
