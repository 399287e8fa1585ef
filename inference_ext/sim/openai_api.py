"""The OpenAI API the simulator answers: request validation, error bodies, and each answer's plan.

An answer is a function of the seed and the request (model, prompt, tools, ``seed`` field): the
same request gets the same text, length and tool call from every replica, as one set of weights
at temperature 0 would give. ``answers_of`` plans answers as another model name would get them,
and ``answer_variant`` gives a seeded share of prompts other words (same length; a tool call's
arguments are kept): a canary that agrees with stable on the rest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from inference_ext.sim.config import SimConfig
from inference_ext.sim.tokenizer import VOCAB, count_tokens, render_chat
from inference_ext.sim.tools import arguments_for

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> bytes:
        """The JSON body."""
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return orjson.dumps({"error": error})


def injected_error(status: int) -> ApiError:
    """What failure injection answers with ``status`` (429, 500 or 503)."""
    if status == 429:
        return ApiError(
            429,
            "Rate limit reached (simulated by --error-rate); please retry.",
            type="requests",
            code="rate_limit_exceeded",
        )
    if status == 503:
        return ApiError(
            503,
            "The engine is currently overloaded (simulated by --error-rate); please retry.",
            type="server_error",
            code="overloaded",
        )
    return ApiError(
        500,
        "The server had an error while processing your request (simulated by --error-rate).",
        type="server_error",
        code="internal_error",
    )


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the request offers."""

    name: str
    parameters: object


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated ``/v1/chat/completions`` or ``/v1/completions`` request."""

    chat: bool
    model: str  # as asked: the base model or an adapter
    adapter: str | None
    text: str  # the prompt as text (chat: rendered with the template); "" when given as ids
    ids: tuple[int, ...] | None
    max_tokens: int | None
    stream: bool
    include_usage: bool
    tools: tuple[Tool, ...]  # answer with a call to one of these; () answers with text
    seed: int | None


@dataclass(frozen=True, slots=True)
class Answer:
    """What the request will be answered: its length, words and tool call."""

    tokens: int
    finish_reason: str  # stop, length or tool_calls
    text_start: int
    text_stride: int
    tool: str | None = None
    tool_call_id: str = ""
    arguments: str = ""  # the call's JSON arguments, cut to ``tokens`` x 4 characters

    @property
    def engine_reason(self) -> str:
        """vLLM's ``finished_reason`` (a tool call is a stop)."""
        return "length" if self.finish_reason == "length" else "stop"


