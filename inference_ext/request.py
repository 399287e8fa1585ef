"""What the endpoint picker reads of an LLM request: the model, the prompt bytes, the priority.

Only the fields routing needs are decoded (a typed ``msgspec`` struct; ``messages``, ``prompt``
and ``input`` stay raw JSON bytes): the original body is forwarded untouched. The prompt bytes
are what prefix-cache affinity hashes: the JSON of ``messages`` for chat completions, of
``prompt`` for completions, of ``input`` (after ``instructions``) for the Responses API and
embeddings — the same text for the same conversation prefix, whatever else the body holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

OBJECTIVE_HEADER = "x-gateway-inference-objective"
MODEL_REWRITE_HEADER = "x-gateway-model-name-rewrite"
SUBSET_HEADER = "x-gateway-destination-endpoint-subset"
# An application's scores for earlier answers, sent along with a later request:
# ``<x-request-id of the answer>=<score in [0, 1]>``, comma-separated.
FEEDBACK_HEADER = "x-ambient-feedback"
MAX_FEEDBACK = 16  # scores one request may carry


class RequestError(ValueError):
    """A body the picker cannot route (not JSON, or ``model`` not a string): 400."""


_ABSENT = msgspec.Raw()  # an empty Raw: the field was not in the body


class _Body(msgspec.Struct):
    model: object = None
    messages: msgspec.Raw = _ABSENT
    prompt: msgspec.Raw = _ABSENT
    input: msgspec.Raw = _ABSENT
    instructions: msgspec.Raw = _ABSENT
    stream: object = False


_decode = msgspec.json.Decoder(_Body).decode


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """One request as the scheduler sees it."""

    request_id: str
    model: str  # the model asked for ("" when the body names none)
    prompt: bytes  # what prefix-cache affinity hashes (see the module docstring)
    priority: int = 0  # the InferenceObjective's; higher is served first, < 0 is sheddable
    objective: str = ""  # the objective's name, from x-gateway-inference-objective
    stream: bool = False
    body_size: int = 0
    # Endpoints ("ip:port") the pick must come from (x-gateway-destination-endpoint-subset).
    subset: frozenset[str] | None = None
    # Endpoints ("ip:port") this request was already sent to (a retry avoids them if it can).
    exclude: frozenset[str] = frozenset()
    headers: Mapping[str, str] = field(default_factory=dict)


def parse_body(body: bytes) -> tuple[str, bytes, bool]:
    """``(model, prompt bytes, stream)`` of an OpenAI-style JSON body; RequestError if the body
    is not a JSON object or its ``model`` is not a string. An empty body is no model, no prompt."""
    if not body:
        return "", b"", False
    try:
        parsed = _decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RequestError(f"the request body is not a JSON object: {exc}") from exc
    model = parsed.model
    if model is None:
        model = ""
    elif not isinstance(model, str):
        raise RequestError("the request body's 'model' must be a string")
    if parsed.messages:
        prompt = bytes(parsed.messages)
    elif parsed.prompt:
        prompt = bytes(parsed.prompt)
    elif parsed.input:
        prompt = bytes(parsed.instructions) + bytes(parsed.input)
    else:
        prompt = b""
    return model, prompt, parsed.stream is True


def subset_of(value: str | None) -> frozenset[str] | None:
    """The endpoints an ``x-gateway-destination-endpoint-subset`` value allows (None: any)."""
    if not value:
        return None
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def feedback_of(value: str) -> list[tuple[str, float]]:
    """The ``(request id, score)`` pairs of an ``x-ambient-feedback`` value; RequestError (400)
    naming the header and the part it cannot read."""
    scores: list[tuple[str, float]] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        request_id, sep, number = part.rpartition("=")
        request_id = request_id.strip()
        try:
            score = float(number)
        except ValueError:
            score = -1.0
        if not sep or not request_id or not 0.0 <= score <= 1.0:
            raise RequestError(
                f"{FEEDBACK_HEADER}: expected '<request id>=<score in [0, 1]>', got {part!r}"
            )
        scores.append((request_id, score))
    if len(scores) > MAX_FEEDBACK:
        raise RequestError(f"{FEEDBACK_HEADER}: at most {MAX_FEEDBACK} scores per request")
    return scores
