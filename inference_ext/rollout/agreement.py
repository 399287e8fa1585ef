"""Answer agreement: a mirrored share of stable's requests also goes to the canary, the answers are
compared, the canary's is dropped, and the share that agree is the rollout's ``agreement`` metric.

Pieces, each usable alone:

- :class:`AnswerReader`, sans-IO: fed an OpenAI ``/v1/chat/completions`` or ``/v1/completions``
  response body in chunks cut anywhere, streamed (``text/event-stream``, read with the gateway's
  :class:`~gateway.protocols.sse.SseReader`) or one JSON document, it gives the answer's text:
  the content, then one line per tool call (its name, a space, its arguments). The same answer
  gives the same text streamed or not.
- :class:`Comparison`: ``exact`` (equal after trimming) or ``similarity`` (at least ``threshold``,
  see :func:`similarity`).
- :func:`compare_with_canary`: send the request to the canary with its ``model`` replaced, read
  the answer fully, compare, drop it.
- :class:`AgreementStats` and :class:`AgreementCounters`: counts per rollout and interval,
  bounded; :func:`merge_views` sums the counters of ``--workers`` processes, :func:`stats_since`
  reads a rollout's share from the sum.

What counts: a canary that fails (``send`` raises, times out, or its body is not an answer)
*disagrees* — a user routed to it would not have got stable's answer; the error-rate metric also
sees the failure, and agreement must not look better for a canary that errors. When stable's own
answer is not an answer (an error body, a cut stream) or the request has no top-level ``model``
string, there is nothing to compare: the result is ``None`` and is not counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import orjson

from gateway.protocols.sse import SseError, SseReader
from inference_ext.rewrite.splice import replace_model

log = logging.getLogger(__name__)

MAX_ANSWER = 4 << 20  # bytes of one answer body kept for comparison
Mode = Literal["exact", "similarity"]

# A JSON string (escapes included) or a bracket: enough to find top-level keys without parsing.
_PUNCTUATION = re.compile(r"[^\w\s]+")
# The same characters for ASCII text, through str.translate: twice as fast as the expression.
_ASCII_PUNCTUATION = str.maketrans(
    {c: " " for c in map(chr, range(128)) if _PUNCTUATION.fullmatch(c)}
)


class AnswerError(ValueError):
    """A response body that is not an OpenAI completion answer; the message says why."""


class AnswerReader:
    """Incremental reader of one completion response body: ``feed`` chunks, then ``text()``."""

    __slots__ = ("_buffer", "_calls", "_content", "_done", "_kind", "_max", "_size", "_sse")

    def __init__(self, max_bytes: int = MAX_ANSWER) -> None:
        self._max = max_bytes
        self._size = 0
        self._kind: Literal["json", "sse"] | None = None  # from the first non-blank byte
        self._buffer: list[bytes] = []  # a JSON body, until text()
        self._sse = SseReader()
        self._content: list[str] = []
        self._calls: dict[int, tuple[list[str], list[str]]] = {}  # index -> name, arguments
        self._done = False  # a stream's "data: [DONE]" was read

    def feed(self, data: bytes) -> None:
        """Take the next chunk of the body."""
        self._size += len(data)
        if self._size > self._max:
            raise AnswerError(f"answer body over {self._max} bytes")
        if self._kind is None:
            start = data.lstrip()
            if not start:
                return
            self._kind = "json" if start[:1] == b"{" else "sse"
        if self._kind == "json":
            self._buffer.append(data)
            return
        try:
            events = self._sse.feed(data)
        except SseError as exc:
            raise AnswerError(str(exc)) from exc
        for event in events:
            if event.data == "[DONE]":
                self._done = True
            elif not self._done:
                self._chunk(_json(event.data.encode()))

    def text(self) -> str:
        """The answer's text: content, then ``\\n<name> <arguments>`` per tool call."""
        if self._kind is None:
            raise AnswerError("empty body")
        if self._kind == "json":
            self._whole(_json(b"".join(self._buffer)))
        elif not self._done:
            raise AnswerError("event stream ended without data: [DONE]")
        calls = "".join(
            f"\n{''.join(name)} {''.join(arguments)}"
            for _, (name, arguments) in sorted(self._calls.items())
        )
        return "".join(self._content) + calls

    def _choice(self, document: Any) -> Mapping[str, Any] | None:
        """The first choice (index 0) of a document, None if it has none (a usage chunk)."""
        if not isinstance(document, dict) or "error" in document:
            raise AnswerError(f"not a completion: {str(document)[:200]}")
        choices = document.get("choices")
        if not isinstance(choices, list):
            raise AnswerError("not a completion: no choices")
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                return choice
        return None

    def _chunk(self, document: Any) -> None:
        """One streamed chunk: a delta (chat) or a text piece (completions)."""
        choice = self._choice(document)
        if choice is None:
            return
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._add(delta.get("content"))
            for call in delta.get("tool_calls") or ():
                self._call(call)
        else:
            self._add(choice.get("text"))

    def _whole(self, document: Any) -> None:
        """A whole answer: ``message`` (chat) or ``text`` (completions)."""
        choice = self._choice(document)
        if choice is None:
            raise AnswerError("not a completion: no choice 0")
        message = choice.get("message")
        if isinstance(message, dict):
            self._add(message.get("content"))
            for index, call in enumerate(message.get("tool_calls") or ()):
                self._call({"index": index, **call} if isinstance(call, dict) else call)
        else:
            self._add(choice.get("text"))

    def _add(self, text: object) -> None:
        if isinstance(text, str):
            self._content.append(text)

    def _call(self, call: object) -> None:
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            return
        index = call.get("index", 0)
        name, arguments = self._calls.setdefault(index if isinstance(index, int) else 0, ([], []))
        function = call["function"]
        if isinstance(function.get("name"), str):
            name.append(function["name"])
        if isinstance(function.get("arguments"), str):
            arguments.append(function["arguments"])


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise AnswerError(f"not JSON: {exc}") from exc


