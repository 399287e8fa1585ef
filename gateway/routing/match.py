"""One compiled HTTPRouteMatch: predicates checked once the path index picked the candidate."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gateway.request import RequestHead
from gateway.snapshot import CompiledRule

PATH_EXACT = "Exact"
PATH_PREFIX = "PathPrefix"
PATH_REGEX = "RegularExpression"


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A header (lower-case name) or query parameter (case-sensitive name) predicate."""

    name: str
    value: str
    regex: re.Pattern[str] | None = None  # set for RegularExpression: full match

    def test(self, actual: str | None) -> bool:
        """Whether the request's first value satisfies the predicate."""
        if actual is None:
            return False
        if self.regex is not None:
            return self.regex.fullmatch(actual) is not None
        return actual == self.value


@dataclass(frozen=True, slots=True)
class GrpcMethod:
    """A GRPCRoute method match as written; routing uses the equivalent path predicate."""

    type: str
    service: str | None
    method: str | None


@dataclass(frozen=True, slots=True)
class MatchEntry:
    """A (route, rule, match) candidate, with its precedence key precomputed."""

    rule: CompiledRule
    match_index: int
    path_type: str
    path: str
    path_regex: re.Pattern[str] | None
    method: str | None
    headers: tuple[ValueMatch, ...]
    query: tuple[ValueMatch, ...]
    key: tuple[Any, ...]  # smaller wins; see RouterBuilder for the order
    grpc: GrpcMethod | None = None  # set for GRPCRoute method matches (for /config_dump)

    def accepts(self, head: RequestHead) -> bool:
        """Method, headers and query parameters (the path was already checked by the index)."""
        return self.find(head) is not None

    def find(self, head: RequestHead) -> CompiledRule | None:
        """The rule when the request satisfies this entry's non-path predicates."""
        if self.method is not None and head.method != self.method:
            return None
        # Plain loops: no generator allocation on the per-request path.
        for header in self.headers:
            if not header.test(head.get(header.name)):
                return None
        for param in self.query:
            if not param.test(head.query_param(param.name)):
                return None
        return self.rule

    def entries(self) -> Iterator[MatchEntry]:
        """Just this entry (the candidate-list step interface)."""
        yield self

    def describe(self) -> dict[str, Any]:
        """A JSON-able view for /config_dump."""
        out: dict[str, Any] = {"path": {"type": self.path_type, "value": self.path}}
        if self.grpc is not None:
            grpc = self.grpc
            out["grpcMethod"] = {"type": grpc.type, "service": grpc.service, "method": grpc.method}
        if self.method:
            out["method"] = self.method
        if self.headers:
            out["headers"] = [_value_view(h) for h in self.headers]
        if self.query:
            out["queryParams"] = [_value_view(q) for q in self.query]
        return out


def _value_view(match: ValueMatch) -> dict[str, str]:
    """A header/query predicate as YAML would write it."""
    kind = "RegularExpression" if match.regex is not None else "Exact"
    return {"type": kind, "name": match.name, "value": match.value}
