"""The scheduling benchmark's workload: groups sharing long system prompts, multi-turn chats.

``G`` groups each have a system prompt of their own (a few thousand tokens, at the simulator's
and the picker's 4 characters a token). Each group has ``users`` users; a user holds one
conversation at a time, of ``turns`` turns, then starts a new one under the same system prompt.
A turn's messages are the system prompt, every earlier question and answer of the conversation,
and a new question, so a conversation's turns share ever longer prefixes. The answer written
into the history is the one the simulator gives (``plan_answer``: a function of the seed and the
request), so a later turn carries what the model really said.

Arrivals are Poisson at a series of rates, ``step`` seconds each: ``rate x step`` arrivals at
uniformly random times in the step (a Poisson process given its count, so every step offers
exactly its rate); each arrival is the next turn of a user drawn uniformly. Everything comes
from one seeded ``random.Random``, so every policy sees the same request bytes at the same
offsets. The contents are fixed in advance: a turn may be sent before the previous turn of the
same user has been answered (at saturation), as an open-loop generator must allow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from inference_ext.sim.config import SimConfig
from inference_ext.sim.openai_api import parse_request, plan_answer
from inference_ext.sim.tokenizer import CHARS_PER_TOKEN, count_tokens, output_text

PATH = b"/v1/chat/completions"
_WORDS = (
    "model", "cache", "token", "batch", "queue", "prefix", "server", "router", "policy",
    "latency", "answer", "system", "prompt", "context", "request", "stream", "memory", "engine",
    "window", "budget", "signal", "metric", "sample", "record", "value", "review", "account",
    "invoice", "support", "ticket", "product", "order", "refund", "shipment", "customer",
    "contract", "clause", "section", "summary", "detail", "example", "guideline", "format",
    "language", "careful",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """The workload's shape (token counts are at 4 characters a token)."""

    groups: int = 24
    users: int = 4  # per group
    system_tokens: tuple[int, int] = (2000, 6000)
    question_tokens: tuple[int, int] = (40, 200)
    answer_tokens: tuple[int, int] = (32, 160)  # max_tokens of each request
    turns: tuple[int, int] = (2, 6)  # per conversation
    rates: tuple[float, ...] = (4.0, 8.0, 12.0, 16.0, 20.0)  # requests per second, per step
    step: float = 12.0  # seconds per rate
    seed: int = 1


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request: when it is due (seconds from the run's start), its step, its bytes."""

    at: float
    step: int
    group: int
    user: int
    turn: int  # 0 for a conversation's first
    prompt_tokens: int
    max_tokens: int
    request: bytes  # the whole HTTP/1.1 request


def _text(rng: random.Random, tokens: int, lead: str) -> str:
    """About ``tokens`` tokens of words, starting with ``lead`` (so texts differ from the start)."""
    target = tokens * CHARS_PER_TOKEN
    parts = [lead]
    size = len(lead)
    words = _WORDS
    while size < target:
        word = words[rng.randrange(len(words))]
        parts.append(word)
        size += len(word) + 1
    return " ".join(parts)[:target]


class _User:
    __slots__ = ("group", "history", "left", "name")

    def __init__(self, group: int, name: str) -> None:
        self.group = group
        self.name = name
        self.history: list[dict[str, str]] = []
        self.left = 0


def build(spec: WorkloadSpec, sim: SimConfig, host: str) -> list[Arrival]:
    """Every request of the run, in arrival order."""
    rng = random.Random(spec.seed)
    systems = [
        _text(
            rng,
            rng.randint(*spec.system_tokens),
            f"You are the assistant of team {g}; follow these rules.",
        )
        for g in range(spec.groups)
    ]
    users = [_User(g, f"g{g}u{u}") for g in range(spec.groups) for u in range(spec.users)]
    arrivals: list[Arrival] = []
    start = 0.0
    count = 0
    for step, rate in enumerate(spec.rates):
        times = sorted(start + rng.random() * spec.step for _ in range(round(rate * spec.step)))
        for at in times:
            index = rng.randrange(len(users))
            user = users[index]
            if user.left == 0:
                user.history = []
                user.left = rng.randint(*spec.turns)
            count += 1
            question = _text(rng, rng.randint(*spec.question_tokens), f"[{user.name} #{count}]")
            messages = [
                {"role": "system", "content": systems[user.group]},
                *user.history,
                {"role": "user", "content": question},
            ]
            max_tokens = rng.randint(*spec.answer_tokens)
            body = orjson.dumps(
                {
                    "model": sim.model,
                    "messages": messages,
                    "max_tokens": max_tokens,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
            )
            parsed = parse_request(True, body, sim)
            prompt_tokens = count_tokens(parsed.text)
            answer = plan_answer(parsed, prompt_tokens, sim)
            user.history += [
                {"role": "user", "content": question},
                {
                    "role": "assistant",
                    "content": output_text(answer.text_start, answer.text_stride, answer.tokens),
                },
            ]
            turn = (len(user.history) - 2) // 2
            user.left -= 1
            head = (
                b"POST %b HTTP/1.1\r\nhost: %b\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % (PATH, host.encode(), len(body))
            )
            arrivals.append(
                Arrival(at, step, user.group, index, turn, prompt_tokens, max_tokens, head + body)
            )
        start += spec.step
    return arrivals