def answer_text(body: bytes) -> str | None:
    """The text of a whole response body, or None if it is not an answer."""
    reader = AnswerReader()
    try:
        reader.feed(body)
        return reader.text()
    except AnswerError as exc:
        log.debug("agreement: unreadable answer: %s", exc)
        return None


def normalize(text: str) -> list[str]:
    """Words for comparison: lowercased, punctuation dropped, split on any whitespace."""
    if text.isascii():
        return text.lower().translate(_ASCII_PUNCTUATION).split()
    return _PUNCTUATION.sub(" ", text.lower()).split()


def similarity(a: str, b: str) -> float:
    """Dice similarity of the texts' sets of consecutive word pairs, 0..1 (``2|A∩B|/(|A|+|B|)``).

    Why this measure: it runs in serving processes for every mirrored request, and it is linear
    (two set builds and an intersection), where ``difflib.SequenceMatcher`` is quadratic at worst
    and, over 200 words, treats frequent words as junk unless told not to. ``python -m
    bench.agreement`` on 2 KB answers: ~110 µs a comparison, difflib on the same words ~1 ms
    without its junk heuristic (~0.35 ms with it, scoring a 5% edit 0.44), ~3.5 ms on characters.
    Dice is on difflib's ``ratio`` scale (2 x matches / total): a 5% word edit scores ~0.91
    (~0.95 with difflib). Pairs keep local word order (the same words reshuffled score low); a
    changed word costs the two pairs it is in. A text of fewer than two words is compared as its
    set of words; two empty texts are alike.
    """
    words_a, words_b = normalize(a), normalize(b)
    pairs = len(words_a) >= 2 and len(words_b) >= 2
    set_a, set_b = _shingles(words_a, pairs), _shingles(words_b, pairs)
    if not set_a and not set_b:
        return 1.0
    return 2 * len(set_a & set_b) / (len(set_a) + len(set_b))


def _shingles(words: list[str], pairs: bool) -> set[tuple[str, ...]]:
    return set(pairwise(words)) if pairs else {(word,) for word in words}


@dataclass(frozen=True, slots=True)
class Comparison:
    """How two answers are compared: ``exact`` after trimming, or ``similarity >= threshold``."""

    mode: Mode = "exact"
    threshold: float = 0.9

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "similarity"):
            raise ValueError(f"mode: expected 'exact' or 'similarity', got {self.mode!r}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold: expected a fraction in [0, 1], got {self.threshold}")

    def agree(self, stable: str, canary: str) -> bool:
        """Whether the canary's answer counts as stable's."""
        if self.mode == "exact":
            return stable.strip() == canary.strip()
        return similarity(stable, canary) >= self.threshold


