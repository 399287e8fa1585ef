"""The per-host path index: exact paths by dict, prefixes by walking path segments, regexes last.

Paths are matched as received (no percent-decoding, no ``//`` merging, no dot-segment removal);
the spec leaves request-path normalisation to implementations. RegularExpression paths use
Python ``re`` with full-match semantics and rank below every Exact and PathPrefix match.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from gateway.request import RequestHead
from gateway.routing.candidates import Step
from gateway.routing.match import MatchEntry
from gateway.snapshot import CompiledRule


@dataclass(frozen=True, slots=True)
class PathIndex:
    """Candidates for one effective hostname, each list already in precedence order.

    ``prefixes`` is keyed by the PathPrefix value without its trailing ``/`` (``/`` becomes ``""``),
    so a request path is looked up once per segment, longest first, as element-wise matching needs.
    """

    exact: dict[str, tuple[Step, ...]]
    prefixes: dict[str, tuple[Step, ...]]
    regexes: tuple[MatchEntry, ...]
    longest_prefix: int = 0  # length of the longest key in ``prefixes``

    def match(self, head: RequestHead) -> CompiledRule | None:
        """The best rule for this request under this hostname, or None."""
        path = head.path
        steps = self.exact.get(path)
        if steps is not None:
            for step in steps:
                rule = step.find(head)
                if rule is not None:
                    return rule
        prefixes = self.prefixes
        if prefixes:
            candidate = path.rstrip("/")
            if len(candidate) > self.longest_prefix:
                # Start at the longest configured prefix: a huge path costs no more lookups.
                cut = candidate.rfind("/", 0, self.longest_prefix + 1)
                candidate = candidate[:cut] if cut > 0 else ""
            while True:
                steps = prefixes.get(candidate)
                if steps is not None:
                    for step in steps:
                        rule = step.find(head)
                        if rule is not None:
                            return rule
                if not candidate:
                    break
                cut = candidate.rfind("/")
                candidate = candidate[:cut] if cut > 0 else ""
        for entry in self.regexes:
            regex = entry.path_regex
            if regex is not None and regex.fullmatch(path) is not None and entry.accepts(head):
                return entry.rule
        return None

    def entries(self) -> Iterator[MatchEntry]:
        """Every match entry in the index (for introspection and benchmarks)."""
        for steps in (*self.exact.values(), *self.prefixes.values()):
            for step in steps:
                yield from step.entries()
        yield from self.regexes
