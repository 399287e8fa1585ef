"""The simulator's fake tokenizer: 4 characters a token, prompts cut into hashed 16-token blocks.

The rule: a text of ``n`` characters (Python ``str`` length, i.e. Unicode code points) is
``ceil(n / 4)`` tokens, token ``i`` being characters ``4i .. 4i+3``. A prompt given as token ids
is that many tokens. It is the same estimate the endpoint picker uses (request characters / 4),
and a 16-token KV block is the same 64 characters as its approximate prefix index's blocks.

Chat requests are rendered with a small template (``render_chat``) first, as vLLM applies the
model's chat template, so a conversation's earlier turns are a prefix of its later prompts.

Generated text is drawn from ``VOCAB``, whose words are exactly 4 characters: an answer of ``k``
tokens is ``4k`` characters and counts back to ``k`` tokens under the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

CHARS_PER_TOKEN = 4

VOCAB: tuple[str, ...] = (
    " the", " and", " for", " you", " not", " are", " but", " all", " can", " was",
    " one", " our", " out", " day", " get", " has", " new", " now", " see", " two",
    " way", " who", " its", " let", " put", " say", " too", " use", " run", " set",
    " kv ", " gpu", " llm", " sim", " may", " yes", " any", " few", " far", " big",
    "ing ", "tion", "ed, ", "ly. ", " on ", " in ", " to ", " of ", " is ", " it ",
    " be ", " at ", " by ", " or ", " as ", " we ", " an ", " up ", " so ", " do ",
    " if ", " no ", " my ", " go ",
)  # fmt: skip


def count_tokens(text: str) -> int:
    """Tokens in ``text``: ``ceil(len(text) / 4)``."""
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Prompt:
    """A tokenized prompt: its length and the chained hashes of its full KV blocks."""

    tokens: int
    block_hashes: tuple[int, ...]


def _root(namespace: str) -> int:
    # The chain starts from the model or adapter name: the same text under another adapter is
    # another KV content. Python's hash is per process, as the cache is.
    return hash(("ambient-sim-kv", namespace))


def text_prompt(text: str, namespace: str, block_size: int) -> Prompt:
    """``text`` as a prompt of ``namespace`` (the model or adapter the request runs on)."""
    step = block_size * CHARS_PER_TOKEN
    parent = _root(namespace)
    hashes = []
    for start in range(0, len(text) - step + 1, step):
        parent = hash((parent, text[start : start + step]))
        hashes.append(parent)
    return Prompt(count_tokens(text), tuple(hashes))


def token_prompt(ids: Sequence[int], namespace: str, block_size: int) -> Prompt:
    """A prompt given as token ids (``/v1/completions`` accepts them)."""
    parent = _root(namespace)
    hashes = []
    for start in range(0, len(ids) - block_size + 1, block_size):
        parent = hash((parent, tuple(ids[start : start + block_size])))
        hashes.append(parent)
    return Prompt(len(ids), tuple(hashes))


def render_chat(turns: Iterable[tuple[str, str]], tools_json: str = "") -> str:
    """The chat template: ``<|role|>\\ntext\\n`` per turn, then the assistant's cue."""
    parts = [f"<|tools|>\n{tools_json}\n"] if tools_json else []
    parts += [f"<|{role}|>\n{text}\n" for role, text in turns]
    parts.append("<|assistant|>\n")
    return "".join(parts)


def output_text(start: int, stride: int, count: int) -> str:
    """``count`` generated tokens: word ``start + i * stride`` of ``VOCAB`` for token ``i``."""
    size = len(VOCAB)
    return "".join(VOCAB[(start + i * stride) % size] for i in range(count))