def _fail(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def _optional_int(data: dict[str, Any], name: str, low: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise _fail(f"{name}: expected an integer >= {low}, got {value!r}", name)
    return value


def parse_request(chat: bool, body: bytes, config: SimConfig) -> GenerationRequest:
    """Validate a request body; ApiError (400, or 404 for an unknown model) names the field."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _fail(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _fail("the request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("model: a model name (string) is required", "model")
    if model == config.model:
        adapter = None
    elif model in config.loras:
        adapter = model
    else:
        raise ApiError(
            404, f"The model `{model}` does not exist.", param="model", code="model_not_found"
        )
    stream = data.get("stream")
    if stream is None:
        stream = False
    elif not isinstance(stream, bool):
        raise _fail(f"stream: expected true or false, got {stream!r}", "stream")
    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not stream:
            raise _fail("stream_options: only allowed when stream is true", "stream_options")
        if not isinstance(options, dict):
            raise _fail("stream_options: expected an object", "stream_options")
        include_usage = options.get("include_usage") is True
    n = _optional_int(data, "n", 1)
    if n is not None and n != 1:
        raise _fail(f"n: the simulator generates one choice, so n must be 1, got {n}", "n")
    max_tokens = _optional_int(data, "max_tokens", 1)
    if chat:
        max_tokens = _optional_int(data, "max_completion_tokens", 1) or max_tokens
    seed = data.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise _fail(f"seed: expected an integer, got {seed!r}", "seed")
    if chat:
        text, tools = _chat_prompt(data)
        ids = None
    else:
        text, ids = _completion_prompt(data.get("prompt"))
        tools = ()
    return GenerationRequest(
        chat, model, adapter, text, ids, max_tokens, stream, include_usage, tools, seed
    )


def _content(content: object, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _fail(f"{where}[{j}]: only text parts are supported", "messages")
            text = part.get("text")
            if not isinstance(text, str):
                raise _fail(f"{where}[{j}].text: expected a string", "messages")
            parts.append(text)
        return "".join(parts)
    raise _fail(f"{where}: expected a string, a list of text parts or null", "messages")


def _chat_prompt(data: dict[str, Any]) -> tuple[str, tuple[Tool, ...]]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("messages: a non-empty list of messages is required", "messages")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _fail(f"messages[{i}]: expected an object", "messages")
        role = message.get("role")
        if role not in ROLES:
            raise _fail(
                f"messages[{i}].role: expected one of {', '.join(sorted(ROLES))}, got {role!r}",
                "messages",
            )
        text = _content(message.get("content"), f"messages[{i}].content")
        calls = message.get("tool_calls")
        if calls:
            text += orjson.dumps(calls).decode()
        turns.append((role, text))
    offered = data.get("tools")
    tools: list[Tool] = []
    if offered is not None:
        if not isinstance(offered, list):
            raise _fail("tools: expected a list of functions", "tools")
        for i, tool in enumerate(offered):
            function = tool.get("function") if isinstance(tool, dict) else None
            if (
                not isinstance(function, dict)
                or tool.get("type") != "function"
                or not isinstance(function.get("name"), str)
                or not function["name"]
            ):
                raise _fail(
                    f'tools[{i}]: expected {{"type": "function", "function": {{"name": ...}}}}',
                    "tools",
                )
            tools.append(Tool(function["name"], function.get("parameters")))
    choice = data.get("tool_choice")
    forced: str | None = None
    if isinstance(choice, dict):
        function = choice.get("function")
        forced = function.get("name") if isinstance(function, dict) else None
        if not any(tool.name == forced for tool in tools):
            raise _fail(f"tool_choice: names no offered tool ({forced!r})", "tool_choice")
    elif choice not in (None, "none", "auto", "required"):
        raise _fail(
            f"tool_choice: expected none, auto, required or a function, got {choice!r}",
            "tool_choice",
        )
    elif choice == "required" and not tools:
        raise _fail("tool_choice: required, but the request offers no tools", "tool_choice")
    text = render_chat(turns, orjson.dumps(offered).decode() if tools else "")
    # An agent loop sends the tool's result back; "auto" then answers in text, as models do.
    call = tools and (
        forced or choice == "required" or (choice != "none" and turns[-1][0] != "tool")
    )
    if not call:
        return text, ()
    return text, tuple(tool for tool in tools if tool.name == forced) if forced else tuple(tools)


def _completion_prompt(prompt: object) -> tuple[str, tuple[int, ...] | None]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt:
            raise _fail("prompt: must not be empty", "prompt")
        return prompt, None
    if isinstance(prompt, list) and prompt:
        if all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in prompt):
            return "", tuple(prompt)
        if all(isinstance(i, str | list) for i in prompt):
            raise _fail(
                "prompt: one prompt per request (the simulator generates one choice)", "prompt"
            )
    raise _fail("prompt: expected a string or a list of token ids", "prompt")


def _variant(
    config: SimConfig, model: str, seed: int | None, key: str, start: int, stride: int
) -> tuple[int, int]:
    """Other words for ``answer_variant`` of the prompts, chosen by the seed and the prompt alone.

    The stride changes too: the same stride from another start would be the usual answer shifted
    by a few words, which a similarity measure would still find alike.
    """
    pick = random.Random(f"{config.seed}\0variant\0{model}\0{seed}\0{key}")
    if pick.random() >= config.answer_variant:
        return start, stride
    other = (stride + 2 * pick.randrange(1, len(VOCAB) // 2)) % len(VOCAB)
    return pick.randrange(len(VOCAB)), other


def plan_answer(request: GenerationRequest, prompt_tokens: int, config: SimConfig) -> Answer:
    """The answer's length, words and tool call, from the seed and the request."""
    room = config.max_model_len - prompt_tokens
    wanted = request.max_tokens
    if room < 1 or (wanted is not None and wanted > room):
        raise ApiError(
            400,
            f"This model's maximum context length is {config.max_model_len} tokens. However, "
            f"you requested {prompt_tokens + (wanted or 1)} tokens ({prompt_tokens} in the "
            f"{'messages' if request.chat else 'prompt'}, {wanted or 1} in the completion).",
            param="messages" if request.chat else "prompt",
            code="context_length_exceeded",
        )
    key = request.text if request.ids is None else repr(request.ids)
    model = config.answers_of or request.model
    rng = random.Random(f"{config.seed}\0{model}\0{request.seed}\0{key}")
    start, stride = rng.randrange(len(VOCAB)), rng.randrange(1, len(VOCAB), 2)
    if config.answer_variant:
        start, stride = _variant(config, model, request.seed, key, start, stride)
    if request.tools:
        tool = rng.choice(request.tools)
        arguments = orjson.dumps(arguments_for(tool.parameters, rng)).decode()
        call_id = f"call_{rng.getrandbits(96):024x}"
        need = count_tokens(arguments)
        limit = min(room, wanted) if wanted is not None else room
        if need > limit:
            return Answer(limit, "length", start, stride, tool.name, call_id, arguments)
        return Answer(need, "tool_calls", start, stride, tool.name, call_id, arguments)
    if wanted is not None:
        return Answer(wanted, "length", start, stride)
    low, high = config.output_tokens
    tokens = rng.randint(low, high)
    if tokens > room:
        return Answer(room, "length", start, stride)
    return Answer(tokens, "stop", start, stride)
