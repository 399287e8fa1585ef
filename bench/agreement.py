"""Answer agreement's comparison cost on 2 KB answers: our measure against ``difflib``.

Run ``python -m bench.agreement``. The answers are seeded English-like text of ``--size``
characters; each pair is an answer and a copy with ``--edit`` of its words replaced (a canary
that mostly agrees). Rows, each the median over ``--rounds`` passes of ``--pairs`` comparisons,
in microseconds per comparison, with the mean score it gave:

* ``exact``: equal after trimming (the ``exact`` mode);
* ``similarity``: ``inference_ext.rollout.agreement.similarity``, normalization included
  (the ``similarity`` mode);
* ``difflib tokens``: ``SequenceMatcher(None, words_a, words_b).ratio()`` on the same
  normalized words, and again with ``autojunk=False`` (over 200 words, difflib's default treats
  every word making up more than 1% of the text as junk, which in a small vocabulary is all of
  them: a 5% edit then scores far below 0.9);
* ``difflib chars``: ``SequenceMatcher(None, a, b).ratio()`` on the raw characters.

Timings are reported, never checked.
"""

from __future__ import annotations

import argparse
import difflib
import random
import statistics
import time
from collections.abc import Callable

from inference_ext.rollout.agreement import normalize, similarity

WORDS = (
    "the", "model", "answer", "request", "token", "stream", "canary", "stable", "rollout",
    "gateway", "latency", "weight", "server", "cache", "prefix", "user", "system", "tool",
    "call", "returns", "value", "because", "when", "which", "there", "their", "about", "would",
    "these", "other", "into", "more", "some", "could", "time", "only", "than", "first", "also",
    "after",
)  # fmt: skip


def answer(rng: random.Random, size: int) -> str:
    """Sentences of random words, ``size`` characters long."""
    parts: list[str] = []
    length = 0
    while length < size:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))
        sentence = sentence.capitalize() + rng.choice([".", ",", "!", "?"]) + " "
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts)[:size]


def edited(text: str, share: float, rng: random.Random) -> str:
    """``text`` with ``share`` of its words replaced by random ones."""
    words = text.split(" ")
    return " ".join(rng.choice(WORDS) if rng.random() < share else word for word in words)


def difflib_tokens(a: str, b: str) -> float:
    """difflib's ratio on normalized words."""
    return difflib.SequenceMatcher(None, normalize(a), normalize(b)).ratio()


def difflib_tokens_all(a: str, b: str) -> float:
    """difflib's ratio on normalized words, no word treated as junk."""
    return difflib.SequenceMatcher(None, normalize(a), normalize(b), autojunk=False).ratio()


def difflib_chars(a: str, b: str) -> float:
    """difflib's ratio on characters."""
    return difflib.SequenceMatcher(None, a, b).ratio()


def exact(a: str, b: str) -> float:
    """1.0 when equal after trimming."""
    return float(a.strip() == b.strip())


def measure(
    compare: Callable[[str, str], float], pairs: list[tuple[str, str]], rounds: int
) -> tuple[float, float]:
    """Median µs per comparison over ``rounds`` passes, and the mean score."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for a, b in pairs:
            compare(a, b)
        times.append((time.perf_counter() - start) / len(pairs) * 1e6)
    return statistics.median(times), statistics.fmean(compare(a, b) for a, b in pairs)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="characters per answer")
    parser.add_argument("--edit", type=float, default=0.05, help="share of words changed")
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    pairs = []
    for _ in range(args.pairs):
        text = answer(rng, args.size)
        pairs.append((text, edited(text, args.edit, rng)))
    print(f"{args.pairs} pairs of {args.size}-character answers, {args.edit:.0%} of words changed")
    print(f"{'comparison':<16} {'µs/compare':>11} {'mean score':>11}")
    rows = [
        ("exact", exact),
        ("similarity", similarity),
        ("difflib tokens", difflib_tokens),
        ("  no autojunk", difflib_tokens_all),
        ("difflib chars", difflib_chars),
    ]
    for name, compare in rows:
        micros, score = measure(compare, pairs, args.rounds)
        print(f"{name:<16} {micros:>11.1f} {score:>11.3f}")


if __name__ == "__main__":
    main()