def _with_model(body: bytes, model: str) -> bytes | None:
    """``body`` as ``model`` (the rewrite's in-place splice of the top-level ``model``); None if
    the body is not a JSON object with a ``model`` string."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("model"), str):
        return None
    return replace_model(body, model)


async def compare_with_canary(
    send: Callable[[bytes], Awaitable[bytes]],
    body: bytes,
    canary_model: str,
    stable_answer: bytes | str,
    comparison: Comparison,
    timeout: float | None = 60.0,
) -> bool | None:
    """Mirror ``body`` to the canary as ``canary_model`` and compare its answer with stable's.

    ``stable_answer`` is stable's response body, or its text already read (an
    :class:`AnswerReader` fed by a response tap as the answer streamed to the user). ``send``
    delivers a request body to the canary's pool and returns the whole body of a successful
    answer, raising for anything else. True or False: the answers agree or not (a failed canary
    disagrees); None: stable's answer or the request gives nothing to compare.
    """
    stable = stable_answer if isinstance(stable_answer, str) else answer_text(stable_answer)
    mirrored = _with_model(body, canary_model)
    if stable is None or mirrored is None:
        return None
    try:
        async with asyncio.timeout(timeout):
            reply = await send(mirrored)
    except Exception as exc:  # any failure of the canary is its disagreement
        log.debug("agreement: canary %s failed: %r", canary_model, exc)
        return False
    canary = answer_text(reply)
    return canary is not None and comparison.agree(stable, canary)


@dataclass(slots=True)
class AgreementStats:
    """Comparisons in one interval of one rollout: how many agreed, out of how many counted."""

    agree: int = 0
    total: int = 0

    def add(self, result: bool | None) -> None:
        """Count one comparison (None is not counted)."""
        if result is not None:
            self.total += 1
            self.agree += result

    def merge(self, other: AgreementStats) -> None:
        """Add another process's counts for the same rollout and interval."""
        self.agree += other.agree
        self.total += other.total

    @property
    def share(self) -> float | None:
        """The share that agreed, None before any comparison."""
        return self.agree / self.total if self.total else None


AgreementView = dict[str, dict[str, list[int]]]  # {rollout: {interval start: [agree, total]}}


@dataclass(slots=True)
class AgreementCounters:
    """One process's :class:`AgreementStats` per rollout for its latest ``keep`` intervals."""

    interval: float = 30.0  # seconds
    keep: int = 20
    _stats: dict[str, dict[int, AgreementStats]] = field(default_factory=dict)

    def add(self, rollout: str, now: float, result: bool | None) -> None:
        """Count a comparison made at unix time ``now``."""
        intervals = self._stats.setdefault(rollout, {})
        slot = int(now // self.interval)
        stats = intervals.get(slot)
        if stats is None:
            stats = intervals[slot] = AgreementStats()
            for old in sorted(intervals)[: -self.keep]:
                del intervals[old]
        stats.add(result)

    def view(self) -> AgreementView:
        """The counts as JSON, for an admin view gathered from every serving process."""
        return {
            rollout: {
                f"{slot * self.interval:g}": [stats.agree, stats.total]
                for slot, stats in sorted(intervals.items())
            }
            for rollout, intervals in self._stats.items()
        }


def merge_views(views: Iterable[AgreementView]) -> AgreementView:
    """The processes' views summed per rollout and interval (an admin view's ``merge``)."""
    merged: dict[str, dict[str, AgreementStats]] = {}
    for view in views:
        for rollout, intervals in view.items():
            mine = merged.setdefault(rollout, {})
            for start, (agree, total) in intervals.items():
                mine.setdefault(start, AgreementStats()).merge(AgreementStats(agree, total))
    return {
        rollout: {
            start: [stats.agree, stats.total]
            for start, stats in sorted(intervals.items(), key=lambda item: float(item[0]))
        }
        for rollout, intervals in merged.items()
    }


def stats_since(view: AgreementView, rollout: str, since: float) -> AgreementStats:
    """A rollout's counts over the intervals of ``view`` that start at or after ``since``."""
    total = AgreementStats()
    for start, (agree, total_count) in view.get(rollout, {}).items():
        if float(start) >= since:
            total.merge(AgreementStats(agree, total_count))
    return total
