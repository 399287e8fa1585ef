"""Hostname tables: exact names by dict, wildcards by suffix (longest first), then catch-all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def host_key(hostname: str | None) -> tuple[str, str]:
    """("exact", name), ("wildcard", ".suffix") or ("any", "") for a listener or route hostname."""
    if not hostname:
        return ("any", "")
    if hostname.startswith("*."):
        return ("wildcard", hostname[1:])
    return ("exact", hostname)


@dataclass(frozen=True, slots=True)
class HostTable(Generic[T]):
    """Values keyed by hostname, looked up in the spec's precedence order."""

    exact: dict[str, T]
    wildcard: dict[str, T]  # ".example.com" for "*.example.com"
    any: T | None
    # Distinct wildcard suffix lengths, longest first: one slice and one dict probe per length.
    suffix_lengths: tuple[int, ...] = ()

    @classmethod
    def of(cls, exact: dict[str, T], wildcard: dict[str, T], any: T | None) -> HostTable[T]:
        """A table with its suffix lengths precomputed."""
        lengths = tuple(sorted({len(s) for s in wildcard}, reverse=True))
        return cls(exact, wildcard, any, lengths)

    def best(self, host: str) -> T | None:
        """The most specific value for a host: exact, longest wildcard, catch-all."""
        value = self.exact.get(host)
        if value is not None:
            return value
        size = len(host)
        for length in self.suffix_lengths:
            # The suffix starts with ".", so a hit is a label boundary; "> length" leaves a label.
            if size > length:
                value = self.wildcard.get(host[-length:])
                if value is not None:
                    return value
        return self.any
