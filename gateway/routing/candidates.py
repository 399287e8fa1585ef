"""Precedence-ordered candidate lists, with runs of "same name, different value" matches indexed.

Thousands of routes often share a host and path and differ only in one header or query value
(tenant or version routing). Scanning them one by one costs microseconds per request; instead, a
run of consecutive candidates (in precedence order) that all test the same header or query
parameter for an exact value becomes one dict lookup. At most one value can equal the request's,
so taking the run's entries for that value, in their original order, keeps precedence exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from gateway.request import RequestHead
from gateway.routing.match import MatchEntry
from gateway.snapshot import CompiledRule

MIN_RUN = 4  # shorter runs are scanned: a dict lookup is not cheaper than a few comparisons


class Step(Protocol):
    """One element of a candidate list."""

    def find(self, head: RequestHead) -> CompiledRule | None:
        """The rule if this step matches the request."""
        ...

    def entries(self) -> Iterator[MatchEntry]:
        """The match entries behind this step, in precedence order."""
        ...


@dataclass(frozen=True, slots=True)
class ValueSwitch:
    """A run of candidates keyed by the exact value they require for one header or query name."""

    header: bool  # True: header (lower-case name); False: query parameter
    name: str
    by_value: dict[str, tuple[MatchEntry, ...]]

    def find(self, head: RequestHead) -> CompiledRule | None:
        """The first entry of the run (in order) that requires the request's value and accepts."""
        value = head.get(self.name) if self.header else head.query_param(self.name)
        if value is None:
            return None
        entries = self.by_value.get(value)
        if entries is not None:
            for entry in entries:
                if entry.accepts(head):
                    return entry.rule
        return None

    def entries(self) -> Iterator[MatchEntry]:
        """Every entry of the run (grouped by value)."""
        for group in self.by_value.values():
            yield from group


def build_steps(entries: list[MatchEntry]) -> tuple[Step, ...]:
    """Turn a precedence-sorted list into steps, indexing long same-name exact-value runs."""
    steps: list[Step] = []
    i = 0
    while i < len(entries):
        names = _exact_names(entries[i])
        j = i + 1
        while names and j < len(entries):
            common = names & _exact_names(entries[j])
            if not common:
                break
            names = common
            j += 1
        if names and j - i >= MIN_RUN:
            steps.append(_switch(entries[i:j], min(names)))
            i = j
        else:
            steps.append(entries[i])
            i += 1
    return tuple(steps)


def _exact_names(entry: MatchEntry) -> set[tuple[bool, str]]:
    """(is header, name) of every Exact header/query predicate of an entry."""
    names = {(True, h.name) for h in entry.headers if h.regex is None}
    names |= {(False, q.name) for q in entry.query if q.regex is None}
    return names


def _switch(run: list[MatchEntry], key: tuple[bool, str]) -> ValueSwitch:
    """Index a run by the value each entry requires for ``key``."""
    header, name = key
    by_value: dict[str, list[MatchEntry]] = {}
    for entry in run:
        predicates = entry.headers if header else entry.query
        value = next(p.value for p in predicates if p.name == name and p.regex is None)
        by_value.setdefault(value, []).append(entry)
    return ValueSwitch(header, name, {v: tuple(es) for v, es in by_value.items()})
